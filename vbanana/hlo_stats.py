"""Collectives in an optimized HLO module: how many run per step and how many bytes they move.

A compiled step's text (`compiled.as_text()`) lists computations; a scanned layer stack is a `while` whose
body runs N times (`known_trip_count` where the compiler writes it, else the bound of its condition
`i < N`), so a collective inside it counts that many times per step (the
compiler's own `cost_analysis()` counts a loop body once). Bytes per collective: the larger of its inputs and
its outputs (the gathered result of an all-gather, the unreduced operand of a reduce-scatter, the buffers of
an all-reduce, summed over a tuple).
"""

from __future__ import annotations

import collections
import re

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?\s*->.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s([\w\-]+)\((.*)$")
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([\d,]*)\]")
_CALLS = re.compile(r"\b(body|condition|calls|to_apply|true_computation|false_computation|branch_computations)"
                    r"=(\{[^}]*\}|%?[\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def _array_bytes(text: str) -> list[int]:
  out = []
  for dtype, dims in _ARRAY.findall(text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    out.append(n * _BYTES[dtype])
  return out


_CONSTANT = re.compile(r"^\s*%?([\w.\-]+)\s*=\s*s32\[\][^ ]*\s+constant\((\d+)\)")
_LESS_THAN = re.compile(r"compare\(%?([\w.\-]+),\s*%?([\w.\-]+)\),\s*direction=LT")


def _parse(hlo: str):
  """computation -> (collectives [(kind, bytes)], calls [(callee, times per call or the condition whose
  bound gives it)], loop bound or None), and the entry computation's name."""
  comps: dict[str, tuple[list, list, list]] = {}
  entry, current, constants = None, None, {}
  for line in hlo.splitlines():
    m = _COMPUTATION.match(line)
    if m and not _INSTRUCTION.match(line):
      current, constants = m.group(1), {}
      comps[current] = ([], [], [None])
      if line.lstrip().startswith("ENTRY"):
        entry = current
      continue
    if current is None:
      continue
    c = _CONSTANT.match(line)
    if c:
      constants[c.group(1)] = int(c.group(2))
    lt = _LESS_THAN.search(line)
    if lt and line.lstrip().startswith("ROOT") and lt.group(2) in constants:
      comps[current][2][0] = constants[lt.group(2)]  # a loop condition `i < N`: N iterations from 0
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    result_type, opcode, rest = m.groups()
    kind = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    if kind in KINDS:
      results, operands = sum(_array_bytes(result_type)), sum(_array_bytes(rest.split("),", 1)[0]))
      if opcode.endswith("-start"):  # an async start's result tuple holds its operands too
        results -= operands
      comps[current][0].append((kind, max(results, operands)))
    roles = dict((role, [n.strip().lstrip("%") for n in names.strip("{}").split(",") if n.strip()])
                 for role, names in _CALLS.findall(rest))
    trips = _TRIP.search(line)
    for role, callees in roles.items():
      for callee in callees:
        if role == "body":
          times = int(trips.group(1)) if trips else ("condition", (roles.get("condition") or [None])[0])
        else:
          times = 1
        comps[current][1].append((callee, times))
  return comps, entry


_CUSTOM_CALL = re.compile(r'custom_call_target="([\w.\-]+)"')


def custom_calls(hlo: str) -> dict[str, int]:
  """Custom-call targets (hand-written kernels such as splash attention: 'tpu_custom_call') and how many
  places in the program call each."""
  return dict(collections.Counter(_CUSTOM_CALL.findall(hlo)))


def collectives(hlo: str) -> dict[str, dict[str, float]]:
  """{kind: {'count': per step, 'bytes': per step}} for every kind in KINDS (zeros included)."""
  comps, entry = _parse(hlo)
  totals = {k: collections.Counter() for k in KINDS}

  def visit(name: str, times: int, depth: int = 0):
    if name not in comps or depth > 64:
      return
    ops, calls, _ = comps[name]
    for kind, size in ops:
      totals[kind]["count"] += times
      totals[kind]["bytes"] += times * size
    for callee, n in calls:
      if isinstance(n, tuple):  # a while body: as many times as its condition's bound (1 if unknown)
        n = comps.get(n[1], (None, None, [None]))[2][0] or 1
      visit(callee, times * n, depth + 1)

  if entry is not None:
    visit(entry, 1)
  return {k: {"count": float(v["count"]), "bytes": float(v["bytes"])} for k, v in totals.items()}
