"""An audit's artefact folder: a write that fails there (full disk, no permission) is an
`ArtefactError` naming the folder, not an internal error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auditor.errors import ArtefactError


@contextmanager
def writing_into(folder: Path) -> Iterator[None]:
    """Turn an `OSError` of the block (a stage that writes the audit's files into `folder`)
    into an `ArtefactError`; the life cycle then removes the partial folder."""
    try:
        yield
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        raise ArtefactError(
            f"cannot write the audit's files under {folder}: {reason}",
            "free space there or set artifacts_dir to a writable folder with room",
        ) from err
