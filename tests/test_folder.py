"""The folder source on files the test writes: every optional ground truth, splits, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from vbanana.data import sources
from vbanana.data.adapters import BadRecordError
from vbanana.data.folder import FolderSource


def _write_full_record(directory, stem="kitchen", size=(6, 8)):
  h, w = size
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  Image.fromarray(image).save(directory / f"{stem}.png")
  (directory / f"{stem}.txt").write_text("a red cube left of a ball\n")
  millimetres = rng.integers(0, 10000, (h, w)).astype(np.uint16)
  Image.fromarray(millimetres).save(directory / f"{stem}.depth.png")
  semantic = np.zeros((h, w), np.uint8)
  semantic[:, w // 2:] = 1
  semantic[0, 0] = 255
  Image.fromarray(semantic).save(directory / f"{stem}.semantic.png")
  instance = np.zeros((h, w), np.uint8)
  instance[2:4, w // 2:] = 7
  Image.fromarray(instance).save(directory / f"{stem}.instance.png")
  normals = np.zeros((h, w, 3), np.float32)
  normals[..., 2] = 1
  np.save(directory / f"{stem}.normals.npy", normals)
  return image, millimetres, semantic, instance, normals


def test_folder_reads_every_ground_truth(tmp_path):
  (tmp_path / "classes.txt").write_text("floor\ncube\n")
  image, millimetres, semantic, instance, normals = _write_full_record(tmp_path)
  Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "zeta.jpg")
  source = sources.make_source({"kind": "folder", "path": str(tmp_path)})
  assert len(source) == 2  # Auxiliary PNGs are not records.
  sample = source[0]
  np.testing.assert_array_equal(sample["image"], image)
  assert sample["caption"] == "a red cube left of a ball"
  np.testing.assert_allclose(sample["depth"], millimetres / 1000.0, rtol=1e-6)
  np.testing.assert_array_equal(sample["semantic"], semantic)
  np.testing.assert_array_equal(sample["instance"], instance)
  np.testing.assert_array_equal(sample["normals"], normals)
  assert sample["class_names"] == ("floor", "cube")
  assert sample["instance_class"] == {7: 1}
  assert sample["key"].endswith("kitchen.png")
  sources.check_sample(sample)
  plain = source[1]
  assert set(plain) == {"image", "key"} and plain["image"].shape == (5, 5, 3)


def test_depth_npy_and_split_subdirectory(tmp_path):
  (tmp_path / "validation").mkdir()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "validation" / "a.png")
  np.save(tmp_path / "validation" / "a.depth.npy", np.full((4, 4), 2.5, np.float64))
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.png")
  validation = FolderSource(str(tmp_path), "validation")
  assert len(validation) == 1 and validation[0]["depth"].dtype == np.float32
  assert float(validation[0]["depth"][0, 0]) == 2.5
  assert len(FolderSource(str(tmp_path), "train")) == 1  # No train/ folder: the directory itself.


def test_folder_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="no images"):
    FolderSource(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="'path'.*not a directory"):
    FolderSource(str(tmp_path / "missing"))
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "c.semantic.png")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "d.png")
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d.semantic.png")
  source = FolderSource(str(tmp_path))
  with pytest.raises(BadRecordError, match="broken.png: cannot decode image"):
    source[0]
  with pytest.raises(BadRecordError, match="c.semantic.png: shape \\(3, 3\\) differs"):
    source[1]
  with pytest.raises(BadRecordError, match="d.semantic.png: a semantic mask needs classes.txt"):
    source[2]
