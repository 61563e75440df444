r"""Kill-and-resume soak: the quickstart run interrupted again and again, against one uninterrupted run.

  python scripts/soak.py --out=/tmp/vbanana_soak          # 10-25 minutes on 2 cores, quiet to busy

The same command (`python -m vbanana.main --config=configs/quickstart.py:steps=...` with the overrides below)
runs once uninterrupted (the reference) and once in another workdir where it is interrupted at random points
and started again each time, until it finishes:
  - SIGKILL during a step, during an asynchronous checkpoint save (a `*.orbax-checkpoint-tmp` directory is
    there), during an evaluation (its train row is logged, its eval row is not), right after a commit (a new
    `checkpoints/<step>` appeared), --kills of them, in equal numbers;
  - SIGTERM at a random step, --terms of them: each must save at that step and the next start resume from it.
Then it checks: every logged train row (redone steps included) equals the reference's row of that step
(every deterministic key: loss, per-task losses, grad norm, counts, lr), every evaluation that both ran gives
the same numbers, the final checkpoints hold the same parameters, optimizer state, EMA, step, rng and data
iterator state bit for bit, every start resumed from the last committed checkpoint with no fallback and
nothing in checkpoints/corrupt (no checkpoint lost or corrupt), no process of a run is alive 10 s after it
ended (orphans: found by parent links and session, vbanana/procs.py), and how much time the interruptions
cost. It prints one table (docs/reliability.md holds the latest). It journals its progress in OUT/soak.json:
stopped, it continues where it was when run again with the same --out.

Why these sizes: the quickstart model, data, batch and evaluators as they are; --steps=200 with a checkpoint
every 20 steps and an evaluation every 25 gives each kind of interruption something to hit and keeps the
soak at 10-25 minutes on 2 cores, quiet to busy, where a restart costs about 12-35 s (imports, data workers,
cached compiles). Every run shares one JAX compilation cache, filled first by a warm-up run of the same
command (--compilation_cache=0: each start compiles, about 2 minutes more per restart here). log_every=1
logs every step's loss for the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vbanana import procs  # noqa: E402  pylint: disable=g-import-not-at-top

# Keys of a row that depend on the clock, not on the computation (and evaluators' "<task>/seconds").
TIMING_KEYS = {"steps_per_sec", "examples_per_sec", "mfu", "data_wait_fraction"}


def is_timing(key: str) -> bool:
  return key in TIMING_KEYS or key.endswith("seconds")
KILL_KINDS = ("step", "save", "eval", "commit")
KIND_NAMES = {"step": "during a step", "save": "during an async checkpoint save", "eval": "during evaluation",
              "commit": "right after a commit", "term": "SIGTERM at a random step"}
EVENT_TIMEOUT_S = 900  # one interruption waits at most this long for its moment


@dataclasses.dataclass
class Event:
  kind: str  # one of KILL_KINDS, or "term"
  target: int  # the run must have logged this step before the event looks for its moment
  delay_s: float  # random wait once the moment is there (step, eval, term); 0 for save and commit


@dataclasses.dataclass
class Run:
  index: int
  event: Event | None
  wall_s: float = 0.0
  startup_s: float = float("nan")  # start -> its first logged train step
  returncode: int | None = None
  resumed_from: int | None = None  # "Resumed from ... at step N"
  expected_resume: int | None = None  # the last committed step when it started
  observed: str = ""  # what was going on when the signal was sent
  at_step: int | None = None  # last train step logged when the signal was sent
  last_step: int = 0  # last train step it logged
  preempted_at: int | None = None  # "Preempted: saved step N"
  orphans: list = dataclasses.field(default_factory=list)
  fallback: bool = False  # a checkpoint failed to restore


# ----------------------------------------------------------------------------------------------------------
# Watching a workdir from outside.
# ----------------------------------------------------------------------------------------------------------
class Watch:
  """The rows appended to metrics.jsonl since the start of one run, and the checkpoint directory."""

  def __init__(self, workdir: pathlib.Path, pid: int):
    self.workdir, self.pid = workdir, pid
    self.path = workdir / "metrics.jsonl"
    self._offset = self.path.stat().st_size if self.path.exists() else 0
    self.rows: list[dict] = []
    self.first_train_t = None  # when its first train row appeared
    self.started: dict[tuple[int, int], procs.Proc] = {}  # every process seen below the run
    self._tracked_t = 0.0

  def poll(self) -> None:
    now = time.monotonic()
    if now - self._tracked_t > 0.25:
      self._tracked_t = now
      self.started.update({(p.pid, p.start): p for p in procs.descendants(self.pid)})
    if not self.path.exists():
      return
    with open(self.path, "rb") as f:
      f.seek(self._offset)
      data = f.read()
    end = data.rfind(b"\n") + 1  # only whole lines: a kill can cut the last one short
    self._offset += end
    self.rows += [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    if self.first_train_t is None and self.train_step:
      self.first_train_t = now

  @property
  def train_step(self) -> int:
    return max((r["step"] for r in self.rows if "loss" in r), default=0)

  @property
  def last_row(self) -> dict | None:
    return self.rows[-1] if self.rows else None

  def committed(self) -> list[int]:
    return committed(self.workdir)

  def saving(self) -> bool:
    d = self.workdir / "checkpoints"
    return d.exists() and any(".orbax-checkpoint-tmp" in p.name for p in d.iterdir())

  def evaluating(self, eval_every: int, steps: int, final: bool = True) -> bool:
    """The last row is the train row of an evaluation step: its evaluation is running (`final`: the one at
    the end counts too)."""
    r = self.last_row
    return r is not None and "loss" in r and (r["step"] % eval_every == 0 and r["step"] < steps
                                              or final and r["step"] == steps)


def committed(workdir: pathlib.Path) -> list[int]:
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def read_rows(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  text = path.read_text() if path.exists() else ""
  return [json.loads(line) for line in text.splitlines() if line.strip() and line.endswith("}")]


# ----------------------------------------------------------------------------------------------------------
# Running the command.
# ----------------------------------------------------------------------------------------------------------
def command(args, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "vbanana.main",
          f"--config=configs/quickstart.py:steps={args.steps},data_dir={args.out / 'data'}",
          f"--workdir={workdir}", "--config.train.log_every=1",
          f"--config.checkpoint.every={args.checkpoint_every}", f"--config.train.eval_every={args.eval_every}",
          "--config.train.tensorboard=False", "--config.train.peak_flops_per_device=1e11"]


def start(args, workdir: pathlib.Path, log: pathlib.Path) -> subprocess.Popen:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  if args.compilation_cache:
    env["JAX_COMPILATION_CACHE_DIR"] = str(args.out / "jax_cache")
  with open(log, "w") as f:  # a file, not a pipe: a process left behind cannot hold up this script
    return subprocess.Popen(command(args, workdir), cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own session: everything it starts is in it


def wait_moment(proc, watch: Watch, event: Event, args) -> str:
  """Waits for the event's moment; returns what is going on then ('' when the run ended first)."""
  deadline = time.monotonic() + EVENT_TIMEOUT_S

  def ticking():
    watch.poll()
    return proc.poll() is None and time.monotonic() < deadline

  while ticking() and watch.train_step < event.target:
    time.sleep(0.02)
  if event.kind in ("step", "term"):
    end = time.monotonic() + event.delay_s
    while ticking() and time.monotonic() < end:
      time.sleep(0.02)
  elif event.kind == "save":
    while ticking() and not watch.saving():
      time.sleep(0.005)
  elif event.kind == "commit":
    seen = set(watch.committed())
    while ticking() and not set(watch.committed()) - seen:
      time.sleep(0.005)
  elif event.kind == "warmup":
    while ticking() and not any(r["step"] == event.target and "loss" not in r for r in watch.rows):
      time.sleep(0.1)
  elif event.kind == "eval":  # one during training: after the final one nothing is left to interrupt
    while ticking() and not watch.evaluating(args.eval_every, args.steps, final=False):
      time.sleep(0.02)
    end = time.monotonic() + event.delay_s
    while ticking() and time.monotonic() < end:
      time.sleep(0.02)
  if proc.poll() is not None or time.monotonic() >= deadline:
    return ""
  saving, evaluating = watch.saving(), watch.evaluating(args.eval_every, args.steps)
  if event.kind == "commit" or (event.kind == "save" and saving) or (event.kind == "eval" and evaluating):
    return event.kind
  return "save" if saving else "eval" if evaluating else "step"


def one_run(args, workdir, index: int, event: Event | None, on_start=lambda pid: None) -> Run:
  run = Run(index, event, expected_resume=max(committed(workdir), default=None))
  log = args.out / "logs" / f"{workdir.name}_{index:02d}.log"
  t0 = time.monotonic()
  proc = start(args, workdir, log)
  on_start(proc.pid)
  watch = Watch(workdir, proc.pid)
  if event is not None:
    run.observed = wait_moment(proc, watch, event, args)
    if run.observed:
      run.at_step = watch.train_step
      watch.started.update({(p.pid, p.start): p for p in procs.descendants(proc.pid)})
      proc.send_signal(signal.SIGKILL if event.kind != "term" else signal.SIGTERM)
  while proc.poll() is None:
    watch.poll()
    time.sleep(0.05)
  run.wall_s = time.monotonic() - t0
  run.returncode = proc.returncode
  watch.poll()
  run.last_step = watch.train_step
  if watch.first_train_t is not None:
    run.startup_s = watch.first_train_t - t0
  # Nothing it started may outlive it: its children as seen while it ran, and anything left in its session.
  left = procs.wait_gone(list(watch.started.values()) + procs.in_session(proc.pid), timeout_s=10)
  run.orphans = [p.cmdline[:100] for p in left]
  for p in left:  # ours: end them so they do not disturb the next run
    os.kill(p.pid, signal.SIGKILL)
  text = log.read_text(errors="replace")
  m = re.search(r"Resumed from \S+ at step (\d+)", text)
  run.resumed_from = int(m.group(1)) if m else None
  m = re.search(r"Preempted: saved step (\d+)", text)
  run.preempted_at = int(m.group(1)) if m else None
  run.fallback = "failed to restore" in text or "falling back" in text
  return run


# ----------------------------------------------------------------------------------------------------------
# Comparing with the reference.
# ----------------------------------------------------------------------------------------------------------
def _same(a, b) -> bool:
  if isinstance(a, str) or isinstance(b, str):  # "nan" is written as a string
    return str(a) == str(b)
  return a == b or (math.isnan(a) and math.isnan(b))


def compare_rows(ref_rows, rows):
  """(train rows compared, train rows differing, max |loss diff|, eval rows compared, eval differing,
  reference eval steps the interrupted workdir has no eval for, steps never logged)."""
  ref_train = {r["step"]: r for r in ref_rows if "loss" in r}
  ref_eval = {r["step"]: r for r in ref_rows if "loss" not in r}
  n = bad = 0
  max_diff = 0.0
  for r in (r for r in rows if "loss" in r):
    want = ref_train.get(r["step"])
    n += 1
    keys = {k for k in set(r) | set(want or {}) if not is_timing(k)}
    if want is None or not all(k in r and k in want and _same(r[k], want[k]) for k in keys):
      bad += 1
    if want is not None and not isinstance(r["loss"], str) and not isinstance(want["loss"], str):
      max_diff = max(max_diff, abs(r["loss"] - want["loss"]))
  ne = bad_e = 0
  evals = {}
  for r in (r for r in rows if "loss" not in r):
    evals[r["step"]] = r
    want = ref_eval.get(r["step"])
    ne += 1
    if want is None or set(want) != set(r) or not all(_same(r[k], want[k]) for k in r if not is_timing(k)):
      bad_e += 1
  missing_evals = sorted(set(ref_eval) - set(evals))
  never = sorted(set(ref_train) - {r["step"] for r in rows if "loss" in r})
  return n, bad, max_diff, ne, bad_e, missing_evals, never


def compare_checkpoints(ref: pathlib.Path, other: pathlib.Path) -> tuple[list[int], list[str]]:
  """Steps compared, and what differs: every entry of the train state as host arrays, and the data iterator."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from vbanana import checkpoint  # pylint: disable=g-import-not-at-top

  def host(meta):
    target = jax.tree.map(lambda m: np.zeros((), m.dtype), meta)
    return target, jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)

  steps, diffs = committed(ref), []
  if committed(other) != steps:
    diffs.append(f"checkpoint steps {committed(other)} != reference {steps}")
  for s in sorted(set(steps) & set(committed(other))):
    dirs = [epath.Path(w / "checkpoints" / str(s) / "state") for w in (ref, other)]
    meta = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).metadata(dirs[0])
    tree = getattr(getattr(meta, "item_metadata", meta), "tree", getattr(meta, "item_metadata", meta))
    for key in sorted(tree):
      a, b = (checkpoint.restore_entry(d, key, host) for d in dirs)
      la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
      if len(la) != len(lb) or not all(np.array_equal(x, y) for x, y in zip(la, lb)):
        diffs.append(f"step {s}: state['{key}'] differs")
    data = [sorted((w / "checkpoints" / str(s) / "data").glob("*.json")) for w in (ref, other)]
    if [p.read_text() for p in data[0]] != [p.read_text() for p in data[1]] or not data[0]:
      diffs.append(f"step {s}: data iterator state differs")
  return steps, diffs


# ----------------------------------------------------------------------------------------------------------
# The soak.
# ----------------------------------------------------------------------------------------------------------
def plan(args, rng: random.Random) -> list[Event]:
  """Kills of each kind in equal numbers and the SIGTERMs, at increasing random steps up to 80 % of the run
  (so that a save, a commit and an evaluation are still ahead of each). Evaluation kills target distinct
  evaluation steps (an evaluation cut short is not run again once past its step)."""
  kinds = [KILL_KINDS[i % len(KILL_KINDS)] for i in range(args.kills)] + ["term"] * args.terms
  last = int(0.8 * args.steps)
  # Evaluation steps that are not checkpoint steps: a kill there is during the evaluation only.
  eval_steps = [s for s in range(args.eval_every, last + 1, args.eval_every) if s % args.checkpoint_every]
  n_eval = kinds.count("eval")
  targets_eval = sorted(rng.sample(eval_steps, n_eval)) if n_eval <= len(eval_steps) else sorted(
      rng.choice(eval_steps) for _ in range(n_eval))
  events = []
  for kind in kinds:
    if kind == "eval":
      events.append(Event(kind, targets_eval.pop(0), rng.uniform(0.3, 2.0)))
    else:
      delay = rng.uniform(0.0, 1.5) if kind in ("step", "term") else 0.0
      events.append(Event(kind, rng.randint(2, last), delay))
  rng.shuffle(events)
  return sorted(events, key=lambda e: e.target)


def build_data(args) -> None:
  from vbanana import config_lib  # pylint: disable=g-import-not-at-top
  from vbanana.data import sources  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  config = config_lib.load_config(f"configs/quickstart.py:data_dir={args.out / 'data'}")
  specs = {json.dumps(c["source"], sort_keys=True): c["source"] for c in config.data.components.to_dict().values()}
  for spec in specs.values():
    for split in ("train", "validation"):
      sources.make_source(spec, split)


def table(rows: list[tuple[str, str, str]]) -> str:
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
  return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows[1:]])


def finished(workdir: pathlib.Path, steps: int) -> bool:
  """The run is complete: its last step trained and its final evaluation written."""
  rows = read_rows(workdir)
  return any(r["step"] == steps and "loss" in r for r in rows) and any(
      r["step"] == steps and "loss" not in r for r in rows)


class Journal:
  """What the soak has done so far (OUT/soak.json): a soak that is itself stopped continues where it was
  when run again with the same --out (any run it left going is waited for first)."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    self.data = json.loads(path.read_text()) if path.exists() else {}

  def save(self, **changes) -> None:
    self.data.update(changes)
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(self.data, indent=1))
    tmp.replace(self.path)

  def runs(self, key: str) -> list[Run]:
    def load(d):
      d = dict(d)
      d["event"] = Event(**d["event"]) if d.get("event") else None
      return Run(**d)
    return [load(d) for d in self.data.get(key, [])]


def run_and_log(args, journal: Journal, key: str, workdir: pathlib.Path, index: int, event) -> Run:
  def started(pid):
    p = procs.snapshot().get(pid)
    journal.save(current=[p.pid, p.start] if p else None)
  run = one_run(args, workdir, index, event, on_start=started)
  journal.save(**{key: [dataclasses.asdict(r) for r in journal.runs(key) + [run]]}, current=None)
  return run


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/vbanana_soak"))
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--checkpoint_every", type=int, default=20)
  parser.add_argument("--eval_every", type=int, default=25)
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--terms", type=int, default=5)
  parser.add_argument("--seed", type=int, default=None, help="random points (default: drawn and printed)")
  parser.add_argument("--compilation_cache", type=int, default=1,
                      help="1: every run uses one JAX compilation cache, filled first by a warm-up run, so a "
                           "restart costs what it costs a preemptible job set up that way; 0: each compiles")
  args = parser.parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  journal = Journal(args.out / "soak.json")
  settings = {k: getattr(args, k) for k in ("steps", "checkpoint_every", "eval_every", "kills", "terms",
                                            "compilation_cache")}
  if journal.data:
    if journal.data["settings"] != settings or args.seed not in (None, journal.data["seed"]):
      raise SystemExit(f"--out: {args.out} holds a soak with other settings {journal.data['settings']} "
                       f"(seed {journal.data['seed']}); give an empty --out")
    print(f"soak: continuing the soak in {args.out} ({len(journal.runs('runs'))} runs done)", flush=True)
    current = journal.data.get("current")
    if current:  # the run it left: let it finish (a SIGTERM sent with the soak's makes it save and stop)
      left = procs.alive([procs.Proc(current[0], 0, 0, "", current[1])])
      procs.wait_gone(left, timeout_s=600)
      journal.save(current=None, restarts=journal.data.get("restarts", 0) + 1)
  else:
    for name in ("reference", "interrupted", "warmup"):
      if (args.out / name).exists():
        raise SystemExit(f"--out: {args.out / name} exists; give an empty --out (the soak compares fresh workdirs)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    journal.save(settings=settings, seed=seed, event_index=0, restarts=0)
  seed = journal.data["seed"]
  ref_dir, soak_dir = args.out / "reference", args.out / "interrupted"
  (args.out / "logs").mkdir(parents=True, exist_ok=True)
  print(f"soak: seed {seed}; the command: {' '.join(command(args, pathlib.Path('WORKDIR')))}", flush=True)
  t0 = time.monotonic()
  build_data(args)

  if args.compilation_cache and not journal.runs("warm"):  # the same command up to its first evaluation
    shutil.rmtree(args.out / "warmup", ignore_errors=True)
    warm = run_and_log(args, journal, "warm", args.out / "warmup", 0, Event("warmup", args.eval_every, 0.0))
    print(f"soak: compilation cache filled in {warm.wall_s:.0f} s", flush=True)
  while not journal.runs("ref"):  # uninterrupted: a reference that something else stopped is done again
    shutil.rmtree(ref_dir, ignore_errors=True)
    ref = run_and_log(args, journal, "ref", ref_dir, 0, None)
    print(f"soak: reference run {ref.wall_s:.0f} s, exit {ref.returncode}", flush=True)
    if ref.returncode != 0 or not finished(ref_dir, args.steps):
      journal.save(ref=[])
      if ref.returncode not in (0, -signal.SIGTERM):
        raise SystemExit(f"the reference run failed: see {args.out / 'logs'}")
  ref = journal.runs("ref")[0]

  events = plan(args, random.Random(seed)) + [None]
  unplanned = journal.data.get("unplanned", [])  # runs that ended without our signal, before the end
  while journal.data["event_index"] < len(events):
    event = events[journal.data["event_index"]]
    runs = journal.runs("runs")
    run = run_and_log(args, journal, "runs", soak_dir, len(runs) + 1, event)
    label = f"{event.kind} at step >= {event.target}" if event else "to the end"
    print(f"soak: run {run.index:2d} [{label}]: {run.observed or '-'} at step {run.at_step}, exit "
          f"{run.returncode}, resumed from {run.resumed_from}, {run.wall_s:.0f} s, orphans {len(run.orphans)}",
          flush=True)
    if finished(soak_dir, args.steps):
      break  # (an event whose moment never came leaves the later ones nothing to hit)
    if run.observed:
      journal.save(event_index=journal.data["event_index"] + 1)
      continue
    # It ended by itself, or something else stopped it: started again the same way, the same event ahead.
    unplanned.append(f"run {run.index} exit {run.returncode}")
    journal.save(unplanned=unplanned)
    if sum(r.returncode not in (0, -signal.SIGTERM) and not r.observed for r in journal.runs("runs")[-3:]) == 3:
      raise SystemExit(f"3 runs in a row failed by themselves: see {args.out / 'logs'}")
  runs = journal.runs("runs")
  warm = (journal.runs("warm") or [None])[0]

  # Checks.
  n, bad, max_diff, ne, bad_e, missing_evals, never = compare_rows(read_rows(ref_dir), read_rows(soak_dir))
  steps, diffs = compare_checkpoints(ref_dir, soak_dir)
  interrupted = [r for r in runs if r.observed]
  kills = [r for r in interrupted if r.event.kind != "term"]
  terms = [r for r in interrupted if r.event.kind == "term"]
  observed = {k: sum(r.observed == k for r in kills) for k in KILL_KINDS}
  resumes = [(r.expected_resume, r.resumed_from) for r in runs if r.expected_resume is not None]
  lost = [(want, got) for want, got in resumes if want != got]
  fallbacks = sum(r.fallback for r in runs)
  corrupt = soak_dir / "checkpoints" / "corrupt"
  corrupt_n = len(list(corrupt.iterdir())) if corrupt.exists() else 0
  terms_ok = 0
  for r in terms:  # saved at the step it stopped at (the one running when signalled), resumed from there
    nxt = next((x for x in runs if x.index == r.index + 1), None)
    terms_ok += bool(r.returncode == 0 and r.preempted_at is not None and r.preempted_at == r.last_step
                     and r.preempted_at >= r.at_step and nxt is not None and nxt.resumed_from == r.preempted_at)
  orphans = [o for r in runs + [ref] + ([warm] if warm else []) for o in r.orphans]
  total = sum(r.wall_s for r in runs)
  startups = [r.startup_s for r in runs if not math.isnan(r.startup_s)]
  ok = lambda c: "yes" if c else "NO"
  rows = [
      ("check", "result", "pass"),
      ("interruptions", f"{len(kills)} SIGKILL (" + ", ".join(f"{observed[k]} {KIND_NAMES[k]}" for k in KILL_KINDS)
       + f"), {len(terms)} SIGTERM; {len(runs)} starts of the same command", ok(len(kills) == args.kills and
                                                                                  len(terms) == args.terms)),
      ("unplanned ends", f"{len(unplanned)} runs stopped by something else (another job's SIGTERM, a crash) and "
       f"started again the same way {unplanned[:4]}; restarts of the soak itself: {journal.data['restarts']}",
       "-"),
      ("logged train losses", f"{n - bad} of {n} rows equal the reference's (redone steps included; "
       f"max |loss diff| {max_diff:.1e}); steps never logged: {len(never)}", ok(bad == 0 and not never)),
      ("logged evaluations", f"{ne - bad_e} of {ne} equal; cut by a kill and not run again: "
       f"{len(missing_evals)} {missing_evals}", ok(bad_e == 0)),
      ("final checkpoints", f"steps {steps}: params, opt_state, ema_params, step, rng, skipped and data iterator "
       + ("equal bit for bit" if not diffs else "; ".join(diffs)), ok(not diffs)),
      ("checkpoints lost or corrupt", f"{len(lost)} starts not resumed from the last commit {lost}; "
       f"{fallbacks} fallbacks; {corrupt_n} in checkpoints/corrupt", ok(not lost and not fallbacks and not corrupt_n)),
      ("SIGTERM saves", f"{terms_ok} of {len(terms)} saved at the signalled step and resumed from it",
       ok(terms_ok == len(terms))),
      ("orphan processes", f"{len(orphans)} alive 10 s after their run ended {orphans[:3]}", ok(not orphans)),
      ("time", f"reference {ref.wall_s:.0f} s; interrupted {total:.0f} s over {len(runs)} starts; lost to "
       f"restarts {total - ref.wall_s:.0f} s ({(total - ref.wall_s) / max(len(runs) - 1, 1):.0f} s per restart; "
       f"start to first step {sum(startups) / max(len(startups), 1):.0f} s on average)", "-"),
  ]
  print(f"\nsoak: seed {seed}, {time.monotonic() - t0:.0f} s in this invocation; "
        f"python scripts/soak.py --steps={args.steps} --checkpoint_every={args.checkpoint_every} "
        f"--eval_every={args.eval_every} --kills={args.kills} --terms={args.terms} --seed={seed}\n")
  print(table(rows), flush=True)
  return 0 if all(r[2] != "NO" for r in rows[1:]) else 1


if __name__ == "__main__":
  sys.exit(main())
