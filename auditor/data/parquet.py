"""Sample sets stored as a Parquet table: one row per sample, the columns named in the config.

The image column holds either encoded images (PNG / JPEG bytes, or a struct with a `bytes` field
as Hugging Face `datasets` writes them) or image paths / URIs (local paths, relative to the
table's folder, `file:`, `runs:/`, `mlflow-artifacts:/`, ...). Label, id and group columns are
small and read at once; encoded images are read one row group at a time (`ParquetImages`), so
memory is bounded by a row group, not by the table (write tables with row groups of a few hundred
rows: `pyarrow.parquet.write_table(..., row_group_size=256)`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from auditor.config import SampleColumns
from auditor.data.images import (
    FORMATS_FIX,
    FileImages,
    ImageSource,
    Size,
    decode_image,
    hw_text,
    open_image,
)
from auditor.errors import SampleError
from auditor.tracking.resolve import download_samples

ROW_FIX = "remove or replace the row"


@dataclass(frozen=True)
class TableSamples:
    """The columns of one table sample set, validated (labels -1 where unknown)."""

    images: ImageSource
    labels: np.ndarray
    ids: list[str] | None
    groups: list[str] | None


def read_parquet_samples(
    path: Path,
    *,
    columns: SampleColumns,
    class_names: list[str] | None,
    size: Size,
    tracking_uri: str,
    scratch: Path,
) -> TableSamples:
    """Validate the table at `path` and return its samples; remote image URIs are downloaded
    into `scratch` (the caller's folder)."""
    origin = f"sample file {path}"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise SampleError(f"{origin}: not a readable Parquet file ({type(err).__name__})", FORMATS_FIX)
    wanted = {"image": columns.image, "label": columns.label, "id": columns.id, "group": columns.group}
    for role, column in wanted.items():
        if column is not None and column not in schema.names:
            raise SampleError(
                f"{origin} has no {role} column {column!r} (columns: {schema.names})",
                f"name the column in samples[].columns.{role}",
            )
    small = [c for c in (columns.label, columns.id, columns.group) if c is not None]
    table = pq.read_table(path, columns=small) if small else None
    n = pq.ParquetFile(path).metadata.num_rows
    if n == 0:
        raise SampleError(f"{origin} has no rows", "log a table with at least one sample")
    labels = (
        np.full(n, -1, dtype=np.int64)
        if columns.label is None
        else _labels(table.column(columns.label), origin, columns.label, class_names)
    )
    ids = None if columns.id is None else _ids(table.column(columns.id), origin)
    groups = None if columns.group is None else _strings(table.column(columns.group))
    kind = schema.field(columns.image).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        images: ImageSource = _uri_images(path, columns.image, size, tracking_uri, scratch)
    elif _encoded(kind):
        images = ParquetImages(path, column=columns.image, size=size)
        images.check()
    else:
        raise SampleError(
            f"{origin}: image column {columns.image!r} has type {kind}, expected encoded image "
            "bytes (binary) or image paths / URIs (string)",
            FORMATS_FIX,
        )
    return TableSamples(images, labels, ids, groups)


class ParquetImages(ImageSource):
    """Encoded images (PNG / JPEG) in one column of a Parquet file, decoded on reading; a read
    loads the row groups its rows lie in, one at a time, and keeps the last one. Picklable (the
    open file and the cached row group stay behind)."""

    def __init__(self, path: Path, *, column: str, size: Size):
        self.path, self.column, self.size = Path(path), column, size
        self._file: pq.ParquetFile | None = None
        self._cached: tuple[int, list[Any]] | None = None
        meta = self._parquet().metadata
        self.group_starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        first = self._decode(0, self._row_group(0)[0])
        self._shape = (int(self.group_starts[-1]), *first.shape)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_cached": None}

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape  # type: ignore[return-value]

    def check(self) -> None:
        """Every row holds an image PIL can open (header only), of the first one's size unless
        a target size is set: streamed by row group, so a bad row fails before the audit starts."""
        row = 0
        for g in range(len(self.group_starts) - 1):  # one row group in memory at a time
            for value in self._row_group(g):
                data = self._present(row, value)
                with open_image(io.BytesIO(data), self._what(row)) as image:
                    width, height = image.size
                if self.size is None:
                    self._same_size(row, (3, height, width))
                row += 1

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self._shape[1:]), dtype=np.float32)
        groups = np.searchsorted(self.group_starts, rows, side="right") - 1
        for g in np.unique(groups):
            values = self._row_group(int(g))
            for j in np.flatnonzero(groups == g):
                out[j] = self._decode(int(rows[j]), values[rows[j] - self.group_starts[g]])
        return out

    def _parquet(self) -> pq.ParquetFile:
        if self._file is None:
            self._file = pq.ParquetFile(self.path, pre_buffer=False)  # no read-ahead of other groups
        return self._file

    def _row_group(self, g: int) -> list[Any]:
        if self._cached is None or self._cached[0] != g:
            column = self._parquet().read_row_group(g, columns=[self.column]).column(0)
            self._cached = (g, _image_bytes(column).to_pylist())
        return self._cached[1]

    def _decode(self, row: int, value: bytes | None) -> np.ndarray:
        image = decode_image(io.BytesIO(self._present(row, value)), self.size, self._what(row))
        if hasattr(self, "_shape"):
            self._same_size(row, image.shape)
        return image

    def _present(self, row: int, value: bytes | None) -> bytes:
        if not value:
            raise SampleError(f"{self._what(row)} is empty", ROW_FIX)
        return value

    def _what(self, row: int) -> str:
        return f"sample file {self.path}: the image of row {row}"

    def _same_size(self, row: int, shape: tuple[int, ...]) -> None:
        if hasattr(self, "_shape") and tuple(shape) != self._shape[1:]:
            raise SampleError(
                f"sample file {self.path} holds images of different sizes "
                f"(row 0: {hw_text(self._shape)}, row {row}: {hw_text(shape)})",
                "set preprocess.size to resize them to one size",
            )


def _encoded(kind: pa.DataType) -> bool:
    """Binary image bytes, or a struct with a binary `bytes` field."""
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _encoded(kind.field(index).type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _image_bytes(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The encoded bytes of an image column (the `bytes` field of a struct column)."""
    return pc.struct_field(column, "bytes") if pa.types.is_struct(column.type) else column


def _uri_images(path: Path, column: str, size: Size, tracking_uri: str, scratch: Path) -> FileImages:
    """The images a column of paths / URIs names, remote ones downloaded into `scratch`."""
    values = pq.read_table(path, columns=[column]).column(0).to_pylist()
    files = []
    for row, value in enumerate(values):
        if not value:
            raise SampleError(f"sample file {path}: row {row} has no image path", ROW_FIX)
        scheme = urlparse(value).scheme
        if scheme in ("", "file"):
            local = Path(urlparse(value).path if scheme else value)
            file = local if local.is_absolute() else path.parent / local
            if not file.is_file():
                raise SampleError(f"sample file {path}: the image {value} of row {row} does not exist", ROW_FIX)
            files.append(file)
        else:
            files.append(download_samples(value, tracking_uri=tracking_uri, into=scratch / "images" / str(row)))
    return FileImages(files, origin=f"sample file {path}", size=size)


def _labels(column: pa.ChunkedArray, origin: str, name: str, class_names: list[str] | None) -> np.ndarray:
    """Integer class indices (nulls and NaN: -1, unknown); a float column of whole numbers
    (pandas' int column with missing values) is accepted."""
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise SampleError(
            f"{origin}: label column {name!r} has type {kind}, expected integer class indices",
            "store labels as class indices 0, 1, ... (null = unknown) and name them in samples[].class_names",
        )
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    values = np.where(np.isnan(values), -1.0, values)
    bad = (values < -1) | (values % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SampleError(
            f"{origin}: row {row} has label {values[row]:g}, expected class indices >= 0 or null",
            FORMATS_FIX,
        )
    labels = values.astype(np.int64)
    if class_names is not None and labels.size and labels.max() >= len(class_names):
        raise SampleError(
            f"{origin}: label {labels.max()} has no entry in class_names ({len(class_names)} classes)",
            "list every class in samples[].class_names",
        )
    return labels


def _ids(column: pa.ChunkedArray, origin: str) -> list[str]:
    """The id column: present and unique in every row."""
    ids = _strings(column)
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        raise SampleError(f"{origin}: row {int(np.flatnonzero(missing)[0])} has no id", "give every row an id")
    seen: set[str] = set()
    for row, value in enumerate(ids):
        if value in seen:
            raise SampleError(
                f"{origin}: ids are not unique (duplicate: {value!r} in row {row}), expected unique ids",
                FORMATS_FIX,
            )
        seen.add(value)
    return ids


def _strings(column: pa.ChunkedArray) -> list[str]:
    """A metadata column as strings (null: the empty string)."""
    return ["" if v is None else str(v) for v in column.to_pylist()]
