"""Mirroring freshly stored results in a Snapshot without reloading it (the grid updates as results stream in).

Uses the store's own codec (largest face = primary, lowest-scoring face, probability layouts), so a patched row is
exactly what ``Project.snapshot()`` would return after ``store_results`` (tests/test_gui_session.py checks this).
"""

from __future__ import annotations

import numpy as np

from ..engine import store_codec as codec
from ..engine.decisions import Snapshot
from ..engine.labels import FAIRFACE_HEADS
from ..engine.records import ImageResult


def path_index(snap: Snapshot) -> dict[str, int]:
    return {p: i for i, p in enumerate(snap.paths)}


def patch_snapshot(snap: Snapshot, results: list[ImageResult], index: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """Writes ``results`` into ``snap``'s arrays in place. Returns (rows changed, paths not in the snapshot)."""
    rows: list[int] = []
    unknown: list[str] = []
    nan_c = np.full(codec.N_CELEBA, np.nan, np.float32)
    for r in results:
        i = index.get(r.path)
        if i is None:
            unknown.append(r.path)
            continue
        faces = [] if r.error is not None else list(r.faces)
        primary, lowest, p = codec.image_scores(faces)
        prim = np.float32(np.nan if primary is None else primary)
        low = np.float32(np.nan if lowest is None else lowest)
        if snap.score_primary is not None:
            snap.score_primary[i] = prim
        if snap.score_lowest is not None:
            snap.score_lowest[i] = low
        if snap.score is not snap.score_primary and snap.score is not snap.score_lowest:
            snap.score[i] = prim if snap.score_mode == "primary" else low
        snap.n_faces[i] = len(faces)
        snap.error[i] = r.error is not None
        snap.missing[i] = False
        face = faces[p] if p is not None else None
        blob = codec.celeba_blob(face.celeba) if face is not None else None
        snap.celeba[i] = np.frombuffer(blob, np.float32) if blob else nan_c
        ff = codec.fairface_blobs(face.fairface if face is not None else None)
        for head, labels in FAIRFACE_HEADS.items():
            b = ff[head]
            getattr(snap, head)[i] = np.frombuffer(b, np.float32) if b else np.nan
        if snap.width is not None:
            snap.width[i] = -1 if r.width is None else r.width
        if snap.height is not None:
            snap.height[i] = -1 if r.height is None else r.height
        rows.append(i)
    return np.asarray(rows, np.int64), unknown
