"""An audit's files on disk, as the pages need them: the JSON report, the channel gallery,
the embeddings with their FAISS index and 2-D maps.

Each file is found through the audit's artefact rows in the store (which also say when
retention pruned it), else at its documented place under the audit's folder
`<artifacts_dir>/audit-<id>/` (`artifacts_dir` from the config the audit ran with).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from auditor.artefacts.embeddings import IDS_FILE, INDEX_FILE, load_space
from auditor.artefacts.gallery_files import MANIFEST, read_manifest
from auditor.artefacts.maps import MANIFEST_FILE as MAPS_FILE
from auditor.artefacts.maps import load_maps
from auditor.checks.embedding_space import EmbeddingSpace
from auditor.config import AuditConfig
from auditor.results import GalleryResult, Map2D
from auditor.store import ArtefactRow, AuditRow
from auditor.store.retention import local_path

GALLERY_FOLDER = "gallery"
CLUSTERS_KEY = "clusters"
"""Optional per-sample cluster numbers in `ids.json` (aligned with `ids`)."""


def config_dict(audit: AuditRow) -> dict[str, Any]:
    """The config the audit ran with, as stored (a plain dict; {} if unreadable)."""
    try:
        loaded = yaml.safe_load(audit.config_yaml)
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def audit_folder(audit: AuditRow) -> Path:
    """`<artifacts_dir>/audit-<id>` of the audit's config (the default root if unset)."""
    root = (
        config_dict(audit).get("artifacts_dir") or AuditConfig.model_fields["artifacts_dir"].default
    )
    return Path(root) / f"audit-{audit.id}"


def existing_path(uri: str) -> Path | None:
    """The local file an artefact URI names, if it exists."""
    path = local_path(uri)
    return path if path is not None and path.exists() else None


def _registered(audit: AuditRow, kind: str) -> Path | None:
    """The first unpruned artefact of `kind` whose file exists."""
    for artefact in audit.artefacts:
        if artefact.kind == kind and artefact.pruned_at is None:
            path = existing_path(artefact.uri)
            if path is not None:
                return path
    return None


def pruned(audit: AuditRow) -> list[ArtefactRow]:
    """The audit's artefacts that retention deleted."""
    return [a for a in audit.artefacts if a.pruned_at is not None]


def read_report(audit: AuditRow) -> dict[str, Any] | None:
    """The audit's JSON report, if its file is still there."""
    path = _registered(audit, "report")
    if path is None and audit.report_path:
        path = existing_path(audit.report_path)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find_gallery(audit: AuditRow) -> GalleryResult | None:
    """The audit's channel galleries (manifest and PNG strips), if written and not pruned."""
    path = _registered(audit, "gallery_manifest") or audit_folder(audit) / GALLERY_FOLDER / MANIFEST
    return read_manifest(path) if path.is_file() else None


@dataclass(frozen=True)
class EmbeddingFiles:
    """An audit's embedding space, its 2-D maps and, where stored, each sample's cluster."""

    folder: Path
    space: EmbeddingSpace
    maps: list[Map2D]
    clusters: np.ndarray | None

    @property
    def index_path(self) -> Path | None:
        path = self.folder / INDEX_FILE
        return path if path.is_file() else None


def embedding_folder(audit: AuditRow) -> Path:
    """Where the audit's embeddings lie: beside its registered FAISS index, else its folder."""
    index = _registered(audit, "embedding_index")
    return index.parent if index is not None else audit_folder(audit)


def find_embeddings(audit: AuditRow) -> EmbeddingFiles | None:
    """The audit's embeddings, maps and cluster numbers, if written and not pruned."""
    folder = embedding_folder(audit)
    if not (folder / IDS_FILE).is_file():
        return None
    clusters = json.loads((folder / IDS_FILE).read_text()).get(CLUSTERS_KEY)
    return EmbeddingFiles(
        folder=folder,
        space=load_space(folder),
        maps=load_maps(folder) if (folder / MAPS_FILE).is_file() else [],
        clusters=None if clusters is None else np.asarray(clusters, dtype=np.int64),
    )
