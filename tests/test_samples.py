"""Sample sets: every accepted format, resizing, concatenation, and every rejected input."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auditor.config import Preprocess, SampleSource, load_config
from auditor.data.samples import SampleSet, load_sample_set, load_samples, normalize
from auditor.errors import ConfigError, SampleError

RAW = Preprocess()
TRACKING = "sqlite:///unused.db"


def _rng_uint8(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


def _npz(tmp_path: Path, name: str = "x.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _png(path: Path, size: tuple[int, int] = (12, 10), value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size[1], size[0]), (value, 0, 255 - value)).save(path)


def test_npz_uint8_nhwc(tmp_path: Path) -> None:
    raw = _rng_uint8(4, 8, 6, 3)
    path = _npz(
        tmp_path, images=raw, labels=np.array([0, 1, -1, 1]), class_names=np.array(["a", "b"])
    )
    s = load_sample_set(path, name="prod", preprocess=RAW)
    assert s.images.dtype == np.float32 and s.images.shape == (4, 3, 8, 6)
    np.testing.assert_allclose(s.images, raw.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 1, -1, 1]
    assert s.n_labelled == 3
    assert s.ids == ["prod/0", "prod/1", "prod/2", "prod/3"]
    assert s.set_names == ["prod"] * 4 and s.class_names == ["a", "b"] and s.groups is None


def test_npz_float_nchw_with_ids_and_groups(tmp_path: Path) -> None:
    images = np.random.default_rng(1).random((3, 3, 5, 5)).astype(np.float64)
    path = _npz(
        tmp_path, images=images, ids=np.array(["u", "v", "w"]), groups=np.array(["g1", "g2", "g1"])
    )
    s = load_sample_set(path, name="prod", preprocess=RAW)
    np.testing.assert_allclose(s.images, images, atol=1e-6)
    assert s.labels.tolist() == [-1, -1, -1] and s.n_labelled == 0
    assert s.ids == ["u", "v", "w"] and s.groups == ["g1", "g2", "g1"]


@pytest.mark.parametrize(
    "images",
    [_rng_uint8(2, 5, 5, 1), (_rng_uint8(2, 1, 5, 5) / 255.0).astype(np.float32)],
    ids=["uint8-nhw1", "float-n1hw"],
)
def test_npz_grayscale_repeated_to_three_channels(tmp_path: Path, images: np.ndarray) -> None:
    s = load_sample_set(_npz(tmp_path, images=images), name="g", preprocess=RAW)
    assert s.images.shape == (2, 3, 5, 5)
    np.testing.assert_array_equal(s.images[:, 0], s.images[:, 2])


def test_npz_resize(tmp_path: Path) -> None:
    path = _npz(tmp_path, images=np.full((2, 20, 30, 3), 200, np.uint8))
    s = load_sample_set(path, name="r", preprocess=Preprocess(size=(8, 12)))
    assert s.images.shape == (2, 3, 8, 12)
    np.testing.assert_allclose(s.images, 200 / 255.0, atol=1e-5)


def test_labelled_folder(tmp_path: Path) -> None:
    _png(tmp_path / "set" / "dog" / "b.png", value=10)
    _png(tmp_path / "set" / "cat" / "a.jpg", value=20)
    _png(tmp_path / "set" / "cat" / "c.JPEG", value=30)
    (tmp_path / "set" / "cat" / "notes.txt").write_text("ignored")
    s = load_sample_set(tmp_path / "set", name="f", preprocess=RAW)
    assert s.class_names == ["cat", "dog"]
    assert s.labels.tolist() == [0, 0, 1]
    assert s.ids == ["f/cat/a.jpg", "f/cat/c.JPEG", "f/dog/b.png"]
    assert s.images.shape == (3, 3, 12, 10) and 0 <= np.asarray(s.images).min() and np.asarray(s.images).max() <= 1


def test_unlabelled_folder_with_resize(tmp_path: Path) -> None:
    _png(tmp_path / "u" / "1.png", size=(16, 16))
    _png(tmp_path / "u" / "2.png", size=(20, 24))
    s = load_sample_set(tmp_path / "u", name="u", preprocess=Preprocess(size=(8, 8)))
    assert s.images.shape == (2, 3, 8, 8)
    assert s.labels.tolist() == [-1, -1] and s.class_names is None
    np.testing.assert_allclose(s.images[:, 0], 128 / 255.0, atol=1e-2)


def test_concatenate_two_sources(tmp_path: Path) -> None:
    a = _npz(tmp_path, "a.npz", images=_rng_uint8(2, 8, 8, 3), labels=np.array([0, 1]))
    _png(tmp_path / "b" / "x" / "1.png", size=(16, 16))
    sources = [SampleSource(name="a", uri=str(a)), SampleSource(name="b", uri=str(tmp_path / "b"))]
    s = load_samples(sources, tracking_uri=TRACKING, preprocess=Preprocess(size=(8, 8)))
    assert s.images.shape == (3, 3, 8, 8)
    assert s.set_names == ["a", "a", "b"] and s.ids == ["a/0", "a/1", "b/x/1.png"]
    assert s.labels.tolist() == [0, 1, 0] and s.class_names == ["x"]
    sub = s.subset(np.array([False, True, True]))
    assert isinstance(sub, SampleSet) and sub.ids == ["a/1", "b/x/1.png"] and sub.n_labelled == 2


def test_extracted_images_live_until_the_set_is_closed(tmp_path: Path) -> None:
    raw = [_rng_uint8(3, 8, 8, 3), _rng_uint8(2, 8, 8, 3)]
    sources = [
        SampleSource(name=n, uri=str(_npz(tmp_path, f"{n}.npz", images=r)))
        for n, r in zip("ab", raw)
    ]
    with load_samples(sources, tracking_uri=TRACKING, preprocess=RAW) as s:
        gc.collect()  # the per-file sets loaded on the way are gone; their files are not
        expected = np.concatenate(raw).transpose(0, 3, 1, 2) / 255.0
        np.testing.assert_allclose(np.asarray(s.images), expected, atol=1e-6)
        scratch = s.scratch
        assert scratch is not None and any(scratch.rglob("*.npy"))
    assert not scratch.exists()


def test_concatenate_rejects_different_sizes(tmp_path: Path) -> None:
    a = _npz(tmp_path, "a.npz", images=_rng_uint8(1, 8, 8, 3))
    b = _npz(tmp_path, "b.npz", images=_rng_uint8(1, 9, 8, 3))
    sources = [SampleSource(name="a", uri=str(a)), SampleSource(name="b", uri=str(b))]
    with pytest.raises(SampleError, match="sample set b has images of 9x8 but a has 8x8"):
        load_samples(sources, tracking_uri=TRACKING, preprocess=RAW)


def test_missing_local_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(SampleError, match=f"sample file {missing} does not exist"):
        load_samples(
            [SampleSource(name="a", uri=str(missing))], tracking_uri=TRACKING, preprocess=RAW
        )


def test_normalize() -> None:
    x = torch.ones(2, 3, 4, 4)
    out = normalize(x, Preprocess(mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0)))
    assert out[:, 0].eq(1.0).all() and out[:, 1].eq(1.0).all() and out[:, 2].eq(0.0).all()


IMG = _rng_uint8(3, 4, 4, 3)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"images": np.zeros((10, 64, 64), np.uint8)}, r"images has shape \(10, 64, 64\)"),
        ({"images": np.zeros((2, 3, 4, 4), np.uint8)}, "images has shape"),
        ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "images has shape"),
        (
            {"images": np.zeros((2, 4, 4, 3), np.int32)},
            r"images has shape \(2, 4, 4, 3\) and dtype int32",
        ),
        ({"images": np.full((2, 3, 4, 4), 1.5, np.float32)}, r"images have values in \[1.5, 1.5\]"),
        ({"images": np.full((2, 3, 4, 4), np.nan, np.float32)}, "images contain NaN"),
        ({"images": np.zeros((0, 4, 4, 3), np.uint8)}, "images is empty"),
        ({"pixels": IMG}, "no 'images' array"),
        ({"images": IMG, "labels": np.array([0, 1])}, "labels has length 2 but images has 3"),
        ({"images": IMG, "labels": np.array([0.0, 1.0, 1.0])}, "labels has shape"),
        ({"images": IMG, "labels": np.array([0, -2, 1])}, "labels contain -2"),
        ({"images": IMG, "ids": np.array(["a", "b", "a"])}, "ids are not unique .duplicate: 'a'"),
        ({"images": IMG, "ids": np.array(["a", "b"])}, "ids has length 2"),
        ({"images": IMG, "groups": np.array([1, 2, 3])}, "groups has shape"),
        (
            {"images": IMG, "labels": np.array([0, 1, 2]), "class_names": np.array(["a", "b"])},
            "label 2 has no entry in class_names",
        ),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict[str, np.ndarray], problem: str) -> None:
    path = _npz(tmp_path, **arrays)
    with pytest.raises(SampleError, match=f"sample file {re.escape(str(path))}: {problem}") as info:
        load_sample_set(path, name="x", preprocess=RAW)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


def test_float_values_within_tolerance_are_clipped(tmp_path: Path) -> None:
    images = np.full((1, 3, 2, 2), 1.0005, np.float32)
    s = load_sample_set(_npz(tmp_path, images=images), name="x", preprocess=RAW)
    assert np.asarray(s.images).max() == 1.0


def test_object_array_rejected(tmp_path: Path) -> None:
    path = _npz(tmp_path, images=IMG, ids=np.array(["a", 1, None], dtype=object))
    with pytest.raises(SampleError, match=f"sample file {path}: not a readable .npz archive"):
        load_sample_set(path, name="x", preprocess=RAW)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"])
def test_corrupt_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(SampleError, match=f"sample file {path}: not a readable .npz archive"):
        load_sample_set(path, name="x", preprocess=RAW)


def test_unsupported_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b")
    with pytest.raises(SampleError, match=f"sample file {path}: unsupported format"):
        load_sample_set(path, name="x", preprocess=RAW)


def test_corrupt_image(tmp_path: Path) -> None:
    _png(tmp_path / "f" / "ok.png")
    bad = tmp_path / "f" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SampleError, match=f"image file {bad} cannot be read"):
        load_sample_set(tmp_path / "f", name="f", preprocess=RAW)


def test_truncated_image(tmp_path: Path) -> None:
    good = tmp_path / "f" / "a.jpg"
    _png(good, size=(64, 64))
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(SampleError, match=f"image file {good} cannot be read"):
        load_sample_set(tmp_path / "f", name="f", preprocess=RAW)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(SampleError, match=f"sample folder {tmp_path / 'e'} holds no"):
        load_sample_set(tmp_path / "e", name="e", preprocess=RAW)


def test_folder_of_mixed_sizes_needs_resize(tmp_path: Path) -> None:
    _png(tmp_path / "m" / "1.png", size=(8, 8))
    _png(tmp_path / "m" / "2.png", size=(9, 8))
    with pytest.raises(
        SampleError, match=f"sample folder {tmp_path / 'm'} holds images of different"
    ):
        load_sample_set(tmp_path / "m", name="m", preprocess=RAW)


def test_folder_mixing_classes_and_loose_images(tmp_path: Path) -> None:
    _png(tmp_path / "m" / "cls" / "1.png")
    _png(tmp_path / "m" / "2.png")
    with pytest.raises(SampleError, match="mixes class folders and loose images"):
        load_sample_set(tmp_path / "m", name="m", preprocess=RAW)


@pytest.mark.parametrize("name", ["../../../../elsewhere/ESCAPED", "a/b", "x y", "ünï"])
def test_sample_set_name_never_becomes_a_path(tmp_path: Path, name: str) -> None:
    """The extracted images are named by the set's place, not its (user-chosen) name: nothing
    is written outside the scratch folder, and a name with '/' still loads."""
    scratch = tmp_path / "deep" / "er" / "still" / "scratch"
    path = _npz(tmp_path, images=_rng_uint8(2, 8, 8, 3))
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    s = load_sample_set(path, name=name, preprocess=RAW, scratch=scratch)
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert written and all(p.is_relative_to(scratch) for p in written)
    assert s.set_names == [name, name] and s.ids == [f"{name}/0", f"{name}/1"]
    assert np.asarray(s.images).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "x y", "", "n" * 65])
def test_sample_set_name_with_other_characters_is_a_config_error(name: str) -> None:
    with pytest.raises(ValueError, match="may hold only letters, digits, '.', '_' and '-'"):
        SampleSource(name=name, uri="x.npz")


@pytest.mark.parametrize("name", ["reference", "prod-2024.01_a", "A1"])
def test_sample_set_names_of_allowed_characters(name: str) -> None:
    assert SampleSource(name=name, uri="x.npz").name == name


def test_config_names_the_bad_sample_set_name(tmp_path: Path) -> None:
    path = tmp_path / "audit.yaml"
    path.write_text(
        "model: {uri: m}\nsamples:\n  - {name: ok, uri: a.npz}\n"
        "  - {name: '../../../../elsewhere/ESCAPED', uri: b.npz}\n"
    )
    with pytest.raises(ConfigError, match=r"samples\.1\.name: .*may hold only letters, digits"):
        load_config(path)
