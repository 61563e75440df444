"""TFDS adapters on `tfds.testing.mock_data` records in each dataset's real feature spec (no downloads)."""

import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vbanana.data import adapters, sources
from vbanana.data.adapters import IGNORE_LABEL, BadRecordError


def _mock_source(name, tmp_path, **kwargs):
  with tfds.testing.mock_data(num_examples=3):
    source = sources.make_source({"kind": "tfds", "name": name, "data_dir": str(tmp_path), **kwargs})
    records = [source._open()[i] for i in range(len(source))]
    samples = [source[i] for i in range(len(source))]
  return source, records, samples


def test_nyu_depth_v2_maps_image_and_metric_depth(tmp_path):
  source, records, samples = _mock_source("nyu_depth_v2", tmp_path)
  assert len(source) == 3
  for record, sample in zip(records, samples):
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (480, 640, 3)
    assert sample["depth"].dtype == np.float32 and sample["depth"].shape == (480, 640)
    np.testing.assert_array_equal(sample["depth"], record["depth"].astype(np.float32))
    assert sample["key"].startswith("nyu_depth_v2/train[")
  sources.check_sample(samples[0])
  # The source pickles without its open file handles (it travels into Grain workers).
  assert pickle.loads(pickle.dumps(source))._records is None


def test_scene_parse150_other_becomes_ignore_and_ids_shift_by_one(tmp_path):
  _, records, samples = _mock_source("scene_parse150", tmp_path)
  for record, sample in zip(records, samples):
    raw = record["annotation"][..., 0].astype(np.int32)
    expected = np.where(raw == 0, IGNORE_LABEL, raw - 1)
    np.testing.assert_array_equal(sample["semantic"], expected)
    assert len(sample["class_names"]) == 150 and sample["class_names"][0] == "wall"
  # Mock annotations hold random bytes (ids above 150) and sizes unlike the image: both are rejected.
  with pytest.raises(BadRecordError, match="scene_parse150/train"):
    sources.check_sample(samples[0])
  # A well-formed record passes the check.
  annotation = np.zeros((6, 8, 3), np.uint8)
  annotation[:3] = 151  # Out of range: 150 classes.
  with pytest.raises(BadRecordError, match="outside the 150 classes"):
    sources.check_sample(adapters.scene_parse150(
        {"image": np.zeros((6, 8, 3), np.uint8), "annotation": annotation}, "ade[0]"))
  annotation[:3] = 3
  sample = adapters.scene_parse150({"image": np.zeros((6, 8, 3), np.uint8), "annotation": annotation},
                                   "ade[0]")
  sources.check_sample(sample)
  assert set(np.unique(sample["semantic"])) == {2, IGNORE_LABEL}


def test_cityscapes_label_ids_become_the_19_train_ids(tmp_path):
  _, records, samples = _mock_source("cityscapes/semantic_segmentation", tmp_path)
  for record, sample in zip(records, samples):
    assert sample["image"].shape == (1024, 2048, 3)
    assert set(np.unique(sample["semantic"])) <= set(range(19)) | {IGNORE_LABEL}
    assert sample["class_names"] == adapters.CITYSCAPES_CLASSES
    sources.check_sample(sample)
  labels = np.array([[7, 8, 26, 33], [0, 1, 6, 34]], np.uint8)[..., None]
  sample = adapters.cityscapes({"image_left": np.zeros((2, 4, 3), np.uint8),
                                "segmentation_label": labels}, "cs[0]")
  np.testing.assert_array_equal(sample["semantic"], [[0, 1, 13, 18], [255, 255, 255, 255]])


def test_coco_captions_keeps_every_caption(tmp_path):
  _, records, samples = _mock_source("coco_captions", tmp_path)
  for record, sample in zip(records, samples):
    texts = tuple(t.decode() if isinstance(t, bytes) else str(t) for t in record["captions"]["text"])
    assert sample["captions"] == texts and sample["caption"] == texts[0]
    sources.check_sample(sample)
  with pytest.raises(BadRecordError, match="coco\\[7\\].*'captions'"):
    adapters.coco_captions({"image": np.zeros((4, 4, 3), np.uint8)}, "coco[7]")


def test_classification_prompts_with_class_names(tmp_path):
  with pytest.raises(ValueError, match="class_names"):  # WordNet ids are no prompt.
    _mock_source("imagenet2012", tmp_path)
  names = [f"thing {i}" for i in range(999)] + ["apple"]
  _, records, samples = _mock_source("imagenet2012", tmp_path, class_names=names)
  for record, sample in zip(records, samples):
    name = names[int(record["label"])]
    assert sample["caption"] in (f"a photo of a {name}", f"a photo of an {name}")
  sample = adapters.classification({"image": np.zeros((2, 2, 3), np.uint8), "label": 999}, "k",
                                   class_names=names)
  assert sample["caption"] == "a photo of an apple"
  with pytest.raises(ValueError, match="class_names.*3 names for the 1000 classes"):
    _mock_source("imagenet2012", tmp_path, class_names=["a", "b", "c"])


def test_bad_specs_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="'kind': unknown kind 'webdataset'"):
    sources.make_source({"kind": "webdataset"})
  with pytest.raises(ValueError, match="no field 'name'"):
    sources.make_source({"kind": "tfds"})
  with pytest.raises(ValueError, match="'name': no TFDS adapter for 'made_up'"):
    adapters.make_adapter("made_up", features=None)
  with pytest.raises(BadRecordError, match="nyu\\[3\\]: record has no feature 'depth'"):
    adapters.nyu_depth_v2({"image": np.zeros((2, 2, 3), np.uint8)}, "nyu[3]")
