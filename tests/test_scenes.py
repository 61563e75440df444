"""The built-in scenes dataset: determinism, exact ground truth, text that matches the picture, edits, TFDS.

Ground truth is checked against formulas written here from the camera parameters (ray-plane and
ray-sphere geometry), not against the renderer's own code paths.
"""
import hashlib
import itertools
import math

import numpy as np
import pytest

from vbanana.data import scenes
from vbanana.data import scenes_tfds

RES = 32


def _camera_vectors(camera, height, width):
  """Unnormalised camera-space ray directions (x, y, -1) through the pixel centres, (H, W, 3)."""
  focal = 0.5 * width / math.tan(0.5 * camera.fov)
  x = (np.arange(width) + 0.5 - 0.5 * width) / focal
  y = -(np.arange(height) + 0.5 - 0.5 * height) / focal
  xx, yy = np.meshgrid(x, y)
  return np.stack([xx, yy, -np.ones_like(xx)], -1)


def _world_to_camera(camera, points):
  p = camera.pitch
  right, up, back = np.array([1, 0, 0]), np.array([0, math.cos(p), -math.sin(p)]), np.array([0, math.sin(p), math.cos(p)])
  rel = np.asarray(points) - np.array([0.0, camera.height, 0.0])
  return np.stack([rel @ right, rel @ up, rel @ back], -1)


def _sample_and_scene(index, split="train", res=RES):
  return scenes.make_sample(split, index, res), scenes.scene_for(split, index)


def _equal(a, b):
  if isinstance(a, np.ndarray):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
  return a == b


def test_same_seed_same_bytes_and_different_seeds_differ():
  a = scenes.make_sample("train", 5, RES)
  b = scenes.make_sample("train", 5, RES)
  assert a.keys() == b.keys()
  for key in a:
    assert _equal(a[key], b[key]), key
  other_index = scenes.make_sample("train", 6, RES)
  other_seed = scenes.make_sample("train", 5, RES, seed=1)
  other_split = scenes.make_sample("validation", 5, RES)
  for other in (other_index, other_seed, other_split):
    assert not np.array_equal(a["image"], other["image"])
    assert not np.array_equal(a["depth"], other["depth"])


def test_raw_sample_types():
  s = scenes.make_sample("test", 0, RES)
  assert s["image"].dtype == np.uint8 and s["image"].shape == (RES, RES, 3)
  assert s["depth"].dtype == np.float32 and s["depth"].shape == (RES, RES)
  assert s["normals"].dtype == np.float32 and s["normals"].shape == (RES, RES, 3)
  assert s["semantic"].dtype == np.int32 and s["instance"].dtype == np.int32
  assert s["class_names"] == scenes.CLASS_NAMES
  assert s["edit_source"] is s["image"] and s["edit_target"].shape == (RES, RES, 3)
  assert isinstance(s["caption"], str) and s["caption"]
  assert s["key"] == "scenes/test/0"


@pytest.mark.parametrize("index", range(6))
def test_depth_is_exact_on_ground_and_wall(index):
  s, scene = _sample_and_scene(index)
  cam = scene.camera
  v = _camera_vectors(cam, RES, RES)
  p = cam.pitch
  world_y = v[..., 1] * math.cos(p) - math.sin(p)   # world direction of (x, y, -1)
  world_z = -v[..., 1] * math.sin(p) - math.cos(p)
  ground = s["semantic"] == scenes.GROUND
  assert ground.any()
  expected = cam.height / -world_y  # z-depth = the multiple of (x, y, -1) that reaches y = 0
  np.testing.assert_allclose(s["depth"][ground], expected[ground], rtol=1e-5)
  wall = s["semantic"] == scenes.WALL
  if scene.wall_z is not None:
    np.testing.assert_allclose(s["depth"][wall], (scene.wall_z / world_z)[wall], rtol=1e-5)
  else:
    assert not wall.any()
  sky = s["semantic"] == scenes.BACKGROUND
  assert np.all(s["depth"][sky] == 0) and np.all(s["depth"][~sky] > 0)


@pytest.mark.parametrize("index", range(6))
def test_normals_unit_facing_camera_and_consistent_with_depth(index):
  s, scene = _sample_and_scene(index)
  n, depth = s["normals"], s["depth"]
  solid = depth > 0
  np.testing.assert_allclose(np.linalg.norm(n[solid], axis=-1), 1.0, atol=1e-5)
  assert np.all(n[~solid] == 0)
  v = _camera_vectors(scene.camera, RES, RES)
  assert np.all(np.sum(n * -v, -1)[solid] > 0), "a normal points away from the camera"
  p = scene.camera.pitch
  ground = s["semantic"] == scenes.GROUND
  np.testing.assert_allclose(n[ground], np.broadcast_to([0, math.cos(p), math.sin(p)], n[ground].shape), atol=1e-6)
  # Spheres: the point reconstructed from depth lies on the sphere, and the normal is its radial direction.
  points = depth[..., None] * v
  for k, obj in enumerate(scene.objects):
    mask = s["instance"] == k + 1
    if obj.shape != "sphere" or not mask.any():
      continue
    centre = _world_to_camera(scene.camera, [obj.x, obj.scale, obj.z])
    radial = (points[mask] - centre) / obj.scale
    np.testing.assert_allclose(np.linalg.norm(radial, axis=-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(radial, n[mask], atol=1e-3)


@pytest.mark.parametrize("index", range(8))
def test_masks_agree(index):
  s, scene = _sample_and_scene(index)
  sem, inst = s["semantic"], s["instance"]
  ids = set(np.unique(inst).tolist()) - {0}
  assert set(s["instance_class"]) == ids
  for i, cls in s["instance_class"].items():
    assert np.all(sem[inst == i] == cls)
    assert s["class_names"][cls] == scene.objects[i - 1].shape
  assert np.all(np.isin(sem[inst == 0], [scenes.BACKGROUND, scenes.GROUND, scenes.WALL]))
  assert [o["pixels"] for o in s["objects"]] == [int((inst == k + 1).sum()) for k in range(len(scene.objects))]


def test_objects_do_not_interpenetrate_and_stand_in_view():
  for index in range(60):
    scene = scenes.scene_for("train", index)
    assert len(scene.objects) >= 2
    for a, b in itertools.combinations(scene.objects, 2):
      assert math.hypot(a.x - b.x, a.z - b.z) >= a.footprint + b.footprint
    for obj in scene.objects:
      if scene.wall_z is not None:
        assert obj.z - obj.footprint > scene.wall_z
      if obj.shape == "box":  # the footprint bounds the box's corners
        assert obj.footprint >= 0.85 * obj.scale * math.sqrt(2) - 1e-9
      col, row, _ = scenes.project(scene.camera, np.array([[obj.x, obj.height / 2, obj.z]]), 1, 1)[0]
      assert 0 < col < 1 and 0 < row < 1


def _views(s):
  """Per instance id: (pixel count, mean column, mean depth), computed from the masks here."""
  inst, depth = s["instance"], s["depth"]
  cols = np.broadcast_to(np.arange(inst.shape[1]), inst.shape)
  return {o["instance"]: ((inst == o["instance"]).sum(), cols[inst == o["instance"]].mean() if (inst == o["instance"]).any() else np.nan,
                          depth[inst == o["instance"]].mean() if (inst == o["instance"]).any() else np.nan)
          for o in s["objects"]}


def _resolve(expression, objects, views):
  """Instance ids an expression can mean, read with the grammar a person would use."""
  assert expression.startswith("the "), expression
  words = expression[4:]
  for rel in ("left of", "right of", "in front of", "behind"):
    if f" {rel} the " in words:
      shape, anchor_text = words.split(f" {rel} ")
      anchors = _resolve(anchor_text, objects, views)
      assert len(anchors) == 1, f"ambiguous anchor in {expression!r}"
      a = views[anchors[0]]
      test = {"left of": lambda v: v[1] < a[1], "right of": lambda v: v[1] > a[1],
              "in front of": lambda v: v[2] < a[2], "behind": lambda v: v[2] > a[2]}[rel]
      return [o["instance"] for o in objects if o["shape"] == shape and o["instance"] != anchors[0]
              and views[o["instance"]][0] > 0 and test(views[o["instance"]])]
  first, *rest = words.split()
  if first in ("leftmost", "rightmost", "nearest", "farthest"):
    shape = rest[0]
    cands = [o["instance"] for o in objects if o["shape"] == shape and views[o["instance"]][0] > 0]
    key = {"leftmost": lambda i: views[i][1], "rightmost": lambda i: -views[i][1],
           "nearest": lambda i: views[i][2], "farthest": lambda i: -views[i][2]}[first]
    best = min(key(i) for i in cands)
    return [i for i in cands if key(i) == best]
  wanted = set(words.split())
  return [o["instance"] for o in objects
          if wanted <= {o["shape"], o["color"], o["size"], o["material"]} and o["shape"] in wanted]


def test_referring_expressions_pick_exactly_one_visible_object():
  kinds = set()
  for index in range(25):
    s = scenes.make_sample("train", index, RES)
    views = _views(s)
    assert s["referring"], s["key"]
    for expression, instance in s["referring"]:
      assert np.any(s["instance"] == instance), f"{s['key']}: {expression!r} names a hidden object"
      assert _resolve(expression, s["objects"], views) == [instance], f"{s['key']}: {expression!r}"
      kinds.add("relation" if " of " in expression or "behind" in expression else
                "extreme" if expression.split()[1].endswith(("most", "est")) else "attributes")
  assert kinds == {"relation", "extreme", "attributes"}


def test_captions_name_visible_objects():
  for index in range(10):
    s = scenes.make_sample("validation", index, RES)
    for o in s["objects"]:
      if o["pixels"] >= 4:
        assert f"{o['color']} {o['shape']}" in s["caption"], (s["caption"], o)
  assert len({scenes.make_sample("train", i, RES)["caption"].split()[0] for i in range(12)}) > 1


def _dilate(mask):
  out = mask.copy()
  for dy, dx in itertools.product((-1, 0, 1), repeat=2):
    out |= np.roll(np.roll(mask, dy, 0), dx, 1)
  return out


def test_edit_pairs_change_only_what_they_say():
  seen = set()
  for index in range(40):
    s, scene = _sample_and_scene(index)
    src = scenes.render(scene, RES)
    edit = scenes.sample_edit(scene, scenes.object_views(src, len(scene.objects)),
                              scenes.scene_rng("train", index, stream=1))
    assert edit.instruction == s["edit_instruction"]
    tgt = scenes.render(edit.scene, RES)
    np.testing.assert_array_equal(tgt["image"], s["edit_target"])
    obj = scene.objects[edit.instance - 1]
    was = src["instance"] == edit.instance
    assert was.any() and obj.shape in edit.instruction
    if edit.kind == "color":
      new = edit.scene.objects[edit.instance - 1]
      assert new.color != obj.color and new.color in edit.instruction
      for key in ("depth", "normals", "instance", "semantic"):
        np.testing.assert_array_equal(tgt[key], src[key])
      changed = np.any(tgt["image"] != src["image"], -1)
      assert changed.any() and not np.any(changed & ~_dilate(was))
    elif edit.kind == "remove":
      assert len(edit.scene.objects) == len(scene.objects) - 1
      k = edit.instance - 1
      assert edit.scene.objects == scene.objects[:k] + scene.objects[k + 1:]
      np.testing.assert_array_equal(tgt["depth"][~was], src["depth"][~was])
      behind = tgt["depth"][was]  # what the object hid is farther away (or sky, depth 0)
      assert np.all((behind > src["depth"][was]) | (behind == 0))
    elif edit.kind == "move":
      new = edit.scene.objects[edit.instance - 1]
      side = "left" if new.x < obj.x else "right"
      assert side in edit.instruction and new.z == obj.z
      now = tgt["instance"] == edit.instance
      np.testing.assert_array_equal(tgt["depth"][~(was | now)], src["depth"][~(was | now)])
      for a, b in itertools.combinations(edit.scene.objects, 2):
        assert not scenes.overlaps(a, b)
    seen.add(edit.kind)
    if seen == {"color", "remove", "move"}:
      break
  assert seen == {"color", "remove", "move"}


def _digest(sample):
  return hashlib.sha256(sample["image"].tobytes() + sample["depth"].tobytes()).hexdigest()


@pytest.mark.slow
def test_tfds_build_round_trip_and_disjoint_splits(tmp_path):
  sizes = {"train": 6, "validation": 3, "test": 3}
  path = scenes_tfds.build(str(tmp_path), RES, sizes["train"], sizes["validation"], sizes["test"])
  assert path.endswith("vbanana_scenes/r32/1.0.0")
  digests = {}
  for split, n in sizes.items():
    source = scenes_tfds.load(str(tmp_path), RES, split)
    assert len(source) == n
    for i in (0, n - 1):
      got, want = source[i], scenes.make_sample(split, i, RES)
      assert got.keys() == want.keys()
      for key in want:
        assert _equal(got[key], want[key]), (split, i, key)
    digests[split] = {_digest(source[i]) for i in range(n)}
    assert len(digests[split]) == n
  for a, b in itertools.combinations(digests, 2):
    assert not digests[a] & digests[b], (a, b)
  # The same request reuses the build; a different one is refused, naming the directory.
  assert scenes_tfds.build(str(tmp_path), RES, sizes["train"], sizes["validation"], sizes["test"]) == path
  with pytest.raises(ValueError, match="already holds"):
    scenes_tfds.build(str(tmp_path), RES, 7, 3, 3)
  with pytest.raises(IndexError):
    scenes_tfds.load(str(tmp_path), RES, "test")[3]


@pytest.mark.slow
def test_parallel_build_writes_the_same_records(tmp_path):
  serial = scenes_tfds.build(str(tmp_path / "serial"), RES, 5, 0, 0)
  parallel = scenes_tfds.build(str(tmp_path / "parallel"), RES, 5, 0, 0, num_workers=2)
  a = scenes_tfds.load(str(tmp_path / "serial"), RES, "train")
  b = scenes_tfds.load(str(tmp_path / "parallel"), RES, "train")
  assert serial != parallel and len(a) == len(b) == 5
  for i in range(5):
    for key, value in a[i].items():
      assert _equal(value, b[i][key]), (i, key)


def test_bad_input_gets_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="split"):
    scenes.make_sample("training", 0, RES)
  with pytest.raises(ValueError, match="resolution must be an integer number of pixels from 16 to 1024"):
    scenes_tfds.build(str(tmp_path), 0)
  with pytest.raises(FileNotFoundError, match="build"):
    scenes_tfds.load(str(tmp_path), 64, "train")
