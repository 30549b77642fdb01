"""Balanced selection: exact small cases worked out by hand, infeasible targets, ties, manual decisions, and random
cases checked against independent exact references (brute force over all subsets; an integer program)."""

from __future__ import annotations

import itertools
import time
from fractions import Fraction

import numpy as np
import pytest

from faceqc_gui.engine.balance_select import Candidates, propose
from faceqc_gui.engine.balance_target import AttributeConstraint, Target, parse_constraint, parse_target
from faceqc_gui.engine.errors import FaceQCError
from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, GENDER, RACE7

SMILING = CELEBA_ATTRIBUTES.index("Smiling")
GLASSES = CELEBA_ATTRIBUTES.index("Eyeglasses")
HAT = CELEBA_ATTRIBUTES.index("Wearing_Hat")


def cands(labels, quality, override=None, accepted=None, groups=None, celeba=None, ids=None, eligible=None):
    n = len(labels)
    return Candidates.from_labels(np.arange(n) if ids is None else ids, labels, quality, override=override,
                                  accepted=accepted, groups=groups, celeba=celeba, eligible=eligible)


def ids_of(p, which="selected_ids"):
    return sorted(int(i) for i in getattr(p, which))


# ---------------------------------------------------------------------------------------------- exact, by hand

def test_uniform_size_takes_the_best_images_of_each_group_and_reports_the_diff():
    #          0    1    2    3    4    5    6    7
    labels = ["a", "a", "a", "a", "b", "b", "b", None]
    q = [30, 25, 20, 15, 28, 18, 12, 40]
    accepted = [1, 1, 0, 1, 0, 1, 1, 1]
    p = propose(cands(labels, q, accepted=accepted), size=4)
    assert p.feasible
    assert ids_of(p) == [0, 1, 4, 5]
    assert ids_of(p, "accept_ids") == [4]
    assert ids_of(p, "reject_ids") == [3, 6, 7]  # 7: accepted, but in no group
    assert p.outside_rejected == 1
    assert p.total_quality == pytest.approx(30 + 25 + 28 + 18)
    rows = {g.group: g for g in p.groups}
    assert (rows["a"].target, rows["a"].current, rows["a"].would_accept, rows["a"].would_reject) == (2, 3, 0, 1)
    assert (rows["b"].target, rows["b"].current, rows["b"].would_accept, rows["b"].would_reject) == (2, 2, 1, 1)
    assert p.changes() == {4: "accept", 3: "reject", 6: "reject", 7: "reject"}


def test_as_large_as_possible_uniform_is_groups_times_the_smallest_group():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"] * 4
    q = np.arange(12, 0, -1.0)
    p = propose(cands(labels, q), size=None)
    assert p.feasible and p.size == 9
    assert p.target_counts == {"a": 3, "b": 3, "c": 3}
    assert ids_of(p) == [0, 1, 2, 5, 6, 7, 8, 9, 10]


def test_uniform_remainder_goes_to_the_group_whose_next_image_is_best():
    labels = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    q = [10, 9, 1, 10, 9, 8, 10, 9, 5]
    p = propose(cands(labels, q), size=7)  # 2 each + 1: b's third (8) beats c's (5) and a's (1)
    assert p.target_counts == {"a": 2, "b": 3, "c": 2}
    assert ids_of(p) == [0, 1, 3, 4, 5, 6, 7]


def test_custom_shares_are_rounded_by_largest_remainder():
    labels = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    q = np.linspace(50, 10, 18)
    t = Target("shares", shares={"a": 0.5, "b": 0.3, "c": 0.2})
    p = propose(cands(labels, q), t, size=7)  # quotas 3.5, 2.1, 1.4 -> 3, 2, 1 and the spare unit to a (.5)
    assert p.target_counts == {"a": 4, "b": 2, "c": 1}
    p = propose(cands(labels, q), t, size=10)
    assert p.target_counts == {"a": 5, "b": 3, "c": 2}
    # Groups not named get nothing; shares are relative weights.
    p = propose(cands(labels, q), Target("shares", shares={"a": 3, "c": 1}), size=8)
    assert p.target_counts == {"a": 6, "b": 0, "c": 2}


def test_caps_take_the_best_images_overall_without_passing_any_cap():
    labels = ["a"] * 4 + ["b"] * 4
    q = [50, 49, 48, 47, 10, 9, 8, 7]
    p = propose(cands(labels, q), Target("caps", caps={"a": 2}), size=5)
    assert ids_of(p) == [0, 1, 4, 5, 6]
    p = propose(cands(labels, q), Target("caps", caps={"a": 2}, default_cap=1), size=None)
    assert ids_of(p) == [0, 1, 4]
    p = propose(cands(labels, q), Target("caps", default_cap=3), size=None)
    assert p.size == 6


def test_ties_are_broken_by_image_id_whatever_the_input_order():
    labels = ["a", "a", "a", "b", "b"]
    q = [5.0, 7.0, 7.0, 3.0, 3.0]
    ids = np.array([40, 12, 30, 9, 2])
    expected = [2, 12]
    for perm in itertools.permutations(range(5)):
        perm = list(perm)
        p = propose(cands([labels[i] for i in perm], [q[i] for i in perm], ids=ids[perm]), size=2)
        assert ids_of(p) == expected


# ------------------------------------------------------------------------------------------- manual decisions

def test_manual_rejects_are_never_chosen_and_manual_accepts_always_kept():
    labels = ["a", "a", "a", "b", "b", "b", None]
    q = [30, 20, 10, 30, 20, 10, 5]
    override = [-1, 0, 0, 0, 0, 1, 1]  # reject a's best; accept b's worst and an image in no group
    c = cands(labels, q, override=override, accepted=[0, 0, 0, 0, 0, 1, 1])
    p = propose(c, size=2)
    assert ids_of(p) == [1, 5, 6]
    assert ids_of(p, "outside_kept_ids") == [6]
    assert p.target_counts == {"a": 1, "b": 1}
    p = propose(c, size=2, keep_overrides=False)
    assert ids_of(p) == [0, 3]
    assert ids_of(p, "accept_ids") == [0, 3] and ids_of(p, "reject_ids") == [5, 6]


def test_manual_accepts_beyond_the_target_make_it_infeasible_and_are_named():
    labels = ["a"] * 4 + ["b"] * 4
    q = np.arange(8, 0, -1.0)
    override = [1, 1, 1, 0, 0, 0, 0, 0]
    p = propose(cands(labels, q, override=override), size=4)
    assert not p.feasible
    assert p.over == {"a": 1}
    assert len(p.accept_ids) == 0 and len(p.reject_ids) == 0
    assert "a has 1 too many" in p.message
    assert p.max_size == 8  # 4 per group (everything) holds the three manual accepts
    assert propose(cands(labels, q, override=override), size=4, keep_overrides=False).feasible


def test_infeasible_size_names_each_group_that_lacks_images_and_how_many():
    labels = ["a"] * 5 + ["b"] * 2 + ["c"] * 4
    q = np.arange(11, 0, -1.0)
    p = propose(cands(labels, q), size=12)
    assert not p.feasible
    assert p.shortfall == {"b": 2}
    assert p.max_size == 6
    assert "b lacks 2" in p.message
    p = propose(cands(labels, q), Target("caps", caps={"a": 9, "b": 9}), size=20)
    assert not p.feasible and p.shortfall == {"a": 4, "b": 7}


def test_a_shortfall_held_by_manual_rejects_says_so():
    # Manual rejects (the user's own decisions) may be what a short group lacks: the message says so.
    labels = ["a"] * 4 + ["b"] * 4
    q = np.arange(8, 0, -1.0)
    override = [0, 0, -1, -1, 0, 0, 0, 0]
    p = propose(cands(labels, q, override=override), size=8)
    assert not p.feasible and p.shortfall == {"a": 2} and p.rejected_by_hand == {"a": 2}
    assert "Rejected by hand: 2 in a" in p.message
    assert propose(cands(labels, q, override=override), size=8, keep_overrides=False).feasible
    assert propose(cands(labels, q), size=10).rejected_by_hand == {}  # nothing held: nothing said


def test_no_image_with_labels_is_a_clear_error_not_every_group_lacking():
    with pytest.raises(FaceQCError, match="no image has FairFace labels"):
        propose(cands([None, None, None], [30, 20, 10], groups=["a", "b"]), size=2)


def test_an_empty_group_makes_as_large_as_possible_infeasible():
    labels = ["a", "a", "b"]
    p = propose(cands(labels, [3, 2, 1], groups=["a", "b", "c"]), size=None)
    assert not p.feasible
    assert p.shortfall == {"c": 1}


def test_ineligible_images_are_not_chosen():
    labels = ["a", "a", "b", "b"]
    p = propose(cands(labels, [9, 8, 7, np.nan], eligible=[0, 1, 1, 1]), size=None)
    assert ids_of(p) == [1, 2]


# ------------------------------------------------------------------------------------------ CelebA constraints

def celeba_with(smiling, glasses=None):
    a = np.full((len(smiling), 40), 0.1)
    a[:, SMILING] = smiling
    if glasses is not None:
        a[:, GLASSES] = glasses
    return a


def test_minimum_attribute_share_within_each_group():
    labels = ["a"] * 8
    q = [90, 80, 70, 60, 50, 40, 30, 20]
    smile = [0, 0, 0, 0, 0, 1, 1, 1]
    t = Target(constraints=(AttributeConstraint("Smiling", min_share=0.4),))
    p = propose(cands(labels, q, celeba=celeba_with(smile)), t, size=5)  # 2 of 5 smiling: the best two of them
    assert ids_of(p) == [0, 1, 2, 5, 6]
    p = propose(cands(labels, q, celeba=celeba_with(smile)), t, size=None)
    assert p.size == 7  # 3 smiling allow 7 (40% of 7 = 2.8 -> 3), not 8 (3.2 -> 4)
    t1 = Target(constraints=(AttributeConstraint("Smiling", min_share=0.8),))
    p = propose(cands(labels, q, celeba=celeba_with(smile)), t1, size=5)
    assert not p.feasible and p.shortfall == {"a": 1}


def test_exact_attribute_share_may_round_either_way():
    labels = ["a"] * 6
    q = [60, 50, 40, 30, 20, 10]
    smile = [1, 1, 1, 0, 0, 0]
    t = Target(constraints=(AttributeConstraint("Smiling", share=0.5),))
    p = propose(cands(labels, q, celeba=celeba_with(smile)), t, size=3)  # 1.5 -> 1 or 2 smiling; 2 is better
    assert ids_of(p) == [0, 1, 3]


# --------------------------------------------------------------------------------- brute-force reference

def brute_force(labels, groups, q, override, eligible, celeba, target, size, keep):
    """Every subset of the images, checked against the definition of the target; returns (best value, best sets,
    size) or None. Written from the definitions, not from the implementation."""
    n = len(labels)
    gi = np.array([groups.index(g) if g is not None else -1 for g in labels])
    G = len(groups)
    forced = np.array([keep and o == 1 for o in override])
    banned = np.array([keep and o == -1 for o in override])
    cons = target.constraints
    has = np.zeros((n, len(cons)), bool)
    known = np.ones(n, bool)
    for j, con in enumerate(cons):
        p = celeba[:, con.index]
        known &= np.isfinite(p)
        has[:, j] = np.nan_to_num(p) >= con.threshold
    free = (gi >= 0) & eligible & ~forced & ~banned & np.isfinite(q) & known
    fidx = np.flatnonzero(free)
    m = len(fidx)
    subsets = ((np.arange(1 << m)[:, None] >> np.arange(m)) & 1).astype(bool)
    S = np.zeros((len(subsets), n), bool)
    S[:, fidx] = subsets
    S |= forced
    onehot = np.zeros((n, G), int)
    onehot[gi >= 0, gi[gi >= 0]] = 1
    counts = S.astype(int) @ onehot
    total = counts.sum(axis=1)
    value = S.astype(float) @ np.nan_to_num(q)
    valid = np.ones(len(S), bool)
    for j, con in enumerate(cons):
        x = S.astype(int) @ (onehot * has[:, j : j + 1])
        for g in range(G):
            c, xg = counts[:, g], x[:, g]
            if con.share is not None:
                s = Fraction(str(con.share))
                valid &= np.array([abs(Fraction(int(a)) - s * int(b)) < 1 for a, b in zip(xg, c)])
            if con.min_share is not None:
                valid &= np.array([Fraction(int(a)) >= Fraction(str(con.min_share)) * int(b) for a, b in zip(xg, c)])
            if con.max_share is not None:
                valid &= np.array([Fraction(int(a)) <= Fraction(str(con.max_share)) * int(b) for a, b in zip(xg, c)])

    def lr_family(N):
        """Count vectors allowed by largest remainder for N (all tie orders)."""
        if target.kind == "uniform":
            w = [Fraction(1)] * G
        else:
            w = [Fraction(str(target.shares.get(g, 0))) for g in groups]
        quota = [wi / sum(w) * N for wi in w]
        base = [int(x) for x in quota]
        frac = [x - b for x, b in zip(quota, base)]
        extra = N - sum(base)
        ok = []
        for combo in itertools.combinations([g for g in range(G) if w[g] > 0], extra):
            rest = [g for g in range(G) if w[g] > 0 and g not in combo]
            if combo and rest and min(frac[g] for g in combo) < max(frac[g] for g in rest):
                continue
            ok.append(tuple(b + (g in combo) for g, b in enumerate(base)))
        return ok

    def best(mask):
        if not mask.any():
            return None
        v = value[mask].max()
        sets = {tuple(np.flatnonzero(S[i])) for i in np.flatnonzero(mask & (np.abs(value - v) < 1e-9))}
        return v, sets, int(total[np.flatnonzero(mask)[0]])

    if target.kind == "caps":
        caps = np.array([target.caps.get(g, target.default_cap) if target.caps and g in target.caps
                         else (target.default_cap if target.default_cap is not None else n) for g in groups])
        ok = valid & (counts <= caps).all(axis=1)
        if size is not None:
            return best(ok & (total == size))
        if not ok.any():
            return None
        # as large as possible: each group's own largest count (groups are independent)
        return best(ok & (total == total[ok].max()))
    if size is not None:
        fam = lr_family(size)
        mask = valid & np.array([tuple(c) in fam for c in map(tuple, counts)])
        return best(mask)
    if target.kind == "uniform":
        eq = valid & (counts == counts[:, :1]).all(axis=1) & (counts[:, 0] >= 1)
        if not eq.any():
            return None
        return best(eq & (counts[:, 0] == counts[eq, 0].max()))
    wpos = [g for g in groups if target.shares.get(g, 0) > 0]
    for N in range(n, 0, -1):
        fam = lr_family(N)
        mask = valid & np.array([tuple(c) in fam for c in map(tuple, counts)])
        mask &= (counts[:, [groups.index(g) for g in wpos]] >= 1).all(axis=1)
        if mask.any():
            return best(mask)
    return None


def random_case(rng, with_constraints):
    n = int(rng.integers(5, 13))
    G = int(rng.integers(1, 4))
    groups = ["a", "b", "c"][:G]
    labels = [groups[i] if rng.random() > 0.1 else None for i in rng.integers(0, G, n)]
    ties = rng.random() < 0.3
    q = rng.integers(1, 4, n).astype(float) if ties else rng.uniform(10, 30, n)
    override = rng.choice([0, 0, 0, 1, -1], n)
    accepted = (override == 1) | ((override == 0) & (rng.random(n) < 0.5))
    eligible = rng.random(n) < 0.9
    celeba = np.full((n, 40), 0.2)
    cons = ()
    if with_constraints:
        celeba[:, SMILING] = rng.random(n)
        celeba[:, GLASSES] = rng.random(n)
        celeba[:, HAT] = rng.random(n)
        celeba[rng.random(n) < 0.1, SMILING] = np.nan
        pool = [AttributeConstraint("Smiling", min_share=float(rng.choice([0.25, 0.4, 0.5]))),
                AttributeConstraint("Smiling", share=float(rng.choice([0.25, 0.5]))),
                AttributeConstraint("Smiling", max_share=0.5),
                AttributeConstraint("Smiling", min_share=0.2, max_share=0.6)]
        cons = (pool[int(rng.integers(len(pool)))],)
        if rng.random() < 0.4:
            cons += (AttributeConstraint("Eyeglasses", max_share=float(rng.choice([0.34, 0.5]))),)
            if rng.random() < 0.3:  # three attributes: no longer an interval matrix, the integer program decides
                cons += (AttributeConstraint("Wearing_Hat", share=0.5),)
    kind = rng.choice(["uniform", "shares", "caps"])
    if kind == "uniform":
        target = Target(constraints=cons)
    elif kind == "shares":
        target = Target("shares", shares={g: float(rng.choice([0, 0.1, 0.2, 0.25, 0.5])) + (g == "a") * 0.3
                                          for g in groups}, constraints=cons)
    else:
        caps = {g: int(rng.integers(0, 5)) for g in groups if rng.random() < 0.7}
        target = Target("caps", caps=caps, default_cap=None if rng.random() < 0.5 else int(rng.integers(0, 4)),
                        constraints=cons)
    size = None if rng.random() < 0.35 else int(rng.integers(0, n + 1))
    keep = bool(rng.random() < 0.7)
    return labels, groups, q, override, accepted, eligible, celeba, target, size, keep


@pytest.mark.parametrize("with_constraints", [False, True])
def test_random_small_cases_match_brute_force(with_constraints):
    rng = np.random.default_rng(1234 + with_constraints)
    n_feasible = n_infeasible = 0
    for _ in range(250):
        labels, groups, q, override, accepted, eligible, celeba, target, size, keep = random_case(rng, with_constraints)
        c = cands(labels, q, override=override, accepted=accepted, groups=groups, celeba=celeba, eligible=eligible)
        p = propose(c, target, size=size, keep_overrides=keep)
        ref = brute_force(labels, groups, q, override, eligible, celeba, target, size, keep)
        case = (labels, groups, q.tolist(), override.tolist(), eligible.tolist(), target, size, keep)
        assert p.feasible == (ref is not None), (case, p.message)
        if ref is None:
            n_infeasible += 1
            assert len(p.accept_ids) == 0 and len(p.reject_ids) == 0
            assert p.shortfall or p.over or "cannot be met" in p.message
            continue
        n_feasible += 1
        value, sets, ref_size = ref
        assert p.total_quality == pytest.approx(value, abs=1e-9), case
        assert p.size == ref_size, case
        sel = tuple(int(i) for i in p.selected_ids)
        assert sel in sets, case
        acc = set(np.flatnonzero(accepted))
        assert set(p.accept_ids) == set(sel) - acc and set(p.reject_ids) == acc - set(sel)
    assert n_feasible > 80 and n_infeasible > 20  # both branches really exercised


# ------------------------------------------------------------------------------- integer-program reference

def milp_best(q, group, G, forced, free, count_lo, count_hi, total=None, has=None, min_share=None, caps=None,
              maximise_equal=False):
    """Maximise total quality over 0/1 choices of the free images (forced ones fixed at 1) with per-group counts in
    [count_lo, count_hi] (and sum = total), by scipy's HiGHS MILP. Independent of the implementation."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(q)
    lb = forced.astype(float)
    ub = (forced | free).astype(float)
    A, lo, hi = [], [], []
    for g in range(G):
        row = (group == g).astype(float)
        A.append(row)
        lo.append(count_lo[g])
        hi.append(count_hi[g])
        if has is not None:
            A.append(row * has - min_share * row)  # with >= min x count  <=>  with >= ceil(min x count)
            lo.append(-1e-9)
            hi.append(np.inf)
    if total is not None:
        A.append((group >= 0).astype(float))
        lo.append(total)
        hi.append(total)
    cost = -np.nan_to_num(q)
    integrality = np.ones(n)
    if maximise_equal:  # one extra integer variable k; every group's count equals k; maximise k
        A = [np.append(a, 0.0) for a in A]
        for g in range(G):
            row = np.append((group == g).astype(float), -1.0)
            A.append(row)
            lo.append(0)
            hi.append(0)
        cost = np.zeros(n + 1)
        cost[-1] = -1
        lb, ub, integrality = np.append(lb, 1), np.append(ub, n), np.ones(n + 1)
    res = milp(cost, integrality=integrality, bounds=Bounds(lb, ub),
               constraints=[LinearConstraint(np.array(A), lo, hi)], options={"mip_rel_gap": 0})
    return res


def big_case(rng, n=2500, p_override=0.05):
    groups = [(r, g) for r in RACE7 for g in GENDER]
    G = len(groups)
    w = rng.dirichlet(np.ones(G) * 2)
    gi = rng.choice(G, n, p=w)
    gi[rng.random(n) < 0.03] = -1
    labels = [groups[i] if i >= 0 else None for i in gi]
    q = rng.normal(22, 4, n)
    override = np.where(rng.random(n) < p_override, rng.choice([1, -1], n), 0)
    accepted = (q > 21) | (override == 1)
    accepted &= override != -1
    return groups, gi, labels, q, override, accepted


def test_large_random_uniform_cases_match_an_integer_program():
    rng = np.random.default_rng(7)
    for trial in range(3):
        groups, gi, labels, q, override, accepted = big_case(rng)
        G = len(groups)
        c = cands(labels, q, override=override, accepted=accepted, groups=groups)
        forced, free = override == 1, (gi >= 0) & (override != -1) & (override != 1)
        # As large as possible: the largest common count, then the best quality at that count.
        p = propose(c, size=None)
        res = milp_best(q, gi, G, forced, free, [0] * G, [np.inf] * G, maximise_equal=True)
        k = int(round(res.x[-1]))
        assert p.feasible and p.size == k * G
        res = milp_best(q, gi, G, forced, free, [k] * G, [k] * G)
        assert p.total_quality == pytest.approx(-res.fun, rel=1e-9)
        # A size that is not a multiple of the number of groups: every largest-remainder rounding is allowed.
        N = int(k * G * 0.8) + 5
        p = propose(c, size=N)
        res = milp_best(q, gi, G, forced, free, [N // G] * G, [N // G + 1] * G, total=N)
        assert p.feasible and res.status == 0
        assert p.total_quality == pytest.approx(-res.fun, rel=1e-9)


def test_large_random_shares_caps_and_attribute_cases_match_an_integer_program():
    rng = np.random.default_rng(11)
    groups, gi, labels, q, override, accepted = big_case(rng, n=3000, p_override=0.01)
    G = len(groups)
    forced, free = override == 1, (gi >= 0) & (override != -1) & (override != 1)
    c = cands(labels, q, override=override, accepted=accepted, groups=groups)

    # Shares: the counts obey largest remainder (checked exactly), and the images are optimal for those counts.
    shares = {g: float(s) for g, s in zip(groups, rng.choice([0.5, 1, 1.5, 2], G))}
    p = propose(c, Target("shares", shares=shares), size=None)
    assert p.feasible and p.size > 100
    w = [Fraction(str(shares[g])) for g in groups]
    quota = [wi / sum(w) * p.size for wi in w]
    counts = [p.target_counts[g] for g in groups]
    assert all(int(x) <= cnt <= int(x) + 1 for x, cnt in zip(quota, counts)) and sum(counts) == p.size
    up = [x - int(x) for x, cnt in zip(quota, counts) if cnt > int(x)]
    down = [x - int(x) for x, cnt in zip(quota, counts) if cnt == int(x)]
    assert not up or not down or min(up) >= max(down)
    res = milp_best(q, gi, G, forced, free, counts, counts)
    assert p.total_quality == pytest.approx(-res.fun, rel=1e-9)

    # Caps with a total size.
    caps = {g: int(x) for g, x in zip(groups, rng.integers(20, 120, G))}
    N = int(sum(min(caps[g], int(((gi == i) & (free | forced)).sum())) for i, g in enumerate(groups)) * 0.7)
    p = propose(c, Target("caps", caps=caps), size=N)
    res = milp_best(q, gi, G, forced, free, [0] * G, [caps[g] for g in groups], total=N)
    assert p.feasible and res.status == 0
    assert p.total_quality == pytest.approx(-res.fun, rel=1e-9)

    # At least 40% smiling in every group, uniform counts.
    celeba = np.full((len(q), 40), 0.1)
    celeba[:, SMILING] = rng.random(len(q)) ** 2  # a minority smiles, so the constraint binds
    has = celeba[:, SMILING] >= 0.5
    c2 = cands(labels, q, override=np.zeros(len(q)), accepted=accepted, groups=groups, celeba=celeba)
    t = Target(constraints=(AttributeConstraint("Smiling", min_share=0.4),))
    free2 = gi >= 0
    p = propose(c2, t, size=None)
    assert p.feasible
    k = p.size // G
    res = milp_best(q, gi, G, np.zeros(len(q), bool), free2, [k] * G, [k] * G, has=has, min_share=0.4)
    assert p.total_quality == pytest.approx(-res.fun, rel=1e-9)
    res = milp_best(q, gi, G, np.zeros(len(q), bool), free2, [k + 1] * G, [k + 1] * G, has=has, min_share=0.4)
    assert res.status != 0  # one more per group is impossible, as the proposal says

    # Caps with a total size and the same attribute share (the exact dynamic programme over groups).
    caps = {g: int(x) for g, x in zip(groups, rng.integers(10, 80, G))}
    N = int(sum(caps.values()) * 0.6)
    p = propose(c2, Target("caps", caps=caps, constraints=t.constraints), size=N)
    res = milp_best(q, gi, G, np.zeros(len(q), bool), free2, [0] * G, [caps[g] for g in groups], total=N,
                    has=has, min_share=0.4)
    assert p.feasible and res.status == 0
    assert p.total_quality == pytest.approx(-res.fun, rel=1e-9)


def test_one_hundred_thousand_images_in_reasonable_time():
    rng = np.random.default_rng(3)
    groups, gi, labels, q, override, accepted = big_case(rng, n=100_000, p_override=0.01)
    c = Candidates(np.arange(len(q)), gi, groups, q, override, accepted, np.ones(len(q), bool))
    t0 = time.perf_counter()
    p = propose(c, size=None)
    dt = time.perf_counter() - t0
    assert p.feasible
    smallest = min(int(((gi == g) & (override != -1)).sum()) for g in range(len(groups)))
    assert p.size == smallest * len(groups)
    assert dt < 10, dt


# ------------------------------------------------------------------------------------------------ parsing

def test_target_and_constraint_parsing():
    groups = [(r, g) for r in RACE7 for g in GENDER]
    t = parse_target("caps:50,east asian/female=10,Latino Hispanic/Male=3", groups)
    assert t.kind == "caps" and t.default_cap == 50
    assert t.caps == {("East Asian", "Female"): 10, ("Latino_Hispanic", "Male"): 3}
    t = parse_target("shares:White/Male=0.5,Black/Female=0.5", groups)
    assert t.shares == {("White", "Male"): 0.5, ("Black", "Female"): 0.5}
    assert parse_target(None, groups).kind == "uniform"
    for bad in ("caps:White/Male=2.5", "shares:Martian/Male=1", "caps:", "quotas:1", "shares:White/Male=x"):
        with pytest.raises(FaceQCError):
            parse_target(bad, groups)
    con = parse_constraint("smiling>=40%,Smiling<=0.6")
    assert (con.attribute, con.min_share, con.max_share) == ("Smiling", 0.4, 0.6)
    assert parse_constraint("Eyeglasses=0.2").share == 0.2
    for bad in ("Smiling>0.4", "Wings>=0.2", "Smiling>=1.5", "Smiling>=0.1,Bald<=0.2"):
        with pytest.raises(FaceQCError):
            parse_constraint(bad)


def test_bad_input_raises_a_readable_error():
    c = cands(["a", "b"], [1, 2])
    with pytest.raises(FaceQCError):
        propose(c, size=-1)
    with pytest.raises(FaceQCError):
        propose(c, Target("shares", shares={"z": 1.0}))
    with pytest.raises(FaceQCError):
        propose(c, Target(constraints=(AttributeConstraint("Smiling", min_share=0.5),)))  # no CelebA numbers
