"""The model-independent generation metrics: the shipped scenes net, Frechet distance, caption attributes."""

import json
import os

import numpy as np
import pytest
import scipy.linalg

from vbanana.data import scenes
from vbanana.quality import metrics
from vbanana.quality import net as net_lib

pytestmark = pytest.mark.slow  # the shipped scenes classifier on rendered scenes

NUM = 160  # test images rendered per split (about 2 s each at 32x32)


@pytest.fixture(scope="module")
def shipped():
  apply, meta = net_lib.load_default()
  return apply, meta


def _render(split, num, resolution=32, offset=0):
  samples = [scenes.make_sample(split, offset + i, resolution) for i in range(num)]
  images = np.stack([s["image"] for s in samples])
  labels, counts = zip(*(net_lib.attribute_labels(s["objects"]) for s in samples))
  return images, np.stack(labels), np.asarray(counts), samples


@pytest.fixture(scope="module")
def real_test():
  return _render("test", NUM)


@pytest.fixture(scope="module")
def real_validation():
  return _render("validation", NUM)


def _blur(images, passes=1):
  x = images.astype(np.float32)
  for _ in range(passes):
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    x = sum(p[:, i:i + images.shape[1], j:j + images.shape[2]] for i in range(3) for j in range(3)) / 9
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _noisy(images, sigma, seed=0):
  noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
  return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def test_frechet_distance_matches_the_closed_form():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
  b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.7
  mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real)
  assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
  assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
  with pytest.raises(ValueError, match="same D"):
    metrics.frechet_distance(a, b[:, :5])


def test_shipped_weights_load_and_record_their_training(shipped):
  apply, meta = shipped
  assert os.path.getsize(net_lib.DEFAULT_WEIGHTS) < 2_000_000
  record = meta["record"]
  assert record["test"]["attr_balanced"] > 0.85 and "command" in record
  out = apply(np.zeros((2, 64, 48, 3), np.uint8))  # any size: resized to the native resolution
  assert out["features"].shape == (2, net_lib.NetConfig().feature_dim)
  assert out["attributes"].shape == (2, len(net_lib.ATTRIBUTES))


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_corruption(shipped, real_test, real_validation):
  apply, _ = shipped
  feats = lambda images: net_lib.run_in_batches(apply, images)["features"]
  test_images, validation_images = real_test[0], real_validation[0]
  real = feats(test_images)
  shuffled = real[np.random.default_rng(0).permutation(len(real))]
  assert metrics.frechet_distance(real, shuffled) == pytest.approx(0.0, abs=1e-6)
  held_out = metrics.frechet_distance(real, feats(validation_images))
  fd_noise = [metrics.frechet_distance(real, feats(_noisy(test_images, s))) for s in (8, 24, 64)]
  fd_blur = [metrics.frechet_distance(real, feats(_blur(test_images, p))) for p in (1, 3)]
  fd_pure_noise = metrics.frechet_distance(
      real, feats(np.random.default_rng(1).integers(0, 256, test_images.shape, dtype=np.uint8)))
  assert fd_noise == sorted(fd_noise) and fd_blur == sorted(fd_blur), (fd_noise, fd_blur)
  assert held_out < fd_noise[1] < fd_pure_noise, (held_out, fd_noise, fd_pure_noise)
  assert held_out < fd_blur[0], (held_out, fd_blur)


def test_attribute_accuracy_is_high_on_real_images_and_chance_on_noise(shipped, real_test):
  apply, _ = shipped
  images, labels, counts, _ = real_test
  real = net_lib.run_in_batches(apply, images)
  scores = metrics.attribute_scores(real["attributes"], labels)
  noise = np.random.default_rng(2).integers(0, 256, images.shape, dtype=np.uint8)
  noise_scores = metrics.attribute_scores(net_lib.run_in_batches(apply, noise)["attributes"], labels)
  assert scores["balanced"].mean() > 0.85, scores["balanced"].mean()
  assert np.nanmean(scores["recall"]) > 0.8
  assert abs(noise_scores["balanced"].mean() - 0.5) < 0.1, noise_scores["balanced"].mean()
  assert (real["count"].argmax(-1) == counts).mean() > 0.4  # 7 classes: chance is far lower


def test_generation_quality_accumulator(shipped, real_test):
  apply, _ = shipped
  images, labels, counts, _ = real_test
  acc = metrics.GenerationQuality(apply)
  blurred = _blur(images, 2)
  for start in range(0, NUM, 64):  # batched updates give the same result as one
    acc.update(blurred[start:start + 64], images[start:start + 64], labels[start:start + 64],
               counts[start:start + 64])
  result = acc.result()
  assert set(result) == {"fd", "attr_recall", "attr_balanced", "count_acc", "attr_recall_real",
                         "attr_balanced_real", "count_acc_real"}
  assert result["fd"] > 0 and result["attr_balanced"] < result["attr_balanced_real"]
  same = metrics.GenerationQuality(apply)
  same.update(images, images)  # no labels: FD only
  assert set(same.result()) == {"fd"} and same.result()["fd"] == pytest.approx(0.0, abs=1e-6)


def test_caption_attributes_agree_with_the_objects(real_test):
  *_, samples = real_test
  for sample in samples[:40]:
    from_objects, _ = net_lib.attribute_labels(sample["objects"])
    np.testing.assert_array_equal(metrics.caption_attributes(sample["caption"]), from_objects,
                                  err_msg=sample["caption"])


def test_weights_round_trip_and_mismatch_is_a_clear_error(tmp_path, shipped):
  from flax import nnx
  model = net_lib.QualityNet(net_lib.NetConfig(), rngs=nnx.Rngs(3))
  path = str(tmp_path / "net.safetensors")
  net_lib.save(model, path, {"note": "test"})
  loaded, meta = net_lib.load(path)
  x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  np.testing.assert_allclose(net_lib.make_apply(loaded)(x)["features"], net_lib.make_apply(model)(x)["features"],
                             rtol=1e-6, atol=1e-6)
  assert meta["record"] == {"note": "test"}
  with open(str(tmp_path / "net.json"), "w") as f:  # a config that does not match the stored tensors
    json.dump({"net": {"resolution": 32, "convs": [[16, 1]], "feature_dim": 128}}, f)
  with pytest.raises(ValueError, match="net.safetensors"):
    net_lib.load(path)
