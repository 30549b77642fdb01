"""Decisions, filters and sorting over a project's columnar Snapshot: pure numpy, no SQL, no Qt.

A decision is derived, never stored: a manual override wins; otherwise the image's score (the MagFace norm of its
deciding face) is compared with the threshold. Images without a face, with an error, or not scored yet are
rejected unless overridden. Because this is a vectorised comparison over arrays, the GUI can re-decide 100k images
on every slider move (well under 16 ms), and the CLI, the export and ``Project.query`` use exactly the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import FaceQCError
from .labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS

REASON_OVERRIDE_ACCEPT = 1
REASON_OVERRIDE_REJECT = 2
REASON_SCORE_ABOVE = 3
REASON_SCORE_BELOW = 4
REASON_NO_FACE = 5
REASON_ERROR = 6
REASON_UNSCORED = 7
REASON_NO_SCORE = 8  # faces found but no MagFace norm (MagFace was not run on them)

REASON_TEXT: dict[int, str] = {
    REASON_OVERRIDE_ACCEPT: "override: accepted",
    REASON_OVERRIDE_REJECT: "override: rejected",
    REASON_SCORE_ABOVE: "score ≥ threshold",
    REASON_SCORE_BELOW: "score < threshold",
    REASON_NO_FACE: "no face",
    REASON_ERROR: "error",
    REASON_UNSCORED: "not scored yet",
    REASON_NO_SCORE: "no quality score",
}
# Short stable keys (manifest files, scripts).
REASON_KEY: dict[int, str] = {
    REASON_OVERRIDE_ACCEPT: "override_accept",
    REASON_OVERRIDE_REJECT: "override_reject",
    REASON_SCORE_ABOVE: "score_above",
    REASON_SCORE_BELOW: "score_below",
    REASON_NO_FACE: "no_face",
    REASON_ERROR: "error",
    REASON_UNSCORED: "unscored",
    REASON_NO_SCORE: "no_score",
}

STATUSES = frozenset({"accepted", "rejected", "overridden", "no_face", "error", "missing", "unscored"})
SCORE_MODES = ("primary", "lowest")
SORT_KEYS = ("score", "path", "id", "n_faces", "decision")  # plus "celeba:<Attribute>" and "<head>:<label>"

OVERRIDE_VALUES = {"accept": 1, "reject": -1, None: 0}
OVERRIDE_NAMES = {1: "accept", -1: "reject", 0: None}


@dataclass
class Snapshot:
    """All images of a project as arrays aligned by row; row order = image id ascending."""

    ids: np.ndarray  # int64
    paths: list[str]
    score: np.ndarray  # float32 norm of the deciding face under score_mode; NaN if none
    n_faces: np.ndarray  # int16; 0 = no face, -1 = not scored yet
    error: np.ndarray  # bool
    missing: np.ndarray  # bool
    override: np.ndarray  # int8: 1 accept, -1 reject, 0 none
    celeba: np.ndarray  # float32 (N, 40) primary face, NaN when none
    race7: np.ndarray  # float32 (N, 7)
    race4: np.ndarray  # float32 (N, 4)
    gender: np.ndarray  # float32 (N, 2)
    age: np.ndarray  # float32 (N, 9)
    # Additions beyond the contract: both score variants (switching mode needs no reload), the project's settings
    # when the snapshot was taken, and image sizes (-1 unknown).
    score_primary: np.ndarray | None = None
    score_lowest: np.ndarray | None = None
    score_mode: str = "primary"
    threshold: float = float("nan")
    width: np.ndarray | None = None
    height: np.ndarray | None = None
    _lower_paths: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def decide(self, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(accepted bool, reason int8 REASON_* codes) for every row."""
        t = self.threshold if threshold is None else float(threshold)
        return decide_arrays(self.score, self.n_faces, self.error, self.override, t)

    def rows(self, image_ids) -> np.ndarray:
        """Row index of each image id (ids must be in the snapshot)."""
        ids = np.asarray(image_ids, np.int64).ravel()
        r = np.searchsorted(self.ids, ids)
        r = np.clip(r, 0, max(len(self.ids) - 1, 0))
        if len(ids) and (len(self.ids) == 0 or not np.array_equal(self.ids[r], ids)):
            raise KeyError("image id not in this snapshot")
        return r

    def apply_override(self, image_ids, value: str | None) -> None:
        """Mirror ``Project.set_override`` in this snapshot without reloading it."""
        self.override[self.rows(image_ids)] = OVERRIDE_VALUES[value]

    def with_score_mode(self, mode: str) -> None:
        """Switch ``score`` to the other mode in place (both variants are loaded)."""
        if mode not in SCORE_MODES:
            raise FaceQCError(f"score mode must be one of {', '.join(SCORE_MODES)}, not {mode!r}.")
        src = self.score_primary if mode == "primary" else self.score_lowest
        if src is not None:
            self.score = src
            self.score_mode = mode

    def lower_paths(self) -> list[str]:
        if self._lower_paths is None:
            self._lower_paths = [p.casefold() for p in self.paths]
        return self._lower_paths


def decide_arrays(score, n_faces, error, override, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score)
    n_faces = np.asarray(n_faces)
    error = np.asarray(error, bool)
    override = np.asarray(override)
    reason = np.full(len(score), REASON_SCORE_BELOW, np.int8)
    has_face = (n_faces > 0) & ~error
    with np.errstate(invalid="ignore"):
        # The float32 score against the exact threshold (decide_one does the same): NaN compares False.
        above = has_face & (score.astype(np.float64) >= float(threshold))
    reason[above] = REASON_SCORE_ABOVE
    reason[has_face & np.isnan(score)] = REASON_NO_SCORE
    reason[n_faces < 0] = REASON_UNSCORED
    reason[n_faces == 0] = REASON_NO_FACE
    reason[error] = REASON_ERROR
    reason[override > 0] = REASON_OVERRIDE_ACCEPT
    reason[override < 0] = REASON_OVERRIDE_REJECT
    accepted = (override > 0) | ((override == 0) & above)
    return accepted, reason


def decide_one(score: float | None, n_faces: int, error: bool, override: int, threshold: float) -> tuple[bool, int]:
    """decide_arrays for one image (no numpy: the export calls it per image)."""
    if override > 0:
        return True, REASON_OVERRIDE_ACCEPT
    if override < 0:
        return False, REASON_OVERRIDE_REJECT
    if error:
        return False, REASON_ERROR
    if n_faces == 0:
        return False, REASON_NO_FACE
    if n_faces < 0:
        return False, REASON_UNSCORED
    if score is None or score != score:
        return False, REASON_NO_SCORE
    above = float(np.float32(score)) >= float(threshold)  # as stored in a Snapshot: float32
    return (True, REASON_SCORE_ABOVE) if above else (False, REASON_SCORE_BELOW)


@dataclass
class Filter:
    """All fields optional, combined with AND. ``status`` matches an image that has ANY of the listed statuses."""

    status: set[str] | None = None
    score_min: float | None = None
    score_max: float | None = None
    celeba: dict[str, tuple[float, float]] | None = None  # attribute -> (min p, max p) on the primary face
    # head ("race7","race4","gender","age") -> required top label, or "uncertain" (top probability below
    # fairface_min_conf) or "unknown" (no FairFace numbers): the buckets the Demographics panel counts.
    fairface: dict[str, str] | None = None
    fairface_min_conf: float = 0.0
    path_contains: str | None = None  # case-insensitive substring


def status_masks(snap: Snapshot, threshold: float | None = None) -> dict[str, np.ndarray]:
    accepted, _ = snap.decide(threshold)
    scored = snap.n_faces >= 0
    return {
        "accepted": accepted,
        "rejected": ~accepted,
        "overridden": snap.override != 0,
        "no_face": scored & (snap.n_faces == 0) & ~snap.error,
        "error": snap.error.copy(),
        "missing": snap.missing.copy(),
        "unscored": ~scored & ~snap.error,
    }


def _head_probs(snap: Snapshot, head: str) -> np.ndarray:
    if head not in FAIRFACE_HEADS:
        raise FaceQCError(f"unknown FairFace head {head!r}: choose from {', '.join(FAIRFACE_HEADS)}.")
    return getattr(snap, head)


def top_label_mask(snap: Snapshot, head: str, label: str, min_conf: float = 0.0) -> np.ndarray:
    """Images whose top ``head`` label is ``label``, counted exactly as the Demographics panel counts (balance_stats):
    a top probability below ``min_conf`` makes the image "uncertain", missing numbers make it "unknown"."""
    from .balance_stats import head_labels, top_codes  # balance_stats is numpy-only; imported late to stay light

    probs = _head_probs(snap, head)
    labels = head_labels(head)
    if label not in labels:
        raise FaceQCError(f"unknown {head} label {label!r}: choose from {', '.join(labels)}.")
    if not len(probs):
        return np.zeros(0, bool)
    return top_codes(probs, float(min_conf)) == labels.index(label)


def filter_mask(snap: Snapshot, flt: Filter | None, threshold: float | None = None) -> np.ndarray:
    """bool mask of the rows matching ``flt`` under ``threshold`` (default: the snapshot's)."""
    n = len(snap.ids)
    mask = np.ones(n, bool)
    if flt is None:
        return mask
    if flt.status:
        unknown = set(flt.status) - STATUSES
        if unknown:
            raise FaceQCError(f"unknown status {', '.join(sorted(unknown))}: choose from {', '.join(sorted(STATUSES))}.")
        masks = status_masks(snap, threshold)
        any_of = np.zeros(n, bool)
        for s in flt.status:
            any_of |= masks[s]
        mask &= any_of
    with np.errstate(invalid="ignore"):
        if flt.score_min is not None:
            mask &= snap.score >= float(flt.score_min)
        if flt.score_max is not None:
            mask &= snap.score <= float(flt.score_max)
        for attr, (lo, hi) in (flt.celeba or {}).items():
            if attr not in CELEBA_ATTRIBUTES:
                raise FaceQCError(f"unknown CelebA attribute {attr!r}.")
            p = snap.celeba[:, CELEBA_ATTRIBUTES.index(attr)]
            mask &= (p >= float(lo)) & (p <= float(hi))
    if flt.fairface:
        # As the Demographics panel counts: scored images whose file loaded and is present (an unscored image is not
        # "unknown", it is not counted yet), so a click on a bar shows exactly the images behind its number.
        mask &= (snap.n_faces >= 0) & ~snap.error & ~snap.missing
    for head, label in (flt.fairface or {}).items():
        mask &= top_label_mask(snap, head, label, flt.fairface_min_conf)
    if flt.path_contains:
        needle = flt.path_contains.casefold()
        mask &= np.fromiter((needle in p for p in snap.lower_paths()), bool, count=n)
    return mask


def sort_rows(snap: Snapshot, rows: np.ndarray, sort: str = "score", descending: bool = True,
              threshold: float | None = None) -> np.ndarray:
    """``rows`` ordered by ``sort``; ties (and NaN values, always last) in image id order."""
    rows = np.asarray(rows, np.int64)
    if sort == "id":
        key = snap.ids[rows].astype(np.float64)
    elif sort == "path":
        order = sorted(range(len(rows)), key=lambda i: snap.paths[rows[i]], reverse=descending)
        return rows[np.asarray(order, np.int64)] if order else rows
    elif sort in ("score", "quality"):
        key = snap.score[rows].astype(np.float64)
    elif sort == "n_faces":
        key = snap.n_faces[rows].astype(np.float64)
    elif sort == "decision":
        key = snap.decide(threshold)[0][rows].astype(np.float64)
    elif sort.startswith("celeba:"):
        attr = sort.split(":", 1)[1]
        if attr not in CELEBA_ATTRIBUTES:
            raise FaceQCError(f"unknown CelebA attribute {attr!r} in sort key.")
        key = snap.celeba[rows, CELEBA_ATTRIBUTES.index(attr)].astype(np.float64)
    elif ":" in sort and sort.split(":", 1)[0] in FAIRFACE_HEADS:
        head, label = sort.split(":", 1)
        labels = FAIRFACE_HEADS[head]
        if label not in labels:
            raise FaceQCError(f"unknown {head} label {label!r} in sort key.")
        key = _head_probs(snap, head)[rows, labels.index(label)].astype(np.float64)
    else:
        raise FaceQCError(f"unknown sort key {sort!r}: use one of {', '.join(SORT_KEYS)}, celeba:<attribute> "
                          "or <head>:<label>.")
    nan = np.isnan(key)
    k = np.where(nan, 0.0, -key if descending else key)
    # lexsort: last key is primary. NaN last, then the value, then id.
    order = np.lexsort((snap.ids[rows], k, nan))
    return rows[order]
