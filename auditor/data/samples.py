"""Sample sets: `.npz` files, image folders and Parquet tables, resized to one size and scaled to [0, 1].

A `SampleSet` holds the per-sample metadata in memory and its images as an `ImageSource`
(`auditor.data.images`): read from disk batch by batch, so an audit's memory does not grow with the
number of images. The `images` of an `.npz` are extracted once into the set's scratch folder
(removed by `close()`); the other arrays are small and read at once.

Formats (documented in README.md):

* `.npz` with `images` (uint8 N x H x W x 3, or float N x 3 x H x W in [0, 1]; one channel is
  repeated to three), optional `labels` (int, -1 = unknown), `ids`, `groups`, `class_names`.
* an image folder: `class_name/*.png|jpg|jpeg` (labelled, class index in sorted folder order)
  or images directly in the folder (unlabelled).
* a `.parquet` table: one row per sample, columns named by the config (`auditor.data.parquet`).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Self

import numpy as np
import torch

from auditor.config import Preprocess, SampleColumns, SampleSource
from auditor.data.images import (
    FORMATS_FIX,
    IMAGES_EXPECTED,
    ArrayImages,
    ConcatImages,
    FileImages,
    ImageSource,
    NpyImages,
    hw_text,
)
from auditor.data.parquet import read_parquet_samples
from auditor.errors import SampleError
from auditor.tracking.resolve import download_samples

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: the file, inside a set's own scratch folder, that an `.npz` set's images are extracted to
EXTRACTED_IMAGES = "images.npy"
Complain = Callable[..., SampleError]


@dataclass
class SampleSet:
    """Images (float32 N x 3 x H x W in [0, 1], not normalised; an in-memory array is wrapped
    as an `ArrayImages`) with per-sample metadata. Usable as a context manager that removes the
    set's scratch folder (extracted image arrays) on exit."""

    images: ImageSource
    labels: np.ndarray
    ids: list[str]
    groups: list[str] | None
    set_names: list[str]
    class_names: list[str] | None
    scratch: Path | None = field(default=None, repr=False)
    _cleanup: weakref.finalize | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.images, np.ndarray):
            self.images = ArrayImages(self.images)

    def __len__(self) -> int:
        return len(self.ids)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the scratch folder (the images cannot be read afterwards)."""
        if self._cleanup is not None:
            self._cleanup()

    def own_scratch(self, scratch: Path) -> None:
        """Make `scratch` this set's folder: removed by `close()`, or when the set is
        garbage-collected (whichever comes first)."""
        self.scratch = scratch
        self._cleanup = weakref.finalize(self, shutil.rmtree, scratch, True)

    @property
    def n_labelled(self) -> int:
        """Samples whose label is known (label >= 0)."""
        return int((self.labels >= 0).sum())

    def subset(self, index: np.ndarray | list[int] | slice) -> SampleSet:
        """The samples selected by integer indices, a boolean mask or a slice; their images are
        read from this set's files (readable until this set is closed)."""
        rows = np.arange(len(self))[index]
        return SampleSet(
            images=self.images.subset(rows),
            labels=self.labels[rows],
            ids=[self.ids[i] for i in rows],
            groups=None if self.groups is None else [self.groups[i] for i in rows],
            set_names=[self.set_names[i] for i in rows],
            class_names=self.class_names,
        )


def load_sample_set(
    path: Path,
    *,
    name: str,
    preprocess: Preprocess,
    scratch: Path | None = None,
    table: TableSettings | None = None,
    tracking_uri: str = "",
) -> SampleSet:
    """Load one `.npz` file, image folder or Parquet table as the sample set `name` (the images
    of an `.npz`, and remote images a table names, go into `scratch`, a new temporary folder
    when None). `table` names a table's columns (default: images in `image`, nothing else)."""
    if path.is_dir():
        return _load_folder(path, name, preprocess)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".parquet"):
        load = _load_npz if suffix == ".npz" else partial(
            _load_parquet, table=table or TableSettings(), tracking_uri=tracking_uri
        )
        if scratch is not None:  # the caller's folder, removed by the caller
            return load(path, name, preprocess, scratch)
        scratch = Path(tempfile.mkdtemp(prefix="auditor-samples-"))
        try:
            loaded = load(path, name, preprocess, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        loaded.own_scratch(scratch)
        return loaded
    if not path.exists():
        raise SampleError(f"sample file {path} does not exist", "check samples[].uri in the config")
    raise SampleError(
        f"sample file {path}: unsupported format, expected an .npz file, a .parquet table or "
        "an image folder",
        FORMATS_FIX,
    )


def load_samples(
    sources: list[SampleSource],
    *,
    tracking_uri: str,
    preprocess: Preprocess,
    scratch_dir: Path | None = None,
) -> SampleSet:
    """Download (if remote) and load every source, concatenated in config order. Downloads and
    extracted arrays live in a new folder under `scratch_dir` (the system's temporary folder
    when None) until the set is closed; on an error it is removed at once."""
    scratch = Path(tempfile.mkdtemp(prefix="auditor-samples-", dir=scratch_dir))
    try:
        sets = [
            load_sample_set(
                download_samples(s.uri, tracking_uri=tracking_uri, into=scratch / str(i)),
                name=s.name,
                preprocess=preprocess,
                scratch=scratch / f"{i}-arrays",
                table=TableSettings(s.columns, s.class_names),
                tracking_uri=tracking_uri,
            )
            for i, s in enumerate(sources)
        ]
        merged = _concatenate(sets)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    merged.own_scratch(scratch)
    return merged


#: ITU-R BT.601 luma weights of R, G, B: a 1-channel model's input
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def normalize(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """The model input of an N x 3 x H x W RGB batch in [0, 1]: converted to the model's
    channels (`preprocess.channels` 1: luminance `0.299 R + 0.587 G + 0.114 B`) and channel
    order (`bgr`: reversed), then `(x - mean) / std` per channel (one value: every channel)."""
    if preprocess.channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
        images = (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    elif preprocess.channel_order == "bgr":
        images = images.flip(1)
    channels = images.shape[1]
    mean = torch.tensor(preprocess.mean[:channels], dtype=images.dtype, device=images.device)
    std = torch.tensor(preprocess.std[:channels], dtype=images.dtype, device=images.device)
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _concatenate(sets: list[SampleSet]) -> SampleSet:
    first = sets[0]
    for other in sets[1:]:
        if other.images.shape[2:] != first.images.shape[2:]:
            raise SampleError(
                f"sample set {other.set_names[0]} has images of {hw_text(other.images.shape)} but "
                f"{first.set_names[0]} has {hw_text(first.images.shape)}",
                "set preprocess.size to resize all sample sets to one size",
            )
    named = [s for s in sets if s.class_names is not None]
    for other in named[1:]:
        if other.class_names != named[0].class_names:
            raise SampleError(
                f"sample sets {named[0].set_names[0]} and {other.set_names[0]} have different "
                f"class names ({named[0].class_names} vs {other.class_names})",
                "use the same classes in every sample set",
            )
    ids = [i for s in sets for i in s.ids]
    if len(set(ids)) != len(ids):
        raise SampleError(
            f"sample ids are not unique across the sample sets (duplicate: {_first_duplicate(ids)!r})",
            "make the ids unique across sample sets",
        )
    has_groups = any(s.groups is not None for s in sets)
    return SampleSet(
        images=sets[0].images if len(sets) == 1 else ConcatImages([s.images for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        ids=ids,
        groups=[g for s in sets for g in (s.groups or [""] * len(s))] if has_groups else None,
        set_names=[n for s in sets for n in s.set_names],
        class_names=named[0].class_names if named else None,
    )


@dataclass(frozen=True)
class TableSettings:
    """How to read a table sample set: its columns and the names of its class indices."""

    columns: SampleColumns = field(default_factory=SampleColumns)
    class_names: list[str] | None = None


def _load_parquet(
    path: Path, name: str, preprocess: Preprocess, scratch: Path, *, table: TableSettings, tracking_uri: str
) -> SampleSet:
    read = read_parquet_samples(
        path,
        columns=table.columns,
        class_names=table.class_names,
        size=preprocess.size,
        tracking_uri=tracking_uri,
        scratch=scratch,
    )
    n = len(read.labels)
    return SampleSet(
        images=read.images,
        labels=read.labels,
        ids=read.ids if read.ids is not None else [f"{name}/{i}" for i in range(n)],
        groups=read.groups,
        set_names=[name] * n,
        class_names=table.class_names,
    )


def _load_npz(path: Path, name: str, preprocess: Preprocess, scratch: Path) -> SampleSet:
    def bad(problem: str, expected: str) -> SampleError:
        return SampleError(f"sample file {path}: {problem}, expected {expected}", FORMATS_FIX)

    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(m).stem: m for m in archive.namelist() if m.endswith(".npy")}
            if "images" not in members:
                raise bad(f"no 'images' array (has {sorted(members)})", IMAGES_EXPECTED)
            scratch.mkdir(parents=True, exist_ok=True)
            extracted = scratch / EXTRACTED_IMAGES  # never the set's name: user data
            with archive.open(members["images"]) as src, open(extracted, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 22)
        with np.load(path, allow_pickle=False) as small:
            arrays = {key: small[key] for key in small.files if key != "images"}
    except FileNotFoundError:
        raise SampleError(f"sample file {path} does not exist", "check samples[].uri in the config")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise bad(f"not a readable .npz archive ({type(err).__name__})", "a file from np.savez")
    images = NpyImages(extracted, label=str(path), size=preprocess.size)
    n = len(images)
    labels = arrays.get("labels")
    if labels is None:
        labels = np.full(n, -1, dtype=np.int64)
    elif labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise bad(f"labels has shape {labels.shape} and dtype {labels.dtype}", "N integers")
    elif len(labels) != n:
        raise bad(f"labels has length {len(labels)} but images has {n}", "one label per image")
    elif labels.size and labels.min() < -1:
        raise bad(f"labels contain {labels.min()}", "class indices >= 0, or -1 for unknown")
    ids = _npz_strings(arrays, "ids", n, bad)
    if ids is not None and len(set(ids)) != len(ids):
        raise bad(f"ids are not unique (duplicate: {_first_duplicate(ids)!r})", "unique ids")
    class_names = _npz_strings(arrays, "class_names", None, bad)
    if class_names is not None and labels.size and labels.max() >= len(class_names):
        raise bad(
            f"label {labels.max()} has no entry in class_names ({len(class_names)} classes)",
            "labels < len(class_names)",
        )
    return SampleSet(
        images=images,
        labels=labels.astype(np.int64),
        ids=ids if ids is not None else [f"{name}/{i}" for i in range(n)],
        groups=_npz_strings(arrays, "groups", n, bad),
        set_names=[name] * n,
        class_names=class_names,
    )


def _npz_strings(
    arrays: dict[str, np.ndarray], key: str, n: int | None, bad: Complain
) -> list[str] | None:
    """An optional 1-D string array (of length `n` if given) as a list."""
    value = arrays.get(key)
    if value is None:
        return None
    if value.ndim != 1 or value.dtype.kind not in "US":
        raise bad(f"{key} has shape {value.shape} and dtype {value.dtype}", "a 1-D string array")
    if n is not None and len(value) != n:
        raise bad(f"{key} has length {len(value)} but images has {n}", f"one {key} entry per image")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value.tolist()]


def _load_folder(path: Path, name: str, preprocess: Preprocess) -> SampleSet:
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs and _image_files(path):
        raise SampleError(
            f"sample folder {path} mixes class folders and loose images",
            "put every image into a class folder, or use a folder of loose images only",
        )
    if class_dirs:
        class_names: list[str] | None = [d.name for d in class_dirs]
        files = [(f, c) for c, d in enumerate(class_dirs) for f in _image_files(d)]
    else:
        class_names = None
        files = [(f, -1) for f in _image_files(path)]
    if not files:
        raise SampleError(
            f"sample folder {path} holds no .png/.jpg/.jpeg images",
            "use class_name/*.png (labelled) or images directly in the folder (unlabelled)",
        )
    return SampleSet(
        images=FileImages([f for f, _ in files], origin=f"sample folder {path}", size=preprocess.size),
        labels=np.array([c for _, c in files], dtype=np.int64),
        ids=[f"{name}/{f.relative_to(path).as_posix()}" for f, _ in files],
        groups=None,
        set_names=[name] * len(files),
        class_names=class_names,
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _first_duplicate(values: list[str]) -> str:
    return next(v for v, count in Counter(values).items() if count > 1)

