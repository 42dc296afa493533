"""`auditor neighbours`: the nearest examples of one sample of a stored audit ([Chen2019]:
for a sample x and its feature map h(x), the closest examples, the `x_i` sorted by
`||h(x_i) - h(x)||`), read from the embeddings and FAISS index the audit wrote.

The audit's folder is the one its `embedding_index` artefact names in the store, else
`<artifacts_dir>/audit-<id>` (`artifacts_dir` from the config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from auditor.errors import AuditorError

INDEX_ARTEFACT = "embedding_index"


def audit_folder(audit_id: int, store_url: str, artifacts_dir: str) -> Path:
    """The folder holding the audit's embeddings and index (see the module docstring)."""
    from auditor.store import AuditStore
    from auditor.store.retention import local_path

    store = AuditStore(store_url, create=False)  # a lookup: it creates no database
    try:
        store.get_audit(audit_id)  # StoreError: no audit `audit_id` in the database
        registered = [a for a in store.artefacts(audit_id) if a.kind == INDEX_ARTEFACT]
    finally:
        store.close()
    for artefact in registered:
        if artefact.pruned_at is not None:
            raise AuditorError(
                f"the embedding index of audit {audit_id} was pruned by retention",
                "rerun the audit, or raise retention.artefact_days / keep_last",
            )
        path = local_path(artefact.uri)
        if path is not None:
            return path.parent
    return Path(artifacts_dir) / f"audit-{audit_id}"


def neighbours(
    audit: Annotated[int, typer.Option("--audit", help="audit id")],
    sample: Annotated[str, typer.Option("--sample", help="sample id")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="neighbours to list")] = 8,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="audit config (store_url, artifacts_dir)"),
    ] = None,
) -> None:
    """List the K samples of an audit nearest to SAMPLE in the audited layer's embedding."""
    from auditor.artefacts.embeddings import (
        IDS_FILE,
        INDEX_FILE,
        load_index,
        load_space,
        sample_row,
    )
    from auditor.checks.neighbours import search
    from auditor.config import AuditConfig, default_store_url, load_config

    if config is not None:
        cfg = load_config(config)
        store_url, artifacts_dir = cfg.store_url, cfg.artifacts_dir
    else:
        store_url = default_store_url()
        artifacts_dir = AuditConfig.model_fields["artifacts_dir"].default
    folder = audit_folder(audit, store_url, artifacts_dir)
    if not (folder / INDEX_FILE).is_file() or not (folder / IDS_FILE).is_file():
        raise AuditorError(
            f"audit {audit} has no embedding index in {folder}",
            "audit with subclasses.enabled: true, or pass --config with the audit's artifacts_dir",
        )
    space = load_space(folder)
    row = sample_row(space, sample)
    found = search(load_index(folder / INDEX_FILE), space.prepared()[[row]], k + 1)
    hits = [
        (int(i), float(d))
        for i, d in zip(found.indices[0], found.distances[0])
        if i >= 0 and i != row
    ][:k]
    metric = "Euclidean of unit vectors (cosine)" if space.metric == "cosine" else "Euclidean"
    table = Table(
        title=f"nearest to {sample} ({space.sets[row]}, predicted "
        f"{space.class_name(int(space.predicted[row]))}) at {space.layer}; distance: {metric}"
    )
    for column in ("rank", "sample id", "set", "label", "predicted", "distance"):
        right = column in ("rank", "distance")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for rank, (i, distance) in enumerate(hits, start=1):
        table.add_row(
            str(rank),
            space.ids[i],
            space.sets[i],
            space.class_name(int(space.labels[i])),
            space.class_name(int(space.predicted[i])),
            f"{distance:.4f}",
        )
    Console().print(table)
