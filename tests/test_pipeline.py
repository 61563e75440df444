"""The Grain mixture, eval batches and augmentation, on real folder sources the tests write."""

import numpy as np
import pytest

from vbanana.data import augment

# ----------------------------------------------------------------------------------------------------------
# Augmentation: every array of a sample moves together.


def _column_sample(h=8, w=12):
  """A sample whose every array is a function of the column, so any crop/flip mismatch shows."""
  cols = np.broadcast_to(np.arange(w), (h, w))
  normals = np.stack([np.full((h, w), 0.6), np.zeros((h, w)), np.full((h, w), 0.8)], -1)
  normals[..., 0] *= np.where(cols < w // 2, 1, -1)  # Left half faces right, right half faces left.
  return {
      "image": np.stack([cols * 10, cols, np.zeros_like(cols)], -1).astype(np.uint8),
      "semantic": cols.astype(np.int32),
      "instance": (cols + 1).astype(np.int32),
      "instance_class": {i + 1: i for i in range(w)},
      "depth": (cols + 1).astype(np.float32),
      "normals": normals.astype(np.float32),
      "caption": "a cube on the left, the leftmost ball",
      "referring": [("the object on the Left", 1), ("the rightmost one", w)],
  }


def test_crop_and_flip_keep_image_and_ground_truth_together():
  rng = np.random.default_rng(0)
  flipped_seen = set()
  for _ in range(20):
    out = augment.train_augment(_column_sample(), rng, size=4, crop_scale=(0.5, 0.5))  # 4x4 crop, no resize.
    col = out["semantic"]
    np.testing.assert_array_equal(out["image"][..., 1], col)
    np.testing.assert_array_equal(out["depth"], col + 1)
    np.testing.assert_array_equal(out["instance"], col + 1)
    flipped = bool(col[0, 0] > col[0, -1])
    flipped_seen.add(flipped)
    facing = np.where(col < 6, 0.6, -0.6) * (-1 if flipped else 1)
    np.testing.assert_allclose(out["normals"][..., 0], facing, atol=1e-6)
    assert set(out["instance_class"]) == set(np.unique(out["instance"]).tolist())
    assert all(iid in out["instance_class"] for _, iid in out["referring"])
    if flipped:
      assert out["caption"] == "a cube on the right, the rightmost ball"
  assert flipped_seen == {True, False}


def test_resize_rules_per_kind():
  labels = np.array([[0, 0, 3, 3], [0, 0, 3, 3], [7, 7, 255, 255], [7, 7, 255, 255]], np.int32)
  small = augment.resize_nearest(np.kron(labels, np.ones((3, 3), np.int32)), 5)
  assert set(np.unique(small)) <= {0, 3, 7, 255}  # Nearest neighbour: no new label appears.
  depth = np.full((8, 8), 2.0, np.float32)
  depth[:, :4] = np.nan  # Invalid left half must not leak into the valid right half.
  depth[0, 7] = 0.0
  out = augment.resize_depth(depth, 4)
  valid = np.isfinite(out)
  assert valid[:, 2:].sum() >= 7 and not valid[:, :2].any()
  np.testing.assert_allclose(out[valid], 2.0, rtol=1e-6)
  normals = np.zeros((8, 8, 3), np.float32)
  normals[..., 0], normals[..., 2] = 0.6, 0.8
  normals[4:] = np.nan
  out = augment.resize_normals(normals, 4)
  ok = np.isfinite(out).all(-1)
  assert ok[:2].all() and not ok[2:].any()
  np.testing.assert_allclose(np.linalg.norm(out[ok], axis=-1), 1.0, rtol=1e-5)
  assert augment.resize_rgb(np.zeros((10, 6, 3), np.uint8), 4).shape == (4, 4, 3)


def test_eval_crop_is_the_full_resolution_centre_square():
  sample = _column_sample(h=8, w=12)
  out = augment.eval_crop(sample)
  assert out["image"].shape == (8, 8, 3)
  np.testing.assert_array_equal(out["semantic"][0], np.arange(2, 10))


# ----------------------------------------------------------------------------------------------------------
# The mixture and eval batches on a folder source whose image colour encodes the record index.

import grain  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from PIL import Image  # noqa: E402

from vbanana import tasks  # noqa: E402
from vbanana.data import pipeline  # noqa: E402

WEIGHTS = dict(generation=0.5, depth=0.2, normals=0.15, semantic=0.1, instance=0.05)


def _write_folder(directory, n, size=(12, 16)):
  """n records with every ground truth; record i's image is the uniform colour (i % 256, i // 256, 77)."""
  h, w = size
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "classes.txt").write_text("floor\ncube\n")
  for i in range(n):
    stem = directory / f"r{i:04d}"
    Image.fromarray(np.full((h, w, 3), (i % 256, i // 256, 77), np.uint8)).save(f"{stem}.png")
    (directory / f"r{i:04d}.txt").write_text(f"picture number {i}")
    np.save(f"{stem}.depth.npy", np.full((h, w), 1.0 + i / 10, np.float32))
    normals = np.zeros((h, w, 3), np.float32)
    normals[..., 2] = 1.0
    np.save(f"{stem}.normals.npy", normals)
    semantic = np.zeros((h, w), np.uint8)
    semantic[h // 3:, w // 4:] = 1
    Image.fromarray(semantic).save(f"{stem}.semantic.png")
    Image.fromarray(semantic * 3).save(f"{stem}.instance.png")  # One instance (id 3) of class 1.
  return {"kind": "folder", "path": str(directory)}


def _data_cfg(source, weights=None, **overrides):
  weights = weights or {"generation": 1.0}
  cfg = dict(resolution=8, text_length=32, max_inputs=1, global_batch=8, num_workers=0, seed=3,
             components={name: dict(source=source, task=name, weight=w) for name, w in weights.items()})
  cfg.update(overrides)
  return cfg


def _indices(batch):
  """Record indices of generation rows, read back from the uniform target colour."""
  target = batch["target"].astype(np.int64)
  assert (target == target[:, :1, :1]).all(), "generation targets should stay uniform"
  return (target[:, 0, 0, 0] + 256 * target[:, 0, 0, 1]).tolist()


@pytest.mark.slow
def test_mixture_matches_weights_and_every_example_has_one_structure(tmp_path):
  cfg = _data_cfg(_write_folder(tmp_path / "data", 24), WEIGHTS, global_batch=40)
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  counts = np.zeros(len(tasks.TASKS), np.int64)
  spec = None
  for _ in range(50):  # 2,000 examples.
    batch = next(it)
    structure = {k: (v.shape, v.dtype) for k, v in batch.items()}
    spec = spec or structure
    assert structure == spec
    counts += np.bincount(batch["task"], minlength=len(tasks.TASKS))
    for row in range(40):
      name = tasks.TASKS[batch["task"][row]]
      assert batch["input_mask"][row].tolist() == [name != "generation"]
      assert not batch["inputs"][row][~batch["input_mask"][row]].any()  # Empty slots are zero.
      text = batch["text"][row]
      end = int(np.argmax(text == 1))
      assert end > 0 and (text[:end] > 1).all() and not text[end + 1:].any()
      bytes(int(t) - 2 for t in text[:end]).decode("utf-8")
  assert spec == {"text": ((40, 32), np.int32), "inputs": ((40, 1, 8, 8, 3), np.uint8),
                  "input_mask": ((40, 1), np.bool_), "target": ((40, 8, 8, 3), np.uint8),
                  "task": ((40,), np.int32), "skipped": ((40,), np.int32)}
  assert not batch["skipped"].any()  # a clean source skips nothing
  n = counts.sum()
  for name, weight in WEIGHTS.items():  # Per-component binomial bound, 4 standard deviations.
    count = counts[tasks.task_id(name)]
    assert abs(count - n * weight) <= 4 * np.sqrt(n * weight * (1 - weight)) + 1, (name, count)
  assert counts.sum() == sum(counts[tasks.task_id(name)] for name in WEIGHTS)


def test_broken_records_are_skipped_and_counted_or_fail_in_strict_mode(tmp_path, caplog):
  source = _write_folder(tmp_path / "data", 8)
  data = tmp_path / "data"
  (data / "r0001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")          # Corrupt bytes.
  np.save(data / "r0002.depth.npy", np.full((12, 16), np.nan, np.float32))      # NaN depth.
  (data / "r0003.depth.npy").unlink()                                            # Missing feature.
  Image.fromarray(np.full((12, 16), 9, np.uint8)).save(data / "r0004.semantic.png")  # Unknown class.
  cfg = _data_cfg(source, {"depth": 1.0}, global_batch=4)
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  # 16 rows = two epochs of the 8 records: the 8 positions that hold a broken record are replaced, each row
  # saying how many records were skipped to make it (what the trainer reports as data/skipped_records).
  skipped = sum(int(next(it)["skipped"].sum()) for _ in range(4))
  assert skipped >= 8, skipped
  logged = caplog.text
  for name in ("r0001.png", "r0002.png", "r0003.png", "r0004.png"):
    assert name in logged, name
  assert "no valid pixel" in logged and "outside the 2 classes" in logged
  strict = pipeline.make_train_iterator({**cfg, "strict": True}, process_index=0, process_count=1)
  with pytest.raises(Exception, match=r"data.strict=True: .*r000[1-4]"):
    for _ in range(4):
      next(strict)


def _run_and_resume(cfg, tmp_path, name, before=3, after=4):
  """Batches `after` of an uninterrupted run, and of a run restored from an Orbax checkpoint at `before`."""
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  for _ in range(before):
    next(it)
  with ocp.CheckpointManager(tmp_path / name) as manager:
    manager.save(before, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = [next(it) for _ in range(after)]
  if hasattr(it, "close"):
    it.close()
  resumed = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  with ocp.CheckpointManager(tmp_path / name) as manager:
    manager.restore(before, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  got = [next(resumed) for _ in range(after)]
  if hasattr(resumed, "close"):
    resumed.close()
  return expected, got


@pytest.mark.slow
def test_restored_iterator_continues_the_same_stream(tmp_path):
  source = _write_folder(tmp_path / "data", 20)
  for workers in (0, 2):
    cfg = _data_cfg(source, {"generation": 0.7, "depth": 0.3}, num_workers=workers)
    expected, got = _run_and_resume(cfg, tmp_path, f"ckpt_{workers}")
    for a, b in zip(expected, got):
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key}, {workers} workers")
  # Restoring is not trivially true: a different seed gives a different stream.
  other = next(pipeline.make_train_iterator(_data_cfg(source, seed=4), process_index=0, process_count=1))
  first = next(pipeline.make_train_iterator(_data_cfg(source, seed=3), process_index=0, process_count=1))
  assert _indices(other) != _indices(first)


def test_process_shards_are_disjoint_and_cover_the_data(tmp_path):
  source = _write_folder(tmp_path / "data", 32)
  seen = []
  for process in (0, 1):
    it = pipeline.make_train_iterator(_data_cfg(source, global_batch=16), process_index=process,
                                      process_count=2)
    indices = _indices(next(it)) + _indices(next(it))  # One epoch of this process's 16 records.
    assert len(set(indices)) == 16
    seen.append(set(indices))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(32))
  with pytest.raises(ValueError, match="global_batch=16 is not divisible by the 3 processes"):
    pipeline.make_train_iterator(_data_cfg(source, global_batch=16), process_index=0, process_count=3)


def test_eval_covers_the_split_exactly_once(tmp_path):
  source = _write_folder(tmp_path / "data", 11, size=(12, 16))
  (tmp_path / "data" / "r0006.png").write_bytes(b"broken")
  cfg = _data_cfg(source, {"generation": 1.0, "depth": 0.0})
  covered, num_batches = [], []
  for process in (0, 1):
    batches = list(pipeline.make_eval_batches(cfg, "generation", "validation", 6, process_index=process,
                                              process_count=2))
    num_batches.append(len(batches))
    rows = []
    for batch, examples in batches:
      real = batch["example_mask"]
      assert real.shape == (3,) and len(examples) == real.sum() and not real[len(examples):].any()
      assert not batch["target"][~real].any()
      indices = _indices({"target": batch["target"][real]})
      assert all(f"picture number {i}" in e.instruction for e, i in zip(examples, indices))
      rows += indices
    assert len(rows) == len(set(rows))
    covered.append(set(rows))
  assert num_batches[0] == num_batches[1] == 2
  assert covered[0] | covered[1] == set(range(11)) - {6} and not covered[0] & covered[1]
  # limit: the first N records; the depth component (weight 0) keeps full-resolution ground truth.
  limited = list(pipeline.make_eval_batches(cfg, "depth", "validation", 4, limit=5, process_index=0,
                                            process_count=1))
  assert [int(b["example_mask"].sum()) for b, _ in limited] == [4, 1]
  example = limited[0][1][0]
  assert example.task == "depth" and example.instruction == tasks.get("depth").CANONICAL
  arrays = [v for v in example.ground_truth.values() if isinstance(v, np.ndarray) and v.ndim >= 2]
  assert arrays and all(a.shape[:2] == (12, 12) for a in arrays)  # The centre square, not 8x8.


def test_config_errors_name_the_field(tmp_path):
  source = _write_folder(tmp_path / "data", 2)
  with pytest.raises(ValueError, match="data.components.x.task: unknown task 'colouring'"):
    pipeline.make_train_iterator({"components": {"x": dict(source=source, task="colouring", weight=1)}},
                                 process_index=0, process_count=1)
  with pytest.raises(ValueError, match="data.components.x has no field 'weight'"):
    pipeline.make_train_iterator({"components": {"x": dict(source=source, task="depth")}},
                                 process_index=0, process_count=1)


@pytest.mark.slow
def test_scenes_mixture_feeds_every_task(tmp_path):
  """The built-in scenes (built once by the source) make examples of all seven tasks, one structure."""
  uniform = {name: 1.0 for name in tasks.TASKS}
  cfg = pipeline.scenes_data_config(str(tmp_path / "scenes"), resolution=32, global_batch=14,
                                    num_train=16, weights=uniform)
  cfg["strict"] = True  # Every scene must make every task.
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  seen = set()
  for _ in range(3):
    batch = next(it)
    assert batch["target"].shape == (14, 32, 32, 3) and batch["inputs"].shape == (14, 1, 32, 32, 3)
    seen |= set(batch["task"].tolist())
    for row, task in enumerate(batch["task"]):
      assert batch["input_mask"][row, 0] == (tasks.TASKS[task] != "generation")
  assert seen == set(range(len(tasks.TASKS)))


@pytest.mark.slow
def test_global_batches_do_not_depend_on_process_or_worker_count(tmp_path):
  """Global batch b is the same for 1 or 2 processes (rows concatenated in process order) and 0 or 2
  workers: what makes a 2-host run train on exactly the data of a 1-host run."""
  source = _write_folder(tmp_path / "data", 20)
  weights = {"generation": 0.6, "depth": 0.25, "semantic": 0.15}

  def batches(process_count=1, workers=0, n=3):
    its = [pipeline.make_train_iterator(_data_cfg(source, weights, global_batch=8, num_workers=workers),
                                        process_index=p, process_count=process_count)
           for p in range(process_count)]
    out = []
    for _ in range(n):
      parts = [next(it) for it in its]
      out.append({k: np.concatenate([part[k] for part in parts]) for k in parts[0]})
    for it in its:
      if hasattr(it, "close"):
        it.close()
    return out

  reference = batches()
  assert len(set(tuple(b["task"].tolist()) for b in reference)) > 1 or len(set(reference[0]["task"])) > 1
  for process_count, workers in ((2, 0), (1, 2)):
    for b, (got, want) in enumerate(zip(batches(process_count, workers), reference)):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key],
                                      err_msg=f"batch {b} {key}: {process_count} processes, {workers} workers")
