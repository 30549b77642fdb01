"""Balanced selection: the subset of images with the highest total quality that meets a demographic target.

The target fixes (or bounds) how many images each group gets; the total quality is a sum over images, so once the
per-group counts are known the problem splits into one independent problem per group, and inside a group the best
``c`` images are simply the ``c`` best (quality descending, then image id ascending for ties). Everything below is
about choosing the counts exactly and about the cases that break that simple picture (manual decisions, CelebA
constraints inside groups, caps with a total size). docs/BALANCE.md explains the rules and why the result is optimal.

Targets are defined in ``balance_target``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .balance_stats import UNCERTAIN, UNKNOWN, joint_codes, parse_by, snapshot_population, snapshot_probs
from .balance_target import SHARE_EPS, AttributeConstraint, Target, group_name
from .errors import FaceQCError
from .labels import CELEBA_ATTRIBUTES

ACCEPT, REJECT = 1, -1  # Snapshot.override codes


# ----------------------------------------------------------------------------------------------- candidates

@dataclass
class Candidates:
    """The images a proposal may touch, as aligned arrays.

    group: index into ``groups``, -1 when the image is in no target group (no face, no FairFace, low confidence).
    eligible: may be chosen by the algorithm (e.g. quality above a floor); manual accepts are kept regardless.
    """

    ids: np.ndarray
    group: np.ndarray
    groups: list
    quality: np.ndarray
    override: np.ndarray
    accepted: np.ndarray
    eligible: np.ndarray
    celeba: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.ids)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.group = np.asarray(self.group, dtype=np.int64)
        self.quality = np.asarray(self.quality, dtype=np.float64)
        self.override = np.asarray(self.override, dtype=np.int8)
        self.accepted = np.asarray(self.accepted, dtype=bool)
        self.eligible = np.asarray(self.eligible, dtype=bool)
        for name in ("group", "quality", "override", "accepted", "eligible"):
            if getattr(self, name).shape != (n,):
                raise FaceQCError(f"candidate {name} has the wrong length.")
        if len(np.unique(self.ids)) != n:
            raise FaceQCError("candidate image ids are not unique.")
        if self.celeba is not None:
            self.celeba = np.asarray(self.celeba, dtype=np.float64)
            if self.celeba.shape != (n, len(CELEBA_ATTRIBUTES)):
                raise FaceQCError("candidate CelebA probabilities must be (n, 40).")
        if ((self.group < -1) | (self.group >= len(self.groups))).any():
            raise FaceQCError("candidate group index out of range.")

    @classmethod
    def from_labels(cls, ids, labels: Sequence[Hashable | None], quality, override=None, accepted=None,
                    celeba=None, groups: Sequence[Hashable] | None = None, eligible=None) -> "Candidates":
        """Build from one group key per image (None = in no group); ``groups`` defaults to the keys seen, sorted."""
        n = len(ids)
        if groups is None:
            groups = sorted({g for g in labels if g is not None}, key=repr)
        groups = list(groups)
        pos = {g: i for i, g in enumerate(groups)}
        group = np.array([pos.get(g, -1) if g is not None else -1 for g in labels], dtype=np.int64)
        return cls(ids, group, groups, quality,
                   np.zeros(n, np.int8) if override is None else override,
                   np.zeros(n, bool) if accepted is None else accepted,
                   np.ones(n, bool) if eligible is None else eligible, celeba)


def candidates_from_snapshot(snapshot, threshold: float, by: Sequence[str] = ("race7", "gender"),
                             min_conf: float = 0.0, min_score: float | None = None,
                             not_manual: Iterable[int] = ()) -> Candidates:
    """The scored, present, error-free images of a store Snapshot, grouped by their top FairFace labels under ``by``.

    Target groups are every combination of real labels; images whose label in some head is uncertain or unknown are
    outside every group. ``min_score``: images below it are not chosen (a manual accept still keeps its image).
    ``not_manual``: image ids whose override an earlier applied proposal set (``Project.balance_made_overrides``):
    they are not the user's decisions, so a new proposal is free to change them.
    """
    by = parse_by(by)
    pop = snapshot_population(snapshot)
    rows = np.flatnonzero(pop)
    accepted = np.asarray(snapshot.decide(threshold)[0], bool)
    codes, all_groups = joint_codes(snapshot_probs(snapshot), by, min_conf)
    real = [i for i, g in enumerate(all_groups) if not ({UNCERTAIN, UNKNOWN} & set(g))]
    remap = np.full(len(all_groups), -1, np.int64)
    remap[real] = np.arange(len(real))
    score = np.asarray(snapshot.score, np.float64)[rows]
    eligible = np.isfinite(score)
    if min_score is not None:
        eligible &= score >= min_score
    celeba = getattr(snapshot, "celeba", None)
    override = np.array(np.asarray(snapshot.override)[rows], copy=True)
    free = np.fromiter((int(i) for i in not_manual), np.int64)
    if len(free):
        override[np.isin(np.asarray(snapshot.ids)[rows], free)] = 0
    return Candidates(np.asarray(snapshot.ids)[rows], remap[codes[rows]], [all_groups[i] for i in real], score,
                      override, accepted[rows], eligible,
                      None if celeba is None else np.asarray(celeba)[rows])


# ------------------------------------------------------------------------------------------ one group's pool

def _milp(c, integrality, bounds, rows, lo, hi):
    from scipy.optimize import Bounds, LinearConstraint, milp

    cons = ([LinearConstraint(np.asarray(rows, float), np.asarray(lo, float), np.asarray(hi, float))]
            if len(rows) else [])
    for presolve in (True, False):
        res = milp(c=np.asarray(c, float), integrality=integrality, bounds=Bounds(*bounds), constraints=cons,
                   options={"mip_rel_gap": 0.0, "presolve": presolve})
        if res.status in (0, 2):  # optimal / proven infeasible
            break
        # HiGHS's presolve occasionally ends in "solve error" on small models with repeated rows; without it the
        # same model solves, so a failure is only reported once both ways agree.
    return res if res.status == 0 else None


class _Pool:
    """One group's images: manual accepts (forced) and free ones, split into CelebA cells, best first.

    A cell is one combination of the constrained attributes (bit j set = attribute j present); without constraints
    there is one cell. For a count ``c``, choosing how many images come from each cell is the only decision: inside
    a cell the best ones are taken.
    """

    def __init__(self, free: list[np.ndarray], forced: list[np.ndarray], quality: np.ndarray,
                 constraints: Sequence[AttributeConstraint]):
        self.free, self.cons, self.k = free, list(constraints), len(constraints)
        self.fc = np.array([len(a) for a in forced], np.int64)
        self.r = np.array([len(a) for a in free], np.int64)
        self.prefix = [np.concatenate([[0.0], np.cumsum(quality[a])]) for a in free]
        fq = np.concatenate(forced) if forced else np.zeros(0, np.int64)
        self.forced_quality = float(np.nansum(quality[fq]))
        self.f = int(self.fc.sum())
        self.hi = self.f + int(self.r.sum())
        ncell = 1 << self.k
        self.has = np.array([[(cell >> j) & 1 for cell in range(ncell)] for j in range(self.k)], bool).reshape(
            self.k, ncell)
        self._feasible_cache: dict[int, bool] = {}

    # k == 1: the only choice is x = number of images with the attribute; its allowed interval in closed form.
    def _x_range(self, c):
        lo_a, hi_a = self.cons[0].bounds(c)
        lo = np.maximum.reduce([lo_a, np.broadcast_to(self.fc[1], np.shape(c)), c - self.fc[0] - self.r[0]])
        hi = np.minimum.reduce([hi_a, np.broadcast_to(self.fc[1] + self.r[1], np.shape(c)), c - self.fc[0]])
        return lo, hi

    def feasible_upto(self, upto: int) -> np.ndarray:
        """Whether each count 0..upto can be met (vectorised when at most one attribute is constrained)."""
        c = np.arange(upto + 1)
        ok = (c >= self.f) & (c <= self.hi)
        if self.k == 1:
            lo, hi = self._x_range(c)
            ok &= lo <= hi
        elif self.k >= 2:
            ok = np.array([bool(o) and self._feasible_milp(int(ci)) for ci, o in zip(c, ok)], bool)
        return ok

    def feasible(self, c: int) -> bool:
        if c < self.f or c > self.hi:
            return False
        if self.k == 0:
            return True
        if self.k == 1:
            lo, hi = self._x_range(np.int64(c))
            return bool(lo <= hi)
        return self._feasible_milp(c)

    def _cell_rows(self, c: int):
        """Attribute-count constraints over the cell counts for a group of size c."""
        rows, lo, hi = [], [], []
        for j, con in enumerate(self.cons):
            a, b = con.bounds(c)
            rows.append(self.has[j].astype(float))
            lo.append(int(a))
            hi.append(int(b))
        return rows, lo, hi

    def _feasible_milp(self, c: int) -> bool:
        if c not in self._feasible_cache:
            rows, lo, hi = self._cell_rows(c)
            n = 1 << self.k
            res = _milp(np.zeros(n), np.ones(n), (self.fc, self.fc + self.r), rows + [np.ones(n)], lo + [c], hi + [c])
            self._feasible_cache[c] = res is not None
        return self._feasible_cache[c]

    def cell_counts(self, c: int) -> np.ndarray | None:
        """The best number of images per cell for a group of size c (None if impossible)."""
        if not self.feasible(c):
            return None
        if self.k == 0:
            return np.array([c])
        if self.k == 1:
            lo, hi = self._x_range(np.int64(c))
            xs = np.arange(int(lo), int(hi) + 1)
            vals = self.prefix[1][xs - self.fc[1]] + self.prefix[0][c - xs - self.fc[0]]
            x = int(xs[int(np.argmax(vals))])  # first maximum: the fewest attribute images among equal totals
            return np.array([c - x, x])
        return self._cell_counts_milp(c)

    def _cell_counts_milp(self, c: int) -> np.ndarray | None:
        # One binary per free image; only a cell's best (c - f) images could ever be taken from it.
        take = c - self.f
        if take == 0:
            return self.fc.copy()  # feasible(c) already checked the forced images against the shares
        cells = [np.full(min(int(r), take), cell) for cell, r in enumerate(self.r)]
        cell_of = np.concatenate(cells) if cells else np.zeros(0, np.int64)
        gains = np.concatenate([np.diff(p)[: min(int(r), take)] for p, r in zip(self.prefix, self.r)])
        rows, lo, hi = self._cell_rows(c)
        a_rows = [row[cell_of] for row in rows]
        f_has = [float(row @ self.fc) for row in rows]
        args = (a_rows + [np.ones(len(gains))], [a - f for a, f in zip(lo, f_has)] + [take],
                [b - f for b, f in zip(hi, f_has)] + [take])
        # The linear relaxation first: for two attributes its matrix is an interval matrix (totally unimodular), so
        # its vertex solution is already 0/1; the integer program is only needed when it is not.
        res = _milp(-gains, np.zeros(len(gains)), (0, 1), *args)
        if res is not None and np.abs(res.x - np.rint(res.x)).max(initial=0.0) > 1e-7:
            res = _milp(-gains, np.ones(len(gains)), (0, 1), *args)
        if res is None:
            return None
        chosen = np.rint(res.x).astype(bool)
        return self.fc + np.bincount(cell_of[chosen], minlength=1 << self.k)

    def value_of(self, counts: np.ndarray) -> float:
        return self.forced_quality + float(sum(p[x - f] for p, x, f in zip(self.prefix, counts, self.fc)))

    def value(self, c: int) -> float:
        counts = self.cell_counts(c)
        return -math.inf if counts is None else self.value_of(counts)

    def select(self, counts: np.ndarray) -> np.ndarray:
        parts = [a[: x - f] for a, x, f in zip(self.free, counts, self.fc)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def deficit(self, c: int) -> tuple[int | None, int]:
        """(images this group lacks, manual accepts too many) for size c; (None, 0) if no number of images helps."""
        if self.k == 0:
            return max(0, c - self.hi), max(0, self.f - c)
        # Cell counts x with slack s (images missing from a cell) and u (manual accepts to drop); minimise s + u.
        n = 1 << self.k
        rows, lo, hi = self._cell_rows(c)
        z = np.zeros(n)
        eye = np.eye(n)
        a = [np.concatenate([row, z, z]) for row in rows] + [np.concatenate([np.ones(n), z, z])]
        a += [np.concatenate([eye[i], -eye[i], z]) for i in range(n)]  # x - s <= available
        a += [np.concatenate([eye[i], z, eye[i]]) for i in range(n)]   # x + u >= forced
        lb = lo + [c] + [-np.inf] * n + list(self.fc)
        ub = hi + [c] + list(self.fc + self.r) + [np.inf] * n
        res = _milp(np.concatenate([z, np.ones(n), np.ones(n)]), np.ones(3 * n), (0, np.inf), a, lb, ub)
        if res is None:
            return None, 0
        x = np.rint(res.x)
        return int(x[n:2 * n].sum()), int(x[2 * n:].sum())

    def values_upto(self, upto: int) -> np.ndarray:
        """The best total quality for every count 0..upto (-inf where impossible); at most one attribute.

        With one attribute, quality(x) = P1(x) + P0(c - x) is concave in x (both prefix sums are), so its maximum
        over the allowed interval is the unconstrained maximiser (the attribute count among the best c images of
        the two cells merged) clipped into the interval.
        """
        c = np.arange(upto + 1)
        out = np.full(upto + 1, -np.inf)
        ok = self.feasible_upto(upto)
        if self.k == 0:
            out[ok] = self.forced_quality + self.prefix[0][c[ok] - self.f]
            return out
        merged_has = np.concatenate([np.zeros(self.r[0], np.int64), np.ones(self.r[1], np.int64)])
        gains = np.concatenate([np.diff(self.prefix[0]), np.diff(self.prefix[1])])
        pos_top = np.concatenate([[0], np.cumsum(merged_has[np.argsort(-gains, kind="stable")])])
        cc = c[ok]
        lo, hi = self._x_range(cc)
        x = np.clip(self.fc[1] + pos_top[cc - self.f], lo, hi)
        out[ok] = self.forced_quality + self.prefix[1][x - self.fc[1]] + self.prefix[0][cc - x - self.fc[0]]
        return out

    def size_bound(self) -> int:
        """An upper bound on the feasible counts: the linear relaxation's largest group size (several attributes).

        Any integer solution satisfies (images with attribute j) >= min_j x c, <= max_j x c, |... - share_j x c| < 1,
        which are linear in the cell counts, so maximising c over them bounds the integer problem from above.
        """
        if self.k <= 1:
            return self.hi
        from scipy.optimize import linprog

        n = 1 << self.k
        a_ub, b_ub = [], []
        for j, con in enumerate(self.cons):
            has = self.has[j].astype(float)
            for share, sign, slack in ((con.min_share, -1, 0.0), (con.max_share, 1, 0.0),
                                       (con.share, -1, 1.0), (con.share, 1, 1.0)):
                if share is not None:  # sign x (has - share x total) <= slack
                    a_ub.append(sign * (has - share))
                    b_ub.append(slack)
        res = linprog(-np.ones(n), A_ub=np.array(a_ub), b_ub=np.array(b_ub),
                      bounds=list(zip(self.fc.tolist(), (self.fc + self.r).tolist())), method="highs")
        return int(math.floor(-res.fun + 1e-6)) if res.status == 0 else -1

    def largest_feasible(self, upper: int, lower: int = 0) -> int | None:
        upper = min(upper, self.hi, self.size_bound())
        if upper < lower:
            return None
        if self.k <= 1:
            ok = np.flatnonzero(self.feasible_upto(upper)[lower:])
            return int(ok[-1]) + lower if len(ok) else None
        for c in range(upper, lower - 1, -1):
            if self.feasible(c):
                return c
        return None


# ------------------------------------------------------------------------------------------------- proposal

@dataclass
class GroupPlan:
    group: Hashable
    available: int        # images that may be in the set: free eligible ones + manual accepts
    forced: int           # manual accepts kept in the set
    current: int          # accepted now
    target: int           # images the proposal puts in the set
    would_accept: int
    would_reject: int
    shortfall: int | None = 0  # images missing to reach the target (None: no number of images makes it possible)
    over: int = 0              # manual accepts beyond the target

    @property
    def name(self) -> str:
        return group_name(self.group)


@dataclass
class Proposal:
    feasible: bool
    message: str
    target: Target
    size: int                       # images of the target groups in the proposed set
    groups: list[GroupPlan]
    selected_ids: np.ndarray        # the whole proposed set (target groups + manual accepts outside them)
    accept_ids: np.ndarray          # not accepted now, accepted by the proposal
    reject_ids: np.ndarray          # accepted now, rejected by the proposal
    outside_kept_ids: np.ndarray    # manual accepts outside every target group, kept
    outside_rejected: int           # accepted now, outside every target group, rejected by the proposal
    total_quality: float
    keep_overrides: bool
    max_size: int | None = None     # the largest size that can be met (set when a requested size cannot)
    shortfall: dict = field(default_factory=dict)
    over: dict = field(default_factory=dict)
    rejected_by_hand: dict = field(default_factory=dict)  # short group -> its usable images that manual rejects hold

    @property
    def target_counts(self) -> dict:
        return {p.group: p.target for p in self.groups}

    def changes(self) -> dict[int, str]:
        """The overrides that apply the proposal: image id -> "accept" | "reject"."""
        out = {int(i): "accept" for i in self.accept_ids}
        out.update({int(i): "reject" for i in self.reject_ids})
        return out


def _apportion(weights: np.ndarray, n: int, rank_extra) -> np.ndarray:
    """Largest remainder: floor(w_g n) each, the remaining units to the largest fractional parts.

    Equal fractional parts (always the case for a uniform target) are ordered by ``rank_extra(base)``: a key per
    group, smaller first. Groups with weight 0 get nothing.
    """
    w = weights / weights.sum()
    quota = w * n
    base = np.floor(quota + SHARE_EPS).astype(np.int64)
    frac = np.where(w > 0, np.round(quota - base, 9), -1.0)
    extra = n - int(base.sum())
    if extra > 0:
        keys = rank_extra(base)
        order = sorted(np.flatnonzero(w > 0), key=lambda g: (-frac[g], keys[g], g))
        base[order[:extra]] += 1
    return base


def propose(cands: Candidates, target: Target | None = None, size: int | str | None = None,
            keep_overrides: bool = True) -> Proposal:
    """The highest-quality subset meeting ``target`` with ``size`` images (None/"max": as many as possible).

    With ``keep_overrides`` manual rejects are never chosen and manual accepts are always in the set (counting for
    their group). Returns a Proposal; an impossible target gives ``feasible=False`` with per-group ``shortfall``
    (images missing) / ``over`` (manual accepts beyond the target) and nothing to change.
    """
    target = target or Target()
    groups = list(cands.groups)
    target.check_groups(groups)
    if not groups:
        raise FaceQCError("there are no groups to balance.")
    if len(cands.ids) and not (cands.group >= 0).any():
        # Otherwise every group would "lack" images, which hides the real cause.
        raise FaceQCError("no image has FairFace labels to group by yet (no image scored with the FairFace weights, "
                          "no face found, or every prediction below the minimum confidence). Score the images with "
                          "FairFace (Models: `faceqc models download fairface`) to balance them.")
    if size == "max":
        size = None
    if size is not None:
        ok = isinstance(size, (int, float, np.integer, np.floating)) and not isinstance(size, bool)
        if not ok or not math.isfinite(size) or size != int(size) or size < 0:
            raise FaceQCError(f"the size must be a whole number >= 0 or 'max', not {size!r}.")
        size = int(size)

    q = cands.quality
    n = len(cands.ids)
    keep = bool(keep_overrides)
    forced = (cands.override == ACCEPT) if keep else np.zeros(n, bool)
    banned = (cands.override == REJECT) if keep else np.zeros(n, bool)
    in_group = cands.group >= 0
    free = in_group & cands.eligible & ~forced & ~banned & np.isfinite(q)

    k = len(target.constraints)
    cell = np.zeros(n, np.int64)
    if k:
        if cands.celeba is None:
            raise FaceQCError("CelebA constraints need CelebA attributes; score the images with the celeba model.")
        for j, con in enumerate(target.constraints):
            p = cands.celeba[:, con.index]
            if not np.isfinite(p).any():
                raise FaceQCError(f"no image has a {con.attribute} probability; score the images with the celeba "
                                  f"model to use CelebA constraints.")
            # Unknown attributes cannot be counted for or against a share: such images are not chosen.
            free &= np.isfinite(p)
            cell |= (np.nan_to_num(p, nan=0.0) >= con.threshold).astype(np.int64) << j

    order = np.lexsort((cands.ids, -np.where(np.isfinite(q), q, -np.inf), cell, cands.group))
    pools = []
    ncell = 1 << k
    for g in range(len(groups)):
        mine = order[cands.group[order] == g]
        pools.append(_Pool([mine[free[mine] & (cell[mine] == c)] for c in range(ncell)],
                           [mine[forced[mine] & (cell[mine] == c)] for c in range(ncell)], q, target.constraints))

    solver = _Solver(pools, target, groups, cands.ids)
    counts, note = solver.counts(size)
    return _finish(cands, target, groups, pools, counts, solver, size, keep, forced, note)


class _Solver:
    """Chooses the number of images per group (and, for caps with a size and constraints, the cell split too)."""

    def __init__(self, pools: list[_Pool], target: Target, groups: list, ids: np.ndarray):
        self.pools, self.target, self.groups, self.ids = pools, target, groups, ids
        self.G = len(pools)
        self.cells: list[np.ndarray] | None = None   # set when the solver already chose each group's cell split
        self.failed = False                           # set when the solver itself found the target impossible
        self.shortfall: dict | None = None            # its own report of what is missing, when it has one
        self.over: dict = {}

    def weights(self) -> np.ndarray:
        if self.target.kind == "uniform":
            return np.ones(self.G)
        return np.array([float(self.target.shares.get(g, 0.0)) for g in self.groups])

    def caps(self) -> tuple[np.ndarray, np.ndarray]:
        """(cap per group, whether the cap was set by the user rather than "no cap")."""
        t = self.target
        caps, bounded = [], []
        for g, p in zip(self.groups, self.pools):
            cap = t.caps.get(g) if t.caps and g in t.caps else t.default_cap
            caps.append(p.hi if cap is None else int(cap))
            bounded.append(cap is not None)
        return np.array(caps, np.int64), np.array(bounded, bool)

    def counts(self, size: int | None) -> tuple[np.ndarray, str]:
        if self.target.kind == "caps":
            return self._caps(size)
        if size is not None:
            return self._apportion(size, with_gain=True), ""
        return self._max_shares()

    def _apportion(self, n: int, with_gain: bool) -> np.ndarray:
        def rank(base):
            keys = []
            for p, b in zip(self.pools, base):
                can = p.feasible(int(b) + 1)
                needs = can and not p.feasible(int(b))
                gain = (p.value(int(b) + 1) - p.value(int(b))) if with_gain and can and not needs else 0.0
                # Groups that cannot do without the extra image first, then those that can take it, then the
                # one whose extra image adds the most quality: the best of all largest-remainder roundings.
                keys.append((not needs, not can, -gain))
            return keys
        return _apportion(self.weights(), n, rank)

    def _max_shares(self) -> tuple[np.ndarray, str]:
        w = self.weights()
        pos = np.flatnonzero(w > 0)
        if self.target.kind == "uniform":
            # Uniform "as large as possible" keeps the counts exactly equal: G x the largest common feasible count.
            upper = min(p.hi for p in self.pools)
            lower = max(1, max(p.f for p in self.pools))
            best = None
            if upper >= lower:
                if all(p.k <= 1 for p in self.pools):
                    ok = np.ones(upper + 1, bool)
                    for p in self.pools:
                        ok &= p.feasible_upto(upper)
                    found = np.flatnonzero(ok[lower:])
                    best = int(found[-1]) + lower if len(found) else None
                else:
                    upper = min(upper, min(p.size_bound() for p in self.pools))
                    best = next((c for c in range(upper, lower - 1, -1)
                                 if all(p.feasible(c) for p in self.pools)), None)
            if best is not None:
                return np.full(self.G, best), ""
            self.failed = True
            return np.full(self.G, lower), f"no equal number of images per group can be met (shown for {lower} each)"
        # Shares: the largest N whose rounded counts can be met and give every named group at least one image.
        wn = w / w.sum()
        upper = int(min(math.floor((self.pools[g].hi + 1) / wn[g]) for g in pos))
        for n in range(upper, 0, -1):
            c = self._apportion(n, with_gain=False)
            if all(c[g] >= 1 for g in pos) and all(p.feasible(int(x)) for p, x in zip(self.pools, c)):
                return self._apportion(n, with_gain=True), ""
        n0 = int(max(math.ceil(max(1, self.pools[g].f) / wn[g] - SHARE_EPS) for g in pos))
        n0 = max(n0, sum(p.f for p in self.pools))
        self.failed = True
        return self._apportion(n0, with_gain=False), (
            f"no size meets these shares with every group present (shown for {n0} images)")

    def _caps(self, size: int | None) -> tuple[np.ndarray, str]:
        caps, bounded = self.caps()
        f = np.array([p.f for p in self.pools], np.int64)
        hi = np.array([p.hi for p in self.pools], np.int64)
        self.over = {self.groups[g]: int(f[g] - caps[g]) for g in np.flatnonzero(f > caps)}
        if self.over:
            self.failed = True
            return np.maximum(f, 0), ""
        if size is None:
            counts = []
            for p, cap in zip(self.pools, caps):
                best = p.largest_feasible(int(cap), p.f)
                if best is None:
                    self.failed = True
                counts.append(p.f if best is None else best)
            return np.array(counts, np.int64), ""
        if size < f.sum():
            self.failed, self.shortfall = True, {}
            return f, f"the size is below the {int(f.sum())} manual accepts that are kept"
        if self.target.constraints:
            if all(p.k <= 1 for p in self.pools):
                return self._caps_dp(size, caps)
            return self._caps_milp(size, caps)
        fit = int(np.minimum(caps, hi).sum())
        if size > fit:
            self.failed = True
            self.shortfall = {self.groups[g]: int(caps[g] - hi[g]) for g in np.flatnonzero(bounded & (hi < caps))}
            return np.minimum(caps, hi), f"at most {fit} images fit the caps"
        return self._caps_greedy(size, caps, f), ""

    def _caps_greedy(self, size: int, caps: np.ndarray, f: np.ndarray) -> np.ndarray:
        # Each group's value is concave in its count (best images first), so the exact optimum takes the globally
        # best free images, at most (cap - manual accepts) from a group, until the size is reached.
        qs, gs, ids = [], [], []
        for g, (p, cap) in enumerate(zip(self.pools, caps)):
            m = max(0, int(cap) - p.f)
            a = p.free[0][:m]
            qs.append(np.diff(p.prefix[0])[:m])
            gs.append(np.full(len(a), g))
            ids.append(self.ids[a])
        qv, gv, iv = np.concatenate(qs), np.concatenate(gs), np.concatenate(ids)
        pick = np.lexsort((iv, -qv))[: size - int(f.sum())]
        return f + np.bincount(gv[pick], minlength=self.G)

    def _caps_dp(self, size: int, caps: np.ndarray) -> tuple[np.ndarray, str]:
        # Caps + a total size + one attribute share: a group's best quality is not concave in its count (the share
        # is rounded up), so the counts come from an exact dynamic programme over groups (max-plus convolution of
        # the groups' best-quality-per-count tables).
        best = np.full(size + 1, -np.inf)
        best[0] = 0.0
        choices = []
        for p, cap in zip(self.pools, caps):
            v = p.values_upto(int(min(cap, p.hi, size)))
            new = np.full(size + 1, -np.inf)
            arg = np.full(size + 1, -1, np.int64)
            for c in np.flatnonzero(np.isfinite(v)):
                cand = best[: size + 1 - c] + v[c]
                better = cand > new[c:]
                new[c:][better] = cand[better]
                arg[c:][better] = c
            best = new
            choices.append(arg)
        if not np.isfinite(best[size]):
            self.failed, self.shortfall = True, {}
            return np.minimum(caps, [p.f for p in self.pools]), (
                f"no choice of {size} images meets the caps and the attribute shares")
        counts, rest = np.zeros(self.G, np.int64), size
        for g in range(self.G - 1, -1, -1):
            counts[g] = choices[g][rest]
            rest -= counts[g]
        return counts, ""

    def _caps_milp(self, size: int, caps: np.ndarray) -> tuple[np.ndarray, str]:
        # Caps + a total size + attribute shares: the count per group and its split per cell interact, so the whole
        # thing is one integer program over the free images (HiGHS, gap 0); a cell's best images come first.
        f = np.array([p.f for p in self.pools], np.int64)
        cols_q, cols_g, cols_cell = [], [], []
        for g, (p, cap) in enumerate(zip(self.pools, caps)):
            room = max(0, int(min(cap, p.hi)) - p.f)
            for c, pre in enumerate(p.prefix):
                m = min(int(p.r[c]), room)
                cols_q.append(np.diff(pre)[:m])
                cols_g.append(np.full(m, g))
                cols_cell.append(np.full(m, c))
        qv, gv, cv = np.concatenate(cols_q), np.concatenate(cols_g), np.concatenate(cols_cell)
        nv = len(qv)
        rows, lo, hi = [np.ones(nv)], [float(size - f.sum())], [float(size - f.sum())]
        for g, (p, cap) in enumerate(zip(self.pools, caps)):
            in_g = (gv == g).astype(float)
            rows.append(in_g)
            lo.append(-np.inf)
            hi.append(float(cap - p.f))
            for j, con in enumerate(self.target.constraints):
                has = in_g * p.has[j][cv]
                fh = float(p.has[j] @ p.fc)
                # (images with the attribute) - share x (images), linear in the variables plus forced constants.
                if con.share is not None:
                    rows.append(has - con.share * in_g)
                    const = fh - con.share * p.f
                    lo.append(-1 + 1e-6 - const)   # |x - s c| < 1 for integers: floor(s c) <= x <= ceil(s c)
                    hi.append(1 - 1e-6 - const)
                if con.min_share is not None:
                    rows.append(has - con.min_share * in_g)
                    lo.append(-(fh - con.min_share * p.f) - 1e-7)
                    hi.append(np.inf)
                if con.max_share is not None:
                    rows.append(has - con.max_share * in_g)
                    lo.append(-np.inf)
                    hi.append(-(fh - con.max_share * p.f) + 1e-7)
        if nv:
            res = _milp(-qv, np.ones(nv), (0, 1), rows, lo, hi)
            possible = res is not None
        else:  # nothing left to choose: the manual accepts alone must meet the size and the shares
            res, possible = None, size == f.sum() and all(p.feasible(p.f) for p in self.pools)
        if not possible:
            self.failed, self.shortfall = True, {}
            return np.minimum(caps, f), f"no choice of {size} images meets the caps and the attribute shares"
        x = np.rint(res.x).astype(bool) if res is not None else np.zeros(0, bool)
        cells = []
        for g, p in enumerate(self.pools):
            cells.append(p.fc + np.bincount(cv[x & (gv == g)], minlength=1 << p.k))
        self.cells = cells
        return np.array([int(c.sum()) for c in cells], np.int64), ""


def _finish(cands, target, groups, pools, counts, solver, size, keep, forced, note) -> Proposal:
    cell_counts = solver.cells if solver.cells is not None else [
        None if solver.failed else p.cell_counts(int(c)) for p, c in zip(pools, counts)]
    ok = not solver.failed and all(cc is not None for cc in cell_counts)

    shortfall, over = {}, dict(solver.over)
    if not ok:
        if solver.shortfall is not None:
            shortfall = dict(solver.shortfall)
        else:
            for g, (p, c) in enumerate(zip(pools, counts)):
                s, o = p.deficit(int(c))
                if s is None or s > 0:
                    shortfall[groups[g]] = s
                if o > 0:
                    over[groups[g]] = max(o, over.get(groups[g], 0))

    sel = np.zeros(len(cands.ids), bool)
    outside_forced = forced & (cands.group < 0)
    if ok:
        for p, cc in zip(pools, cell_counts):
            sel[p.select(cc)] = True
        sel |= forced
    accepted = cands.accepted
    change = ok  # nothing changes when the target cannot be met

    plans = []
    for g, p in enumerate(pools):
        in_g = cands.group == g
        plans.append(GroupPlan(
            group=groups[g], available=p.hi, forced=p.f, current=int((accepted & in_g).sum()), target=int(counts[g]),
            would_accept=int((sel & ~accepted & in_g).sum()) if change else 0,
            would_reject=int((accepted & ~sel & in_g).sum()) if change else 0,
            shortfall=shortfall.get(groups[g], 0), over=over.get(groups[g], 0)))

    empty = np.zeros(0, np.int64)
    prop = Proposal(
        feasible=ok, message="", target=target, size=int(counts.sum()), groups=plans,
        selected_ids=np.sort(cands.ids[sel]) if ok else empty,
        accept_ids=np.sort(cands.ids[sel & ~accepted]) if change else empty,
        reject_ids=np.sort(cands.ids[accepted & ~sel]) if change else empty,
        outside_kept_ids=np.sort(cands.ids[outside_forced]) if ok else empty,
        outside_rejected=int((accepted & ~sel & (cands.group < 0)).sum()) if change else 0,
        total_quality=float(np.nansum(cands.quality[sel])) if ok else 0.0,
        keep_overrides=keep, shortfall=shortfall, over=over)
    if not ok and keep and shortfall:
        # Kept manual rejects may be what a short group lacks (an earlier applied proposal's rejects count as
        # manual too): say how many, so the user knows that not keeping them would help.
        rej = (cands.override == REJECT) & cands.eligible & np.isfinite(cands.quality)
        for g, name in enumerate(groups):
            n_rej = int((rej & (cands.group == g)).sum())
            if name in shortfall and n_rej:
                prop.rejected_by_hand[name] = n_rej
    if not ok and size is not None:
        best = propose(cands, target, None, keep)
        prop.max_size = best.size if best.feasible else None
    prop.message = _message(prop, size, note)
    return prop


def _message(p: Proposal, size, note: str) -> str:
    if p.feasible:
        return (f"{p.size} images meet the target ({p.target.describe()}): {len(p.accept_ids)} to accept, "
                f"{len(p.reject_ids)} to reject; total quality {p.total_quality:.1f}.")
    parts = [f"The target ({p.target.describe()}) cannot be met"
             + (f" with {size} images" if size is not None else "") + "."]
    if note:
        parts.append(note[0].upper() + note[1:] + ".")
    if p.shortfall:
        lack = ", ".join(f"{group_name(g)} lacks {'images of the required kinds' if v is None else v}"
                         for g, v in p.shortfall.items())
        parts.append(f"Missing images: {lack}.")
    if p.rejected_by_hand:
        held = ", ".join(f"{v} in {group_name(g)}" for g, v in p.rejected_by_hand.items())
        parts.append(f"Rejected by hand: {held}; propose without keeping manual decisions, or clear those "
                     f"overrides, to use them.")
    if p.over:
        parts.append("Manual accepts beyond the target: "
                     + ", ".join(f"{group_name(g)} has {v} too many" for g, v in p.over.items())
                     + " (clear those overrides or propose without keeping them).")
    if p.max_size is not None:
        parts.append(f"The largest size that can be met is {p.max_size}.")
    return " ".join(parts)
