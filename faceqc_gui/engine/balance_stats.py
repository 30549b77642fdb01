"""Demographic statistics of a curated set: counts and shares per FairFace group, accepted set next to all images.

Pure functions over numpy arrays (a store ``Snapshot`` provides them), so the GUI can recompute them on every threshold
change. Two ways of counting (docs/BALANCE.md):

- ``mode="top"``: each image counts 1 for its top FairFace label in each head (a joint group is the tuple of labels).
- ``mode="expected"``: each image spreads 1 over the labels by its probabilities (expected count = sum of
  probabilities); a joint group gets the product of the heads' probabilities (the heads are separate softmaxes).

In both modes an image whose top probability in a head is below ``min_conf`` counts 1 for ``UNCERTAIN`` in that head,
and an image without FairFace numbers for a head (no face, model not run) counts 1 for ``UNKNOWN``.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import FaceQCError
from .labels import FAIRFACE_HEADS

UNCERTAIN = "uncertain"
UNKNOWN = "unknown"
MODES = ("top", "expected")


def head_labels(head: str) -> tuple[str, ...]:
    """The labels of one FairFace head followed by the two extra buckets every head has."""
    if head not in FAIRFACE_HEADS:
        raise FaceQCError(f"unknown FairFace head {head!r}; choose from {', '.join(FAIRFACE_HEADS)}.")
    return FAIRFACE_HEADS[head] + (UNCERTAIN, UNKNOWN)


def parse_by(text: str | Sequence[str]) -> tuple[str, ...]:
    """'race7,gender' -> ("race7", "gender"), checked: known heads, no repeats, race7 and race4 not both."""
    heads = tuple(h.strip() for h in (text.split(",") if isinstance(text, str) else text) if h.strip())
    if not heads:
        raise FaceQCError("no FairFace heads given to group by; use e.g. race7,gender.")
    for h in heads:
        head_labels(h)
    if len(set(heads)) != len(heads):
        raise FaceQCError(f"a FairFace head is repeated in {','.join(heads)}.")
    if "race7" in heads and "race4" in heads:
        raise FaceQCError("group by race7 or race4, not both (they describe the same thing).")
    return heads


def _checked_probs(probs: np.ndarray, head: str, n: int) -> np.ndarray:
    k = len(FAIRFACE_HEADS[head])
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, k):
        raise FaceQCError(f"FairFace {head} probabilities have shape {p.shape}, expected ({n}, {k}).")
    return p


def head_weights(probs: np.ndarray, mode: str = "top", min_conf: float = 0.0) -> np.ndarray:
    """(N, K) probabilities -> (N, K + 2) weights over labels + UNCERTAIN + UNKNOWN; every row sums to 1."""
    if mode not in MODES:
        raise FaceQCError(f"unknown counting mode {mode!r}; use 'top' or 'expected'.")
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    w = np.zeros((n, k + 2))
    known = np.isfinite(p).all(axis=1) & (p.sum(axis=1) > 0) if k else np.zeros(n, bool)
    pk = np.where(known[:, None], p, 0.0)
    top = pk.argmax(axis=1) if k else np.zeros(n, int)
    confident = known & (pk.max(axis=1, initial=0.0) >= min_conf)
    w[~known, k + 1] = 1.0
    w[known & ~confident, k] = 1.0
    rows = np.flatnonzero(confident)
    if mode == "top":
        w[rows, top[rows]] = 1.0
    else:
        # Renormalised so that every image weighs exactly 1 even if stored probabilities were rounded.
        w[rows, :k] = pk[rows] / pk[rows].sum(axis=1, keepdims=True)
    return w


def top_codes(probs: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """Index into ``head_labels(head)`` of each image's top label (K = UNCERTAIN, K + 1 = UNKNOWN)."""
    return head_weights(probs, "top", min_conf).argmax(axis=1)


def joint_codes(probs_by_head: Mapping[str, np.ndarray], by: Sequence[str], min_conf: float = 0.0
                ) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Each image's joint top-label group under ``by``: (codes (N,), groups) with groups[codes[i]] the label tuple.

    ``groups`` is the full Cartesian product of ``head_labels`` in head order (row-major), so codes are stable.
    """
    by = parse_by(by)
    n = _n_rows(probs_by_head, by)
    code = np.zeros(n, dtype=np.int64)
    for h in by:
        code = code * len(head_labels(h)) + top_codes(_checked_probs(probs_by_head[h], h, n), min_conf)
    groups = list(itertools.product(*(head_labels(h) for h in by)))
    return code, groups


def group_mask(probs_by_head: Mapping[str, np.ndarray], by: Sequence[str], group: Sequence[str],
               min_conf: float = 0.0) -> np.ndarray:
    """Images whose top labels (under ``min_conf``) are ``group`` (a label per head of ``by``): the grid filter."""
    by = parse_by(by)
    group = tuple(group)
    if len(group) != len(by):
        raise FaceQCError(f"group {group} does not name one label for each of {','.join(by)}.")
    n = _n_rows(probs_by_head, by)
    mask = np.ones(n, dtype=bool)
    for h, label in zip(by, group):
        labels = head_labels(h)
        if label not in labels:
            raise FaceQCError(f"{label!r} is not a {h} label.")
        mask &= top_codes(_checked_probs(probs_by_head[h], h, n), min_conf) == labels.index(label)
    return mask


def _n_rows(probs_by_head: Mapping[str, np.ndarray], by: Sequence[str]) -> int:
    missing = [h for h in by if h not in probs_by_head or probs_by_head[h] is None]
    if missing:
        raise FaceQCError(f"no FairFace {', '.join(missing)} numbers available to group by.")
    return int(np.asarray(probs_by_head[by[0]]).shape[0])


@dataclass
class GroupTable:
    """Counts per group for all images and for the accepted ones (floats: expected counts can be fractional)."""

    heads: tuple[str, ...]
    groups: list[tuple[str, ...]]
    all: np.ndarray
    accepted: np.ndarray

    @property
    def n_all(self) -> float:
        return float(self.all.sum())

    @property
    def n_accepted(self) -> float:
        return float(self.accepted.sum())

    @property
    def share_all(self) -> np.ndarray:
        return self.all / self.n_all if self.n_all > 0 else np.zeros_like(self.all)

    @property
    def share_accepted(self) -> np.ndarray:
        return self.accepted / self.n_accepted if self.n_accepted > 0 else np.zeros_like(self.accepted)

    def index(self, group: Sequence[str]) -> int:
        return self.groups.index(tuple(group))

    def rows(self) -> list[dict]:
        sa, sc = self.share_all, self.share_accepted
        return [
            {"group": g, "all": float(self.all[i]), "all_share": float(sa[i]),
             "accepted": float(self.accepted[i]), "accepted_share": float(sc[i])}
            for i, g in enumerate(self.groups)
        ]

    def matrix(self, which: str = "accepted") -> tuple[list[str], list[str], np.ndarray]:
        """A two-head table as (row labels, column labels, counts (R, C)) for the cross-table view."""
        if len(self.heads) != 2:
            raise ValueError("matrix() needs a table over exactly two heads")
        values = self.accepted if which == "accepted" else self.all
        rl = list(dict.fromkeys(g[0] for g in self.groups))
        cl = list(dict.fromkeys(g[1] for g in self.groups))
        m = np.zeros((len(rl), len(cl)))
        for g, v in zip(self.groups, values):
            m[rl.index(g[0]), cl.index(g[1])] = v
        return rl, cl, m


@dataclass
class GroupStats:
    by: tuple[str, ...]
    mode: str
    min_conf: float
    joint: GroupTable
    marginals: dict[str, GroupTable] = field(default_factory=dict)

    @property
    def n_all(self) -> int:
        return int(round(self.joint.n_all))

    @property
    def n_accepted(self) -> int:
        return int(round(self.joint.n_accepted))

    def tables(self) -> list[tuple[str, GroupTable]]:
        """(name, table): the joint table first (e.g. 'race7 x gender'), then the marginals."""
        out = [(" x ".join(self.by), self.joint)] if len(self.by) > 1 else []
        return out + [(h, t) for h, t in self.marginals.items()]


def _joint_counts(weights: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Sum over the images in ``mask`` of the outer product of their per-head weights: one BLAS product per head,
    without copying the selected rows or building an (N, prod K) array."""
    m = np.asarray(mask, dtype=np.float64)
    if len(weights) == 1:
        return m @ weights[0]
    letters = string.ascii_lowercase[: len(weights)]
    spec = ",".join(f"n{c}" for c in letters) + "->" + letters
    return np.einsum(spec, weights[0] * m[:, None], *weights[1:], optimize=True).reshape(-1)


class GroupCounter:
    """``group_stats`` in two steps: everything that depends only on the images (per-head weights, the counts over
    all images) is computed once here; ``stats(accepted)`` then costs a few matrix products. The Demographics panel
    keeps one per snapshot and options, so a threshold drag over 100k images recounts only the accepted set."""

    def __init__(self, probs_by_head: Mapping[str, np.ndarray], by: Sequence[str] = ("race7", "gender"),
                 mode: str = "top", min_conf: float = 0.0, population: np.ndarray | None = None):
        self.by = parse_by(by)
        if not 0.0 <= float(min_conf) <= 1.0:
            raise FaceQCError(f"the minimum confidence must be between 0 and 1, not {min_conf}.")
        self.mode, self.min_conf = mode, float(min_conf)
        self.n = n = _n_rows(probs_by_head, self.by)
        self.population = np.ones(n, bool) if population is None else np.asarray(population, dtype=bool)
        if self.population.shape != (n,):
            raise FaceQCError("the population mask does not have one entry per image.")
        self.heads = [h for h in FAIRFACE_HEADS if probs_by_head.get(h) is not None]
        self.weights = {h: head_weights(_checked_probs(probs_by_head[h], h, n), mode, min_conf) for h in self.heads}
        self._tables = [self.by] + [(h,) for h in self.heads]
        # Top-label mode: every image is in exactly one cell, so a count is a bincount of precomputed cell codes
        # (~10x cheaper than the weight products at 100k images).
        self._codes = {}
        if mode == "top":
            for hs in self._tables:
                shape = tuple(self.weights[h].shape[1] for h in hs)
                self._codes[hs] = (np.ravel_multi_index(tuple(self.weights[h].argmax(axis=1) for h in hs), shape)
                                   if n else np.zeros(0, np.int64), int(np.prod(shape)))
        self._all = {hs: self._counts(hs, self.population) for hs in self._tables}

    def _counts(self, hs: tuple[str, ...], mask: np.ndarray) -> np.ndarray:
        if self.mode == "top":
            codes, size = self._codes[hs]
            return np.bincount(codes[mask], minlength=size).astype(np.float64)
        return _joint_counts([self.weights[h] for h in hs], mask)

    def stats(self, accepted_mask: np.ndarray) -> GroupStats:
        acc = np.asarray(accepted_mask, dtype=bool)
        if acc.shape != (self.n,):
            raise FaceQCError("the accepted mask does not have one entry per image.")
        acc = acc & self.population

        def table(hs: tuple[str, ...]) -> GroupTable:
            groups = list(itertools.product(*(head_labels(h) for h in hs)))
            a, c = self._all[hs], self._counts(hs, acc)
            keep = [i for i, g in enumerate(groups)
                    if a[i] > 0 or c[i] > 0 or not ({UNCERTAIN, UNKNOWN} & set(g))]
            return GroupTable(hs, [groups[i] for i in keep], a[keep], c[keep])

        return GroupStats(self.by, self.mode, self.min_conf, table(self.by), {h: table((h,)) for h in self.heads})


def group_stats(probs_by_head: Mapping[str, np.ndarray], accepted_mask: np.ndarray,
                by: Sequence[str] = ("race7", "gender"), mode: str = "top", min_conf: float = 0.0,
                population: np.ndarray | None = None) -> GroupStats:
    """Counts and shares per group (the joint table over ``by`` and one marginal per head present).

    ``probs_by_head``: head -> (N, K) probabilities (NaN rows where unknown); ``accepted_mask``: (N,) bool;
    ``population``: (N,) bool of the images that count at all ("all scored images"), default every row.
    Joint groups made only of real labels are always listed (an empty group shows as 0); groups involving
    UNCERTAIN/UNKNOWN are listed only when some image falls in them.
    """
    return GroupCounter(probs_by_head, by, mode, min_conf, population).stats(accepted_mask)


# --- Snapshot glue (the store's columnar view) ---

def snapshot_population(snapshot) -> np.ndarray:
    """"All scored images": scored (faces or none), not an error, file present; missing/unscored/error rows don't."""
    return (np.asarray(snapshot.n_faces) >= 0) & ~np.asarray(snapshot.error, bool) & ~np.asarray(snapshot.missing, bool)


def snapshot_probs(snapshot) -> dict[str, np.ndarray]:
    return {h: getattr(snapshot, h, None) for h in FAIRFACE_HEADS if getattr(snapshot, h, None) is not None}


def snapshot_stats(snapshot, threshold: float, by: Sequence[str] = ("race7", "gender"), mode: str = "top",
                   min_conf: float = 0.0, accepted: np.ndarray | None = None) -> GroupStats:
    """``group_stats`` of a store Snapshot under ``threshold`` (or a precomputed ``accepted`` mask)."""
    if accepted is None:
        accepted = snapshot.decide(threshold)[0]
    return group_stats(snapshot_probs(snapshot), accepted, by=by, mode=mode, min_conf=min_conf,
                       population=snapshot_population(snapshot))
