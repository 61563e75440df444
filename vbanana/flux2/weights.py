"""Safetensors checkpoints in the Hugging Face layout, read and written one tensor at a time, strictly.

Reading (a folder as `save_pretrained` writes it: PREFIX.safetensors, or PREFIX.safetensors.index.json and
its shards PREFIX-00001-of-0000N.safetensors):
  ckpt = open_checkpoint(folder, prefix="diffusion_pytorch_model")   # prefix=None: the folder's only one
  ckpt.names                  tensor names, in file order
  ckpt.shape(name), ckpt.dtype(name)   from the headers: nothing is read
  ckpt.read(name)             one tensor as a read-only NumPy array backed by the file (np.memmap), so the
                              only host copy is the one the caller makes (a cast, a transpose)
  ckpt.check(expected, where) the names and shapes against `{name: shape}`: raises CheckpointError naming
                              the first missing, misshaped or unexpected tensor before any data is read

Writing, as diffusers' `save_pretrained` / `huggingface_hub.split_torch_state_dict_into_shards` do (tensors in
the given order, a new shard when the next tensor would pass `max_shard_size`, metadata {"format": "pt"}, an
index only when there are several shards; stale files of the same prefix are removed):
  write_checkpoint(folder, tensors, prefix="diffusion_pytorch_model", max_shard_size="10GB")
  `tensors` maps name -> a NumPy array, a jax.Array (copied to the host when its turn comes) or a
  `Pending(shape, dtype, produce)` whose `produce()` makes the array when it is written (or an iterable of
  arrays, its parts along the leading axis, made one at a time). Each file is written to a temporary name and renamed.

BF16 and FP8 tensors are ml_dtypes arrays (what JAX uses). Errors are `CheckpointError` (a ValueError) with
one line that names the folder or file and the tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from typing import Any, Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
_NAMES = {v: k for k, v in DTYPES.items()}
SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


class CheckpointError(ValueError):
  """A checkpoint that does not match what the model expects (names the file or tensor)."""


@dataclasses.dataclass(frozen=True)
class Pending:
  """A tensor made only when it is written: its shape and dtype known up front (the header comes first)."""
  shape: tuple
  dtype: Any
  produce: Callable[[], np.ndarray]


# ----------------------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Entry:
  file: str
  dtype: np.dtype
  shape: tuple
  start: int  # absolute byte offsets in the file
  end: int


def _read_header(path: str) -> tuple[dict[str, _Entry], dict]:
  """name -> entry of one safetensors file, and its metadata; validates offsets against the file size."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", head)
    if n > size - 8:
      raise CheckpointError(f"{path}: not a safetensors file (header length {n} > file size {size})")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from None
  metadata = header.pop("__metadata__", None) or {}
  entries = {}
  for name, info in header.items():
    dtype = DTYPES.get(info.get("dtype"))
    if dtype is None:
      raise CheckpointError(f"{path}: tensor {name!r} has dtype {info.get('dtype')!r}; known: {sorted(DTYPES)}")
    shape = tuple(int(d) for d in info["shape"])
    start, end = (8 + n + int(o) for o in info["data_offsets"])
    if end > size or end - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
      raise CheckpointError(f"{path}: tensor {name!r} ({info['dtype']} {list(shape)}) has data offsets "
                            f"{info['data_offsets']} that do not fit its size or the file ({size} bytes)")
    entries[name] = _Entry(path, dtype, shape, start, end)
  return entries, metadata


class Checkpoint:
  """The tensors of one safetensors checkpoint (single file or shards), read lazily."""

  def __init__(self, where: str, entries: dict[str, _Entry], metadata: dict):
    self.where, self._entries, self.metadata = where, entries, metadata
    self._maps: dict[str, np.memmap] = {}

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def _entry(self, name: str) -> _Entry:
    if name not in self._entries:
      raise CheckpointError(f"{self.where}: tensor {name!r} is missing")
    return self._entries[name]

  def shape(self, name: str) -> tuple:
    return self._entry(name).shape

  def dtype(self, name: str) -> np.dtype:
    return self._entry(name).dtype

  def read(self, name: str) -> np.ndarray:
    """The tensor, backed by the file (read-only; nothing else is loaded)."""
    e = self._entry(name)
    if e.file not in self._maps:
      self._maps[e.file] = np.memmap(e.file, dtype=np.uint8, mode="r")
    return self._maps[e.file][e.start:e.end].view(e.dtype).reshape(e.shape)

  def check(self, expected: Mapping[str, tuple], where: str | None = None) -> None:
    """Raises CheckpointError naming the first tensor that is missing, misshaped or not expected."""
    where = where or self.where
    for name, shape in expected.items():
      if name not in self._entries:
        raise CheckpointError(f"{where}: tensor {name!r} is missing (expected shape {tuple(shape)})")
      if tuple(self._entries[name].shape) != tuple(shape):
        raise CheckpointError(f"{where}: tensor {name!r} has shape {self._entries[name].shape}, expected "
                              f"{tuple(shape)}")
    unexpected = [n for n in self._entries if n not in expected]
    if unexpected:
      more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
      raise CheckpointError(f"{where}: tensor {unexpected[0]!r}{more} is not a parameter of this model "
                            f"(shape {self._entries[unexpected[0]].shape})")


def _index_name(prefix: str) -> str:
  return f"{prefix}.safetensors.index.json"


def _find_prefix(folder: str) -> str:
  """The prefix of the folder's only checkpoint (an index wins over a lone shard)."""
  files = os.listdir(folder)
  indexes = sorted(f[:-len(".safetensors.index.json")] for f in files if f.endswith(".safetensors.index.json"))
  singles = sorted(f[:-len(".safetensors")] for f in files
                   if f.endswith(".safetensors") and not _SHARD.fullmatch(f))
  found = indexes or singles
  if len(found) != 1:
    raise CheckpointError(f"{folder}: expected one safetensors checkpoint (a .safetensors file or a "
                          f".safetensors.index.json), found {found or 'none'}")
  return found[0]


def open_checkpoint(folder: str, prefix: str | None = "diffusion_pytorch_model") -> Checkpoint:
  """The checkpoint PREFIX.safetensors or PREFIX.safetensors.index.json (+ shards) in `folder`."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise CheckpointError(f"{folder}: not a folder")
  prefix = prefix or _find_prefix(folder)
  index = os.path.join(folder, _index_name(prefix))
  single = os.path.join(folder, f"{prefix}.safetensors")
  if os.path.exists(index):
    with open(index) as f:
      try:
        weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a safetensors index (no 'weight_map': {e})") from None
    entries: dict[str, _Entry] = {}
    metadata: dict = {}
    for shard in dict.fromkeys(weight_map.values()):
      path = os.path.join(folder, shard)
      if not os.path.exists(path):
        first = next(n for n, s in weight_map.items() if s == shard)
        raise CheckpointError(f"{index}: shard {shard} (holding tensor {first!r}) is missing")
      shard_entries, metadata = _read_header(path)
      for name, s in weight_map.items():
        if s == shard:
          if name not in shard_entries:
            raise CheckpointError(f"{index}: tensor {name!r} is listed in {shard} but that file does not hold it")
          entries[name] = shard_entries[name]
    return Checkpoint(index, entries, metadata)
  if os.path.exists(single):
    entries, metadata = _read_header(single)
    return Checkpoint(single, entries, metadata)
  raise CheckpointError(f"{folder}: no {prefix}.safetensors or {_index_name(prefix)}")


# ----------------------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------------------
_SHARD = re.compile(r".+-\d{5}-of-\d{5}\.safetensors")


def parse_size(size: int | str) -> int:
  """'10GB' -> 10**10 bytes (decimal units, as huggingface_hub); an int passes through."""
  if isinstance(size, int):
    return size
  if size.strip().isdigit():
    return int(size)
  unit = size.strip()[-2:].upper()
  if unit not in SIZE_UNITS:
    raise ValueError(f"max_shard_size={size!r}: expected a number of bytes or a size such as '10GB' "
                     f"(units {sorted(SIZE_UNITS)})")
  return int(float(size.strip()[:-2]) * SIZE_UNITS[unit])


def _spec(value: Any) -> tuple[tuple, np.dtype]:
  if isinstance(value, Pending):
    return tuple(value.shape), np.dtype(value.dtype)
  return tuple(value.shape), np.dtype(value.dtype)


def _chunks(name: str, value: Any, shape: tuple, dtype: np.dtype):
  """The tensor's bytes in order: one array, or the list of arrays a Pending may produce (parts along the
  leading axis, e.g. the layers of a stacked parameter, so the whole never needs to be on the host)."""
  made = value.produce() if isinstance(value, Pending) else value
  parts = [made] if hasattr(made, "shape") else made  # an array, or an iterable of parts
  total = 0
  for part in parts:
    part = np.ascontiguousarray(np.asarray(part))
    if part.dtype != dtype:
      raise CheckpointError(f"tensor {name!r}: produced {part.dtype}, declared {dtype}")
    total += part.size
    yield part
  if total != int(np.prod(shape, dtype=np.int64)):
    raise CheckpointError(f"tensor {name!r}: produced {total} values, declared shape {shape}")


def _write_file(path: str, items: list[tuple[str, Any]], metadata: Mapping[str, str]) -> None:
  header: dict[str, Any] = {"__metadata__": dict(metadata)}
  specs, offset = [], 0
  for name, value in items:
    shape, dtype = _spec(value)
    if dtype not in _NAMES:
      raise CheckpointError(f"tensor {name!r}: dtype {dtype} has no safetensors name")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    specs.append((name, value, shape, dtype))
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name, value, shape, dtype in specs:
      for part in _chunks(name, value, shape, dtype):
        f.write(part.reshape(-1).view(np.uint8).data)
  os.replace(tmp, path)


def write_checkpoint(folder: str, tensors: Mapping[str, Any] | Iterable[tuple[str, Any]], *,
                     prefix: str = "diffusion_pytorch_model", max_shard_size: int | str = "10GB",
                     metadata: Mapping[str, str] | None = None) -> list[str]:
  """Writes the tensors (in order) as one file or as shards + index; returns the files written."""
  folder = os.fspath(folder)
  os.makedirs(folder, exist_ok=True)
  items = list(tensors.items() if isinstance(tensors, Mapping) else tensors)
  limit = parse_size(max_shard_size)
  shards: list[list[tuple[str, Any]]] = []
  current: list[tuple[str, Any]] = []
  current_size = total = 0
  for name, value in items:  # huggingface_hub's rule: in order; an oversized tensor gets a shard of its own
    shape, dtype = _spec(value)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    total += size
    if size > limit:
      shards.append([(name, value)])
      continue
    if current and current_size + size > limit:
      shards.append(current)
      current, current_size = [], 0
    current.append((name, value))
    current_size += size
  if current or not shards:
    shards.append(current)

  # Remove what a previous save of this prefix left (a stale index next to a single file would win).
  stale = re.compile(re.escape(prefix) + r"(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?")
  for f in os.listdir(folder):
    if stale.fullmatch(f):
      os.remove(os.path.join(folder, f))

  metadata = {"format": "pt", **(metadata or {})}
  if len(shards) == 1:
    name = f"{prefix}.safetensors"
    _write_file(os.path.join(folder, name), shards[0], metadata)
    return [name]
  names, weight_map = [], {}
  for i, shard in enumerate(shards):
    name = f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    _write_file(os.path.join(folder, name), shard, metadata)
    names.append(name)
    weight_map.update({tensor: name for tensor, _ in shard})
  index = {"metadata": {"total_size": total}, "weight_map": weight_map}
  with open(os.path.join(folder, _index_name(prefix)), "w", encoding="utf-8") as f:
    f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
  return names + [_index_name(prefix)]


__all__ = ["Checkpoint", "CheckpointError", "Pending", "open_checkpoint", "write_checkpoint", "parse_size",
           "DTYPES"]
