"""Image sources: rows read lazily from `.npy` files, image folders and concatenations equal
the images loaded at once, in any row order, and a source survives pickling (what a
distributed executor's worker receives)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.data.images import ArrayImages, ConcatImages, FileImages, NpyImages
from auditor.errors import SampleError


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.fixture
def uint8_nhwc(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, size=(23, 6, 5, 3), dtype=np.uint8)
    return raw, NpyImages(_npy(tmp_path / "a.npy", raw), label="a.npz", size=None)


def test_npy_rows_in_any_order_equal_the_whole_array(uint8_nhwc):
    raw, source = uint8_nhwc
    expected = raw.transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert source.shape == (23, 3, 6, 5)
    rows = np.array([7, 3, 4, 5, 22, 0, 1])  # runs and jumps, unsorted
    np.testing.assert_array_equal(source.read(rows), expected[rows])
    np.testing.assert_array_equal(source[2:9], expected[2:9])
    np.testing.assert_array_equal(source[5], expected[5])
    np.testing.assert_array_equal(np.asarray(source), expected)


def test_batches_cover_every_row_once(uint8_nhwc):
    _, source = uint8_nhwc
    seen = np.concatenate([rows for rows, images in source.batches(5) if len(images) == len(rows)])
    assert seen.tolist() == list(range(23))


def test_float_nchw_grayscale_is_repeated_and_resized(tmp_path):
    raw = np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)
    source = NpyImages(_npy(tmp_path / "g.npy", raw), label="g.npz", size=(4, 4))
    images = source.read(np.arange(4))
    assert images.shape == (4, 3, 4, 4)
    np.testing.assert_array_equal(images[:, 0], images[:, 2])


def test_bad_values_fail_when_the_source_is_opened(tmp_path):
    raw = np.zeros((3000, 3, 2, 2), np.float32)
    raw[2500, 0, 0, 0] = np.nan  # beyond the first chunk: the whole file is checked
    with pytest.raises(SampleError, match=r"x\.npz: images contain NaN .*rows 2048-2999"):
        NpyImages(_npy(tmp_path / "x.npy", raw), label="x.npz", size=None)


def test_concatenation_routes_rows_to_their_part(uint8_nhwc, tmp_path):
    _, first = uint8_nhwc
    second = ArrayImages(np.random.default_rng(2).random((4, 3, 6, 5), dtype=np.float32))
    both = ConcatImages([first, second])
    assert both.shape == (27, 3, 6, 5)
    rows = np.array([26, 0, 23, 22])
    got = both.read(rows)
    np.testing.assert_array_equal(got[0], second.images[3])
    np.testing.assert_array_equal(got[2], second.images[0])
    np.testing.assert_array_equal(got[1], first[0])
    np.testing.assert_array_equal(got[3], first[22])


def test_sources_pickle_to_the_same_images(uint8_nhwc, tmp_path):
    _, npy = uint8_nhwc
    for i in range(3):
        Image.fromarray(np.full((6, 5, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    files = FileImages(sorted(tmp_path.glob("*.png")), origin=f"sample folder {tmp_path}", size=None)
    subset = ConcatImages([npy, files]).subset(np.array([24, 1, 25]))
    again = pickle.loads(pickle.dumps(subset))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(subset))
    assert np.asarray(again)[0].max() == pytest.approx(40 / 255)


def test_a_file_that_shrinks_after_opening_names_the_rows(uint8_nhwc):
    _, source = uint8_nhwc
    with open(source.path, "r+b") as f:
        f.truncate(source.path.stat().st_size - 1)
    np.testing.assert_array_equal(source.read(np.arange(3)).shape, (3, 3, 6, 5))
    with pytest.raises(SampleError, match=r"a\.npz: rows 20-22 cannot be read"):
        source.read(np.arange(20, 23))
