"""Parquet sample sets: image bytes, struct and URI columns, metadata columns named in the config,
reads across row groups, and every bad row ending in one clear error."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from auditor.config import Preprocess, SampleColumns, SampleSource
from auditor.data.samples import TableSettings, load_sample_set, load_samples
from auditor.errors import SampleError

RAW = Preprocess()
COLUMNS = SampleColumns(image="png", label="label", id="sample_id", group="site")


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(n: int, size: tuple[int, int] = (8, 6), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def write_table(path: Path, row_group_size: int = 3, **columns: list) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def bytes_table(tmp_path: Path, n: int = 7, **extra: list) -> tuple[Path, np.ndarray]:
    raw = pixels(n)
    columns = {
        "png": [png_bytes(p) for p in raw],
        "label": [0, 1, None, 1, 0, 1, 0][:n],
        "sample_id": [f"s{i}" for i in range(n)],
        "site": ["A", "B", "A", None, "B", "A", "B"][:n],
        **extra,
    }
    return write_table(tmp_path / "samples.parquet", **columns), raw


def test_image_bytes_with_labels_ids_groups_across_row_groups(tmp_path: Path) -> None:
    path, raw = bytes_table(tmp_path)
    s = load_sample_set(path, name="prod", preprocess=RAW, table=TableSettings(COLUMNS, ["real", "fake"]))
    assert s.images.shape == (7, 3, 8, 6)
    expected = raw.transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(s.images[np.array([6, 0, 4, 2])], expected[[6, 0, 4, 2]], atol=1e-6)
    assert s.labels.tolist() == [0, 1, -1, 1, 0, 1, 0] and s.n_labelled == 6
    assert s.ids == [f"s{i}" for i in range(7)] and s.class_names == ["real", "fake"]
    assert s.groups == ["A", "B", "A", "", "B", "A", "B"]
    # picklable for the distributed executor, and reads the same after the round trip
    clone = pickle.loads(pickle.dumps(s.images))
    np.testing.assert_array_equal(clone[np.array([5, 1])], s.images[np.array([5, 1])])
    s.close()


def test_struct_column_resized_and_default_ids(tmp_path: Path) -> None:
    raw = pixels(4, size=(10, 10))
    images = [{"bytes": png_bytes(p), "path": None} for p in raw]
    path = write_table(tmp_path / "hf.parquet", image=images)
    s = load_sample_set(path, name="hf", preprocess=Preprocess(size=(5, 5)))
    assert s.images.shape == (4, 3, 5, 5) and s.ids == [f"hf/{i}" for i in range(4)]
    assert s.labels.tolist() == [-1] * 4 and s.groups is None


def test_uri_column_relative_and_file_uris(tmp_path: Path) -> None:
    raw = pixels(3)
    (tmp_path / "img").mkdir()
    for i, p in enumerate(raw):
        Image.fromarray(p).save(tmp_path / "img" / f"{i}.png")
    uris = ["img/0.png", str(tmp_path / "img" / "1.png"), f"file://{tmp_path / 'img' / '2.png'}"]
    path = write_table(tmp_path / "uris.parquet", image=uris, label=[1.0, float("nan"), 0.0])
    s = load_sample_set(path, name="u", preprocess=RAW, table=TableSettings(SampleColumns(label="label")))
    np.testing.assert_allclose(s.images[:], raw.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    assert s.labels.tolist() == [1, -1, 0]


def test_concatenated_with_npz_through_load_samples(tmp_path: Path) -> None:
    path, _ = bytes_table(tmp_path)
    npz = tmp_path / "ref.npz"
    np.savez(npz, images=pixels(2), labels=np.array([0, 1]))
    sources = [
        SampleSource(name="ref", uri=str(npz), role="reference"),
        SampleSource(name="prod", uri=str(path), columns=COLUMNS),
    ]
    with load_samples(sources, tracking_uri="sqlite:///unused.db", preprocess=RAW) as s:
        assert len(s) == 9 and s.set_names == ["ref"] * 2 + ["prod"] * 7
        assert s.groups == ["", ""] + ["A", "B", "A", "", "B", "A", "B"]
        assert sum(len(rows) for rows, _ in s.images.batches(4)) == 9


def _error(tmp_path: Path, columns: SampleColumns = COLUMNS, **table: list) -> str:
    path = write_table(tmp_path / "bad.parquet", **table)
    with pytest.raises(SampleError) as err:
        load_sample_set(path, name="bad", preprocess=RAW, table=TableSettings(columns))
    message = str(err.value)
    assert "\n" not in message and " -- fix: " in message
    return message


def test_bad_rows_give_one_line_errors(tmp_path: Path) -> None:
    good = [png_bytes(p) for p in pixels(3)]
    base = {"png": good, "label": [0, 1, 0], "sample_id": ["a", "b", "c"], "site": ["x", "y", "z"]}
    assert "the image of row 1 cannot be read" in _error(tmp_path, **{**base, "png": [good[0], b"junk", good[2]]})
    assert "row 2 is empty" in _error(tmp_path, **{**base, "png": [good[0], good[1], None]})
    missing = {k: v for k, v in base.items() if k != "label"}
    assert "has no label column 'label'" in _error(tmp_path, **missing)
    assert "duplicate: 'a' in row 2" in _error(tmp_path, **{**base, "sample_id": ["a", "b", "a"]})
    assert "row 0 has no id" in _error(tmp_path, **{**base, "sample_id": [None, "b", "c"]})
    assert "row 1 has label 0.5" in _error(tmp_path, **{**base, "label": [0.0, 0.5, 1.0]})
    assert "expected integer class indices" in _error(tmp_path, **{**base, "label": ["a", "b", "c"]})
    other_size = png_bytes(pixels(1, size=(4, 4))[0])
    assert "different sizes (row 0: 8x6, row 2: 4x4)" in _error(tmp_path, **{**base, "png": [*good[:2], other_size]})
    assert "image column 'png' has type int64" in _error(tmp_path, **{**base, "png": [1, 2, 3]})
    uris = SampleColumns(image="where")
    assert "the image nowhere.png of row 0 does not exist" in _error(tmp_path, uris, where=["nowhere.png"])


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(SampleError, match="not a readable Parquet file"):
        load_sample_set(path, name="b", preprocess=RAW)
