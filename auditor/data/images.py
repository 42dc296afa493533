"""Images of a sample set, read from disk in batches: an audit never holds all of them.

An `ImageSource` behaves like a read-only array of float32 N x 3 x H x W images in [0, 1]
(`len`, `shape`, indexing by int, slice or index list), but reads the rows it is asked for, and
converts, validates and resizes them on the way. Sources are picklable (a path and a few
numbers), so a distributed executor's workers read their own batches.

* `NpyImages`: an `.npy` file (the `images` member of an `.npz`, extracted once to disk),
  uint8 N x H x W x C or float N x C x H x W, C in {1, 3}; rows are read at their byte offset.
* `FileImages`: one image file (PNG/JPEG) per sample (sample folders, URI columns of tables).
* `ParquetImages` (`auditor.data.parquet`): encoded images in a Parquet column, read by row group.
* `ArrayImages`: images already in memory (tests, sample sets built in memory).
* `ConcatImages`: several sources one after the other (the audit's sample sets).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from auditor.errors import SampleError

IMAGES_EXPECTED = "N x H x W x 3 uint8 or N x 3 x H x W float in [0, 1]"
FORMATS_FIX = "see the sample formats in README.md"
RANGE_TOLERANCE = 1e-3
Size = tuple[int, int] | None


class ImageSource(ABC):
    """A lazily read array of float32 N x 3 x H x W images in [0, 1]."""

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int, int]:
        """(N, 3, H, W)."""

    @abstractmethod
    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images of `rows` (int indices, any order), float32 len(rows) x 3 x H x W."""

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows by int, slice, index list or boolean mask (read from the source); a tuple
        indexes the rows by its first item and the images by the rest."""
        if isinstance(key, tuple):
            picked = self[key[0]]
            return picked[key[1:]] if picked.ndim == 3 else picked[(slice(None), *key[1:])]
        rows = np.arange(len(self))[key]
        if np.ndim(rows) == 0:
            return self.read(np.array([int(rows)]))[0]
        return self.read(rows)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Every image in memory: for small sets only (tests, previews)."""
        images = self.read(np.arange(len(self)))
        return images if dtype is None else images.astype(dtype)

    def batch(self, start: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, images) of the batch of at most `batch_size` samples from row `start`."""
        rows = np.arange(start, min(start + batch_size, len(self)))
        return rows, self.read(rows)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, images) of consecutive batches of `batch_size` samples."""
        for start in range(0, len(self), batch_size):
            yield self.batch(start, batch_size)

    def subset(self, rows: np.ndarray) -> ImageSource:
        """The images of `rows`, still read lazily."""
        return SubsetImages(self, np.asarray(rows, dtype=np.int64))


class ArrayImages(ImageSource):
    """Images already in memory (float32 N x 3 x H x W in [0, 1])."""

    def __init__(self, images: np.ndarray):
        self.images = np.ascontiguousarray(images, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.images.shape)  # type: ignore[return-value]

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.images[rows]


class SubsetImages(ImageSource):
    def __init__(self, source: ImageSource, rows: np.ndarray):
        self.source, self.rows = source, rows

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), *self.source.shape[1:])  # type: ignore[return-value]

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.source.read(self.rows[rows])


class ConcatImages(ImageSource):
    """Sources of one image size, one after the other."""

    def __init__(self, parts: Sequence[ImageSource]):
        self.parts = list(parts)
        if len({p.shape[1:] for p in self.parts}) > 1:
            raise ValueError(f"image sizes differ: {[p.shape[1:] for p in self.parts]}")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (int(self.offsets[-1]), *self.parts[0].shape[1:])  # type: ignore[return-value]

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        for p in np.unique(part):
            mine = part == p
            out[mine] = self.parts[p].read(rows[mine] - self.offsets[p])
        return out


class NpyImages(ImageSource):
    """The images of an `.npy` file, read at their byte offsets (`label` names the file in
    error messages: the `.npz` the array came from)."""

    def __init__(self, path: Path, *, label: str, size: Size):
        self.path, self.label, self.size = Path(path), label, size
        try:
            with open(self.path, "rb") as f:
                major, _minor = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if major == 1
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
        except (ValueError, OSError, EOFError) as err:
            raise self._bad(f"images is not a readable array ({type(err).__name__})") from err
        self.stored_shape, self.stored_dtype = tuple(shape), np.dtype(dtype)
        if fortran and len(shape) > 1:
            raise self._bad("images is stored in Fortran order", "a C-ordered array (np.savez)")
        self.nhwc = _image_layout(self.stored_shape, self.stored_dtype, self._bad)
        self.row_bytes = int(np.prod(self.stored_shape[1:], dtype=np.int64)) * self.stored_dtype.itemsize
        height, width = self.stored_shape[1:3] if self.nhwc else self.stored_shape[2:4]
        self._shape = (self.stored_shape[0], 3, *(size or (height, width)))
        if not self.nhwc:
            self._check_values()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape  # type: ignore[return-value]

    def _bad(self, problem: str, expected: str = IMAGES_EXPECTED) -> SampleError:
        return SampleError(f"sample file {self.label}: {problem}, expected {expected}", FORMATS_FIX)

    def _check_values(self, chunk: int = 1024) -> None:
        """Float images must be finite and in [0, 1]: checked once, chunk by chunk, so that bad
        values fail the audit before it starts."""
        for start in range(0, len(self), chunk):
            rows = np.arange(start, min(start + chunk, len(self)))
            self._to_float(self._read_raw(rows), rows)

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return _resize(self._to_float(self._read_raw(rows), rows), self.size)

    def _read_raw(self, rows: np.ndarray) -> np.ndarray:
        raw = np.empty((len(rows), *self.stored_shape[1:]), dtype=self.stored_dtype)
        with open(self.path, "rb") as f:
            for start, stop, at in _runs(rows):
                f.seek(self.offset + start * self.row_bytes)
                data = f.read((stop - start) * self.row_bytes)
                if len(data) != (stop - start) * self.row_bytes:
                    raise SampleError(
                        f"sample file {self.label}: rows {start}-{stop - 1} cannot be read "
                        f"from {self.path} (the file is shorter than its header says)",
                        "keep the sample files unchanged while an audit runs",
                    )
                chunk = np.frombuffer(data, dtype=self.stored_dtype)
                raw[at : at + stop - start] = chunk.reshape(stop - start, *self.stored_shape[1:])
        return raw

    def _to_float(self, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.nhwc:
            images = raw.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        else:
            images = raw.astype(np.float32)
            if not np.isfinite(images).all():
                raise self._bad(f"images contain NaN or infinite values (rows {_span(rows)})")
            low, high = images.min(), images.max()
            if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
                raise self._bad(f"images have values in [{low:.3g}, {high:.3g}] (rows {_span(rows)})")
            images = images.clip(0.0, 1.0)
        return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


class FileImages(ImageSource):
    """One image file per sample; without a target `size`, every file must have the first
    file's size. `origin` names the files in error messages (e.g. "sample folder x/")."""

    def __init__(self, files: Sequence[Path], *, origin: str, size: Size):
        self.files, self.origin, self.size = list(files), origin, size
        first = decode_image(self.files[0], size)
        self._shape = (len(self.files), *first.shape)
        if size is None:
            self._check_sizes()

    def _check_sizes(self) -> None:
        """Without a target size every file must have the first one's (headers only)."""
        for path in self.files[1:]:
            with open_image(path) as image:
                width, height = image.size
            self._same_size(path, (3, height, width))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape  # type: ignore[return-value]

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self._shape[1:]), dtype=np.float32)
        for j, row in enumerate(np.asarray(rows, dtype=np.int64)):
            image = decode_image(self.files[row], self.size)
            self._same_size(self.files[row], image.shape)
            out[j] = image
        return out

    def _same_size(self, path: Path, shape: tuple[int, ...]) -> None:
        if tuple(shape) != self._shape[1:]:
            raise SampleError(
                f"{self.origin} holds images of different sizes "
                f"({self.files[0].name}: {hw_text(self._shape)}, {path.name}: {hw_text(shape)})",
                "set preprocess.size to resize them to one size",
            )


def _image_layout(shape: tuple[int, ...], dtype: np.dtype, bad: Callable[..., SampleError]) -> bool:
    """Validate an images array's shape and dtype; True for uint8 N x H x W x C."""
    if len(shape) != 4:
        raise bad(f"images has shape {shape} and dtype {dtype}")
    if shape[0] == 0:
        raise bad("images is empty")
    if dtype == np.uint8 and shape[3] in (1, 3):
        return True
    if dtype.kind == "f" and shape[1] in (1, 3):
        return False
    raise bad(f"images has shape {shape} and dtype {dtype}")


def _runs(rows: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(start, stop, position in `rows`) of each run of consecutive rows."""
    if len(rows) == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for at, run in zip(np.r_[0, breaks], np.split(rows, breaks)):
        yield int(run[0]), int(run[-1]) + 1, int(at)


def _span(rows: np.ndarray) -> str:
    return f"{rows.min()}-{rows.max()}"


def hw_text(shape: tuple[int, ...]) -> str:
    """The image size of a shape ending in H, W, as `HxW`."""
    return "x".join(str(d) for d in shape[-2:])


@contextmanager
def open_image(source: Path | BinaryIO, what: str | None = None) -> Iterator[Image.Image]:
    """An image file (or in-memory image bytes) opened with PIL; one PIL cannot read (or decode
    inside the block) becomes a `SampleError` naming it (`what`, default "image file <path>")."""
    what = what or f"image file {source}"
    try:
        with Image.open(source) as image:
            yield image
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise SampleError(
            f"{what} cannot be read: {type(err).__name__}",
            "remove or replace the corrupt file",
        ) from err


def decode_image(source: Path | BinaryIO, size: Size, what: str | None = None) -> np.ndarray:
    """One image (file or bytes) as float32 3 x H x W in [0, 1], resized if `size` is set."""
    with open_image(source, what) as image:
        rgb = np.asarray(image.convert("RGB"))
    chw = rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return _resize(chw, size)[0]


def _resize(images: np.ndarray, size: Size) -> np.ndarray:
    """Bilinear, antialiased resize of float N x 3 x H x W images to `size` (height, width)."""
    if size is None or tuple(images.shape[2:]) == tuple(size):
        return np.ascontiguousarray(images, dtype=np.float32)
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(images)),
        size=tuple(size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return resized.clamp_(0.0, 1.0).numpy()
