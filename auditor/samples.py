"""Sample sets: `.npz` files and image folders, resized to one size and scaled to [0, 1].

Formats (documented in README.md):

* `.npz` with `images` (uint8 N x H x W x 3, or float N x 3 x H x W in [0, 1]; one channel is
  repeated to three), optional `labels` (int, -1 = unknown), `ids`, `groups`, `class_names`.
* an image folder: `class_name/*.png|jpg|jpeg` (labelled, class index in sorted folder order)
  or images directly in the folder (unlabelled).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from auditor.config import Preprocess, SampleSource
from auditor.errors import SampleError
from auditor.mlflow_io import download_samples

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGES_EXPECTED = "N x H x W x 3 uint8 or N x 3 x H x W float in [0, 1]"
Complain = Callable[..., SampleError]
FORMATS_FIX = "see the sample formats in README.md"
RANGE_TOLERANCE = 1e-3


@dataclass
class SampleSet:
    """Images (float32 N x 3 x H x W in [0, 1], not normalised) with per-sample metadata."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    groups: list[str] | None
    set_names: list[str]
    class_names: list[str] | None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_labelled(self) -> int:
        """Samples whose label is known (label >= 0)."""
        return int((self.labels >= 0).sum())

    def subset(self, index: np.ndarray | list[int] | slice) -> SampleSet:
        """The samples selected by integer indices, a boolean mask or a slice."""
        rows = np.arange(len(self))[index]
        return SampleSet(
            images=self.images[rows],
            labels=self.labels[rows],
            ids=[self.ids[i] for i in rows],
            groups=None if self.groups is None else [self.groups[i] for i in rows],
            set_names=[self.set_names[i] for i in rows],
            class_names=self.class_names,
        )


def load_sample_set(path: Path, *, name: str, preprocess: Preprocess) -> SampleSet:
    """Load one `.npz` file or image folder as the sample set `name`."""
    if path.is_dir():
        return _load_folder(path, name, preprocess)
    if path.suffix.lower() == ".npz":
        return _load_npz(path, name, preprocess)
    if not path.exists():
        raise SampleError(f"sample file {path} does not exist", "check samples[].uri in the config")
    raise SampleError(
        f"sample file {path}: unsupported format, expected an .npz file or an image folder",
        FORMATS_FIX,
    )


def load_samples(
    sources: list[SampleSource], *, tracking_uri: str, preprocess: Preprocess
) -> SampleSet:
    """Download (if remote) and load every source, concatenated in config order; downloads
    are removed once loaded."""
    with tempfile.TemporaryDirectory(prefix="auditor-samples-") as tmp:
        sets = [
            load_sample_set(
                download_samples(s.uri, tracking_uri=tracking_uri, into=Path(tmp) / str(i)),
                name=s.name,
                preprocess=preprocess,
            )
            for i, s in enumerate(sources)
        ]
    return _concatenate(sets)


def normalize(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """`(x - mean) / std` per channel of an N x 3 x H x W batch."""
    mean = torch.tensor(preprocess.mean, dtype=images.dtype, device=images.device)
    std = torch.tensor(preprocess.std, dtype=images.dtype, device=images.device)
    return (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def _concatenate(sets: list[SampleSet]) -> SampleSet:
    first = sets[0]
    for other in sets[1:]:
        if other.images.shape[2:] != first.images.shape[2:]:
            raise SampleError(
                f"sample set {other.set_names[0]} has images of {_hw(other)} but "
                f"{first.set_names[0]} has {_hw(first)}",
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
        images=np.concatenate([s.images for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        ids=ids,
        groups=[g for s in sets for g in (s.groups or [""] * len(s))] if has_groups else None,
        set_names=[n for s in sets for n in s.set_names],
        class_names=named[0].class_names if named else None,
    )


def _load_npz(path: Path, name: str, preprocess: Preprocess) -> SampleSet:
    def bad(problem: str, expected: str = IMAGES_EXPECTED) -> SampleError:
        return SampleError(f"sample file {path}: {problem}, expected {expected}", FORMATS_FIX)

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise SampleError(f"sample file {path} does not exist", "check samples[].uri in the config")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise bad(f"not a readable .npz archive ({type(err).__name__})", "a file from np.savez")
    if "images" not in arrays:
        raise bad(f"no 'images' array (has {sorted(arrays)})")
    images = _npz_images(arrays["images"], bad)
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
        images=_resize(images, preprocess.size),
        labels=labels.astype(np.int64),
        ids=ids if ids is not None else [f"{name}/{i}" for i in range(n)],
        groups=_npz_strings(arrays, "groups", n, bad),
        set_names=[name] * n,
        class_names=class_names,
    )


def _npz_images(images: np.ndarray, bad: Complain) -> np.ndarray:
    """Validate the `images` array and return it as float32 N x 3 x H x W in [0, 1]."""
    shape = f"images has shape {images.shape} and dtype {images.dtype}"
    if images.ndim != 4:
        raise bad(shape)
    if images.dtype == np.uint8 and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    elif images.dtype.kind == "f" and images.shape[1] in (1, 3):
        images = images.astype(np.float32)
        if not np.isfinite(images).all():
            raise bad("images contain NaN or infinite values")
        if images.size and (images.min() < -RANGE_TOLERANCE or images.max() > 1 + RANGE_TOLERANCE):
            raise bad(f"images have values in [{images.min():.3g}, {images.max():.3g}]")
        images = images.clip(0.0, 1.0)
    else:
        raise bad(shape)
    if len(images) == 0:
        raise bad("images is empty")
    return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


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
    images = [_read_image(f, preprocess.size) for f, _ in files]
    sizes = {im.shape[1:] for im in images}
    if len(sizes) > 1:
        raise SampleError(
            f"sample folder {path} holds images of different sizes {sorted(sizes)}",
            "set preprocess.size to resize them to one size",
        )
    return SampleSet(
        images=np.stack(images),
        labels=np.array([c for _, c in files], dtype=np.int64),
        ids=[f"{name}/{f.relative_to(path).as_posix()}" for f, _ in files],
        groups=None,
        set_names=[name] * len(files),
        class_names=class_names,
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as float32 3 x H x W in [0, 1], resized if `size` is set."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise SampleError(
            f"image file {path} cannot be read: {type(err).__name__}",
            "remove or replace the corrupt file",
        ) from err
    chw = rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return _resize(chw, size)[0]


def _resize(images: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
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


def _first_duplicate(values: list[str]) -> str:
    return next(v for v, count in Counter(values).items() if count > 1)


def _hw(samples: SampleSet) -> str:
    return "x".join(str(d) for d in samples.images.shape[2:])
