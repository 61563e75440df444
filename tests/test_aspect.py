"""Native aspect ratios: buckets at a token budget, the model on H x W grids, non-square scenes, the Grain
mixture batched by bucket (resumable, the same for any process count), evaluation grouped by bucket, a
mixed-aspect training run, and predict keeping a photo's size and aspect ratio."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from vbanana import aspect
from vbanana.data import augment, pipeline, scenes, scenes_tfds

RES, PATCH = 32, 8  # a budget of 16 tokens: buckets 32x24, 32x32, 24x32
RATIOS = "3:4+1:1+4:3"
SHAPES = ((32, 24), (32, 32), (24, 32))
QUICKSTART_SHAPES = ((36, 28), (32, 32), (28, 36))  # the same ratios at the tiny size's patch 4


# ----------------------------------------------------------------------------------------------------------
# Buckets.


@pytest.mark.parametrize("image_size,patch", [(32, 4), (16, 4), (256, 16), (64, 8)])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 1.0, 4 / 3, 16 / 9, 3.0, 4.0])
def test_buckets_keep_the_budget_and_the_ratio(image_size, patch, ratio):
  h, w = aspect.shape_at_budget(image_size, patch, ratio)
  budget = (image_size // patch) ** 2
  assert h % patch == 0 and w % patch == 0
  assert (h // patch) * (w // patch) <= budget
  # Near the asked ratio whenever the budget has a grid that near (a 4x4 budget cannot draw 1:4 well).
  best = min(abs(math.log(gw / gh / ratio)) for gh in range(1, budget + 1) for gw in range(1, budget // gh + 1))
  assert abs(math.log(w / h / ratio)) <= max(aspect.RATIO_TOLERANCE, best) + 1e-9
  if ratio == 1.0:
    assert (h, w) == (image_size, image_size)


def test_bucket_values_and_nearest():
  assert aspect.shapes_at_budget(32, 4, ["3:4", "1:1", "4:3", "1"]) == ((36, 28), (32, 32), (28, 36))
  assert aspect.shapes_at_budget(RES, PATCH, RATIOS.split("+")) == SHAPES
  assert aspect.parse_ratio("16:9") == pytest.approx(16 / 9) and aspect.parse_ratio("3/2") == 1.5
  # Log distance: 2:1 and 1:2 are equally far from 1:1, ties go to the first listed.
  assert aspect.nearest((480, 640), SHAPES) == (24, 32)
  assert aspect.nearest((640, 480), SHAPES) == (32, 24)
  assert aspect.nearest((500, 510), SHAPES) == (32, 32)
  with pytest.raises(ValueError, match="outside"):
    aspect.shape_at_budget(32, 4, 10.0)


def test_model_config_validates_and_round_trips_its_shapes():
  from vbanana.model import ModelConfig, config_for
  cfg = config_for("tiny", image_size=RES, patch_size=PATCH, image_shapes=[list(s) for s in SHAPES])
  assert cfg.shapes == SHAPES and hash(cfg)
  again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
  assert again == cfg
  assert config_for("tiny").shapes == ((32, 32),)
  with pytest.raises(ValueError, match=r"image_shapes.*\(40, 32\) has 20 patches, over the budget of 16"):
    config_for("tiny", image_size=RES, patch_size=PATCH, image_shapes=[(40, 32)])
  with pytest.raises(ValueError, match=r"image_shapes.*not a multiple of patch_size=8"):
    config_for("tiny", image_size=RES, patch_size=PATCH, image_shapes=[(28, 32)])


@pytest.mark.slow
def test_dit_runs_every_bucket_and_refuses_shapes_over_its_budget():
  from flax import nnx
  from vbanana.model import DiT, config_for
  cfg = config_for("tiny", image_size=RES, patch_size=PATCH, image_shapes=SHAPES)
  model = DiT(cfg, rngs=nnx.Rngs(0))
  # Non-zero output layer, so the output depends on the input.
  model.final.kernel[...] = np.random.default_rng(0).normal(size=model.final.kernel.shape) * 0.1
  text = np.zeros((1, cfg.text_len), np.int32)
  outs = {}
  for h, w in SHAPES:
    x = np.random.default_rng(1).normal(size=(1, h, w, 3)).astype(np.float32)
    outs[h, w] = np.asarray(model(x, np.full((1,), 0.5), text, x[:, None], np.ones((1, 1), bool)))
    assert outs[h, w].shape == (1, h, w, 3) and np.all(np.isfinite(outs[h, w]))
  with pytest.raises(ValueError, match="over the model's budget of 16"):
    x = np.zeros((1, 40, 40, 3), np.float32)
    model(x, np.ones(1), text, x[:, None], np.ones((1, 1), bool))
  with pytest.raises(ValueError, match="inputs has shape"):
    model(np.zeros((1, 32, 24, 3)), np.ones(1), text, np.zeros((1, 1, 24, 32, 3)), np.ones((1, 1), bool))


# ----------------------------------------------------------------------------------------------------------
# Crops and non-square scenes.


def test_crops_keep_the_bucket_aspect_ratio():
  rng = np.random.default_rng(0)
  assert augment.center_box(30, 60, 4 / 3) == (0, 10, 30, 40)
  assert augment.center_box(60, 30, 4 / 3) == (19, 0, 22, 30)  # 30 / (4/3) = 22.5 -> 22 rows
  for _ in range(20):
    top, left, h, w = augment.random_box(50, 90, rng, (0.5, 1.0), 0.75)
    assert 0 <= top <= 50 - h and 0 <= left <= 90 - w
    assert abs(w / h - 0.75) < 0.05
  # The square path is the old one, draw for draw.
  a, b = np.random.default_rng(3), np.random.default_rng(3)
  assert augment.random_square_box(40, 70, a, (0.6, 0.9)) == augment.random_box(40, 70, b, (0.6, 0.9))[:3]
  # A sample already at the bucket's aspect ratio is resized, not cropped.
  sample = scenes.make_sample("train", 1, 32, shape=(24, 32))
  out = augment.train_augment(sample, np.random.default_rng(0), (12, 16), flip=False)
  np.testing.assert_array_equal(out["semantic"], augment.resize_nearest(sample["semantic"], (12, 16)))


def test_scenes_render_non_square_cameras():
  square = scenes.make_sample("train", 5, 32)
  np.testing.assert_array_equal(scenes.make_sample("train", 5, 32, shape=(32, 32))["image"], square["image"])
  for shape in ((40, 24), (24, 40)):
    for index in range(4):
      s = scenes.make_sample("validation", index, 32, shape=shape)
      for key in ("image", "depth", "normals", "semantic", "instance", "edit_target"):
        assert s[key].shape[:2] == shape, key
      # Every object placed in this camera's view shows in the image.
      assert set(range(1, len(s["objects"]) + 1)) <= set(np.unique(s["instance"]).tolist())
      assert s["caption"]


@pytest.fixture(scope="module")
def aspect_scenes(tmp_path_factory):
  """A scenes build whose records cycle through the three buckets (24 train, 6 validation scenes)."""
  data_dir = str(tmp_path_factory.mktemp("aspect_scenes"))
  scenes_tfds.build(data_dir, RES, 24, 6, 0, shapes=SHAPES)
  return data_dir


def _data_config(data_dir, **extra):
  source = dict(kind="scenes", data_dir=data_dir, resolution=RES, num_train=24, num_validation=6, num_test=0,
                shapes=[list(s) for s in SHAPES])
  comps = {"generation": dict(source=source, task="generation", weight=0.5),
           "depth": dict(source=source, task="depth", weight=0.3),
           "semantic": dict(source=source, task="semantic", weight=0.2)}
  return dict(resolution=RES, shapes=[list(s) for s in SHAPES], text_length=224, max_inputs=1, global_batch=4,
              num_workers=0, seed=0, components=comps, **extra)


@pytest.mark.slow
def test_the_build_stores_each_record_at_its_shape(aspect_scenes):
  source = scenes_tfds.load(aspect_scenes, RES, "train", SHAPES)
  assert [tuple(s) for s in source.shapes()[:4]] == [SHAPES[0], SHAPES[1], SHAPES[2], SHAPES[0]]
  for i in (0, 1, 2, 7):
    record = source[i]
    assert record["image"].shape[:2] == tuple(source.shapes()[i])
    np.testing.assert_array_equal(record["depth"],
                                  scenes.make_sample("train", i, RES, shape=SHAPES[i % 3])["depth"])
  with pytest.raises(ValueError, match=r"shapes.*repeated"):
    scenes_tfds.builder_config(RES, [(32, 24), (32, 24)])


# ----------------------------------------------------------------------------------------------------------
# The mixture batched by bucket.


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.slow
def test_train_batches_have_one_bucket_each_resume_and_split_over_processes(aspect_scenes):
  cfg = _data_config(aspect_scenes)
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  batches = _take(it, 24)
  seen = {b["target"].shape[1:3] for b in batches}
  assert seen == set(SHAPES)  # every bucket comes up, each batch of one shape
  for b in batches:
    assert b["inputs"].shape[2:4] == b["target"].shape[1:3]
  # Resuming from a saved state gives the same batches.
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  _take(it, 10)
  state = it.get_state()
  again = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  again.set_state(state)
  for a, b in zip(_take(again, 6), batches[10:16]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Two processes build the two halves of the same global batches, so they agree on every step's shape.
  halves = [_take(pipeline.make_train_iterator(cfg, process_index=p, process_count=2), 8) for p in (0, 1)]
  for whole, first, second in zip(batches[:8], *halves):
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), whole[key])


def test_a_source_without_shapes_is_spread_over_buckets_and_cropped(tmp_path):
  from vbanana.data import folder
  for i in range(12):  # 20 x 40 photos: wider than every bucket
    Image.fromarray(np.full((20, 40, 3), 10 * i, np.uint8)).save(tmp_path / f"{i:02d}.png")
  src = folder.FolderSource(str(tmp_path))
  assert [tuple(s) for s in src.shapes()] == [(20, 40)] * 12
  buckets = pipeline.record_buckets(src, SHAPES, "generation", 0)
  assert set(buckets.tolist()) == {2}  # all landscape: the 24x32 bucket

  class NoShapes:
    def __len__(self):
      return 300

  spread = pipeline.record_buckets(NoShapes(), SHAPES, "generation", 0)
  assert set(spread.tolist()) == {0, 1, 2} and min(np.bincount(spread)) > 60


@pytest.mark.slow
def test_eval_batches_group_by_bucket_and_cover_the_split_once(aspect_scenes):
  cfg = _data_config(aspect_scenes)
  seen = []
  for batch, examples in pipeline.make_eval_batches(cfg, "depth", "validation", 4, process_index=0,
                                                    process_count=1):
    shape = batch["target"].shape[1:3]
    assert shape in SHAPES
    for example in examples:
      seen.append(example.key if hasattr(example, "key") else example.ground_truth.get("key", None))
      # The ground truth keeps the record's own size (scored there), at the batch's aspect ratio.
      gt = np.shape(example.target)[:2]
      assert abs(gt[1] / gt[0] - shape[1] / shape[0]) < 1e-6
  assert len(seen) == 6


# ----------------------------------------------------------------------------------------------------------
# Training at mixed aspect ratios, and predict keeping the photo's size.


@pytest.fixture(scope="module")
def aspect_run(tiny_model):
  """conftest's shared tiny model: trained at the quickstart's three buckets."""
  return tiny_model


@pytest.mark.slow
def test_training_at_mixed_aspect_ratios_runs_and_evaluates(aspect_run):
  workdir, _ = aspect_run
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(r.get("step", 0) for r in rows) == 6
  final = {k: v for r in rows for k, v in r.items()}
  assert final["depth/num_examples"] == 6 and np.isfinite(final["depth/abs_rel"])
  assert final["semantic/num_examples"] == 6
  config = json.loads((workdir / "checkpoints" / "model_config.json").read_text())
  assert [tuple(s) for s in config["image_shapes"]] == list(QUICKSTART_SHAPES)


@pytest.mark.slow
@pytest.mark.parametrize("resize,expected", [("bucket", (28, 36)), ("square", (32, 32)), ("native", (20, 40))])
def test_predict_keeps_the_photo_size_and_picks_the_shape(aspect_run, tmp_path, resize, expected):
  from vbanana import predict
  _, exported = aspect_run
  photo = scenes.make_sample("test", 0, 64, shape=(50, 100))["image"]  # 1:2, a size the model never saw
  Image.fromarray(photo).save(tmp_path / "wide.png")
  loaded = predict.load(str(exported))
  assert predict.model_shape(loaded.config, photo.shape[:2], resize) == expected
  written = predict.run(str(exported), "depth", str(tmp_path / "out"), str(tmp_path / "wide.png"), steps=1,
                        loaded=loaded, progress=False, resize=resize)
  depth = np.load(next(p for p in written if p.endswith(".npy")))
  assert depth.shape == (50, 100)
  rgb = predict.predict_rgb(loaded, predict.make_sampler(loaded, steps=1), ["x"], [photo], resize=resize)[0]
  assert rgb.shape[:2] == expected


@pytest.mark.slow
def test_aot_compiles_one_train_step_per_bucket_for_a_tpu(tmp_path):
  from vbanana import aot, config_lib
  c = config_lib.load_config(f"configs/quickstart.py:batch=8,aspect={RATIOS},data_dir={tmp_path}")
  c.mesh = dict(data=1, fsdp=2, tensor=2)
  report = aot.check(c, "v5e:2x2", programs=("train",), config_name="quickstart-aspect")
  assert [r.program for r in report.rows] == [f"train step {h}x{w}" for h, w in QUICKSTART_SHAPES]
  assert report.fit, aot.verdict(report)
