"""Demographic statistics (counts and shares per FairFace group) and the export report, against counts made by hand
and by a plain per-image loop."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from faceqc_gui.engine.balance import (
    ACCEPTED_COLOUR, ALL_COLOUR, UNCERTAIN, UNKNOWN, group_mask, group_stats, joint_codes, snapshot_stats,
    write_balance_report,
)
from faceqc_gui.engine.errors import FaceQCError
from faceqc_gui.engine.labels import FAIRFACE_HEADS, GENDER, RACE7


def onehotish(labels, names, p=0.9):
    """Probabilities with ``p`` on the named label and the rest spread evenly (NaN row for None)."""
    out = np.full((len(labels), len(names)), np.nan)
    for i, lab in enumerate(labels):
        if lab is not None:
            out[i] = (1 - p) / (len(names) - 1)
            out[i, names.index(lab)] = p
    return out


def test_top_label_counts_by_hand():
    race = ["White", "White", "Black", "Indian", None, "White"]
    gender = ["Male", "Female", "Female", "Female", None, "Male"]
    probs = {"race7": onehotish(race, RACE7), "gender": onehotish(gender, GENDER)}
    accepted = np.array([1, 0, 1, 1, 1, 0], bool)
    st = group_stats(probs, accepted, by=("race7", "gender"))
    j = st.joint
    row = {g: (a, c) for g, a, c in zip(j.groups, j.all, j.accepted)}
    assert row[("White", "Male")] == (2, 1)
    assert row[("White", "Female")] == (1, 0)
    assert row[("Black", "Female")] == (1, 1)
    assert row[("Indian", "Female")] == (1, 1)
    assert row[(UNKNOWN, UNKNOWN)] == (1, 1)  # no face / no FairFace: its own group, counted
    assert row[("Black", "Male")] == (0, 0)   # empty real groups are listed
    assert len(j.groups) == 7 * 2 + 1
    assert st.n_all == 6 and st.n_accepted == 4
    assert j.share_accepted[j.index(("White", "Male"))] == pytest.approx(0.25)
    g = st.marginals["gender"]
    assert dict(zip(g.groups, g.all)) == {("Male",): 2, ("Female",): 3, (UNKNOWN,): 1}
    rl, cl, m = j.matrix("all")
    assert rl[:7] == list(RACE7) and cl[:2] == list(GENDER)
    assert m[rl.index("White"), cl.index("Male")] == 2


def test_low_confidence_predictions_are_counted_apart():
    probs = {"race4": np.array([[0.9, 0.05, 0.03, 0.02], [0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1]]),
             "gender": np.array([[0.8, 0.2], [0.55, 0.45], [0.3, 0.7]])}
    st = group_stats(probs, np.ones(3, bool), by=("race4", "gender"), min_conf=0.6)
    row = dict(zip(st.joint.groups, st.joint.all))
    assert row[("White", "Male")] == 1
    assert row[(UNCERTAIN, UNCERTAIN)] == 1
    assert row[("Asian", "Female")] == 1
    st0 = group_stats(probs, np.ones(3, bool), by=("race4", "gender"))
    assert dict(zip(st0.joint.groups, st0.joint.all))[("White", "Male")] == 2


def test_expected_counts_are_sums_of_probabilities():
    probs = {"race4": np.array([[0.5, 0.25, 0.25, 0.0], [0.2, 0.2, 0.2, 0.4]]),
             "gender": np.array([[0.6, 0.4], [0.1, 0.9]])}
    st = group_stats(probs, np.array([True, False]), by=("race4", "gender"), mode="expected")
    row = {g: (a, c) for g, a, c in zip(st.joint.groups, st.joint.all, st.joint.accepted)}
    assert row[("White", "Male")] == pytest.approx((0.5 * 0.6 + 0.2 * 0.1, 0.5 * 0.6))
    assert row[("Indian", "Female")] == pytest.approx((0.4 * 0.9, 0.0))
    assert dict(zip(st.marginals["race4"].groups, st.marginals["race4"].all))[("White",)] == pytest.approx(0.7)
    assert st.joint.n_all == pytest.approx(2.0)


def random_probs(rng, n, p_missing=0.1):
    probs = {}
    missing = rng.random(n) < p_missing
    for head, labels in FAIRFACE_HEADS.items():
        p = rng.dirichlet(np.ones(len(labels)) * 0.4, n)
        p[missing] = np.nan
        probs[head] = p
    probs["race4"][rng.random(n) < 0.05] = np.nan  # the optional 4-race file may be absent for some images
    return probs


@pytest.mark.parametrize("mode", ["top", "expected"])
def test_tables_match_a_per_image_loop(mode):
    rng = np.random.default_rng(5)
    n = 400
    probs = random_probs(rng, n)
    accepted = rng.random(n) < 0.5
    population = rng.random(n) < 0.9
    min_conf = 0.45
    by = ("race7", "age")
    st = group_stats(probs, accepted, by=by, mode=mode, min_conf=min_conf, population=population)

    def weights(head, i):
        labels = FAIRFACE_HEADS[head]
        p = probs[head][i]
        if not np.isfinite(p).all():
            return {UNKNOWN: 1.0}
        if p.max() < min_conf:
            return {UNCERTAIN: 1.0}
        if mode == "top":
            return {labels[int(np.argmax(p))]: 1.0}
        return {lab: float(v) / float(p.sum()) for lab, v in zip(labels, p)}

    ref_all, ref_acc = {}, {}
    for i in range(n):
        if not population[i]:
            continue
        for a, wa in weights(by[0], i).items():
            for b, wb in weights(by[1], i).items():
                ref_all[(a, b)] = ref_all.get((a, b), 0.0) + wa * wb
                if accepted[i]:
                    ref_acc[(a, b)] = ref_acc.get((a, b), 0.0) + wa * wb
    got_all = dict(zip(st.joint.groups, st.joint.all))
    got_acc = dict(zip(st.joint.groups, st.joint.accepted))
    for g in set(ref_all) | set(got_all):
        assert got_all.get(g, 0.0) == pytest.approx(ref_all.get(g, 0.0), abs=1e-9), g
        assert got_acc.get(g, 0.0) == pytest.approx(ref_acc.get(g, 0.0), abs=1e-9), g
    assert st.n_all == population.sum() and st.n_accepted == (population & accepted).sum()
    assert st.joint.share_all.sum() == pytest.approx(1.0) and st.joint.share_accepted.sum() == pytest.approx(1.0)
    # The joint table's margins are the marginal tables.
    for k, head in enumerate(by):
        marg = st.marginals[head]
        for g, v in zip(marg.groups, marg.all):
            assert sum(x for jg, x in zip(st.joint.groups, st.joint.all) if jg[k] == g[0]) == pytest.approx(v)
    assert set(st.marginals) == {"race7", "race4", "gender", "age"}


@pytest.mark.parametrize("mode", ["top", "expected"])
@pytest.mark.parametrize("by", [("race7",), ("race4", "gender"), ("race7", "gender", "age")])
def test_a_reused_counter_gives_what_a_fresh_count_gives_for_every_accepted_set(mode, by):
    # The Demographics panel keeps one GroupCounter while the threshold moves: its numbers must stay exact.
    from faceqc_gui.engine.balance_stats import GroupCounter

    rng = np.random.default_rng(11)
    n = 300
    probs = random_probs(rng, n)
    population = rng.random(n) < 0.9
    counter = GroupCounter(probs, by=by, mode=mode, min_conf=0.4, population=population)
    for frac in (0.0, 0.3, 0.7, 1.0):
        accepted = rng.random(n) < frac
        fresh = group_stats(probs, accepted, by=by, mode=mode, min_conf=0.4, population=population)
        got = counter.stats(accepted)
        for (name, t), (_, f) in zip(got.tables(), fresh.tables()):
            assert t.groups == f.groups, name
            np.testing.assert_allclose(t.all, f.all, atol=1e-9)
            np.testing.assert_allclose(t.accepted, f.accepted, atol=1e-9)
        assert got.n_accepted == int((accepted & population).sum())


def test_group_mask_selects_exactly_the_counted_images():
    rng = np.random.default_rng(9)
    probs = random_probs(rng, 300)
    st = group_stats(probs, np.ones(300, bool), by=("race7", "gender"), min_conf=0.5)
    codes, groups = joint_codes(probs, ("race7", "gender"), min_conf=0.5)
    for g, count in zip(st.joint.groups, st.joint.all):
        m = group_mask(probs, ("race7", "gender"), g, min_conf=0.5)
        assert m.sum() == count
        assert (m == (codes == groups.index(g))).all()


def test_bad_input_is_a_readable_error():
    probs = {"race7": np.full((2, 7), 1 / 7), "gender": np.full((2, 2), 0.5)}
    ok = np.ones(2, bool)
    for kwargs in ({"by": ("race7", "hair")}, {"by": ("race7", "race7")}, {"by": ("race7", "age")},
                   {"mode": "median"}, {"min_conf": 1.5}, {"by": ("race7", "race4")}):
        with pytest.raises(FaceQCError):
            group_stats(probs, ok, **kwargs)
    with pytest.raises(FaceQCError):
        group_stats({"race7": np.zeros((2, 4))}, ok, by=("race7",))
    with pytest.raises(FaceQCError):
        group_stats(probs, np.ones(3, bool), by=("race7",))
    with pytest.raises(FaceQCError):
        group_mask(probs, ("race7", "gender"), ("Martian", "Male"))
    empty = group_stats(probs, np.zeros(2, bool), by=("gender",))
    assert empty.n_accepted == 0 and (empty.joint.share_accepted == 0).all()


def fake_snapshot(rng, n=60):
    probs = random_probs(rng, n, p_missing=0.0)
    n_faces = rng.choice([-1, 0, 1, 2], n, p=[0.1, 0.1, 0.6, 0.2])
    no_face = n_faces <= 0
    for h in probs:
        probs[h][no_face] = np.nan
    accepted = rng.random(n) < 0.5
    return SimpleNamespace(
        ids=np.arange(1, n + 1), n_faces=n_faces, error=rng.random(n) < 0.1, missing=rng.random(n) < 0.1,
        score=rng.normal(22, 3, n), override=np.zeros(n, np.int8), celeba=np.full((n, 40), np.nan),
        decide=lambda threshold: (accepted & ~no_face, np.zeros(n, np.int8)), **probs), accepted & ~no_face


def test_snapshot_stats_count_scored_present_images_only():
    rng = np.random.default_rng(2)
    snap, accepted = fake_snapshot(rng)
    st = snapshot_stats(snap, 20.0, by=("race4", "gender"))
    counted = (snap.n_faces >= 0) & ~snap.error & ~snap.missing
    assert st.n_all == counted.sum()
    assert st.n_accepted == (counted & accepted).sum()
    unknown = dict(zip(st.joint.groups, st.joint.all)).get((UNKNOWN, UNKNOWN), 0)
    assert unknown == (counted & (snap.n_faces == 0)).sum()


def test_report_csv_and_chart_show_the_numbers(tmp_path):
    rng = np.random.default_rng(4)
    n = 250
    probs = random_probs(rng, n)
    accepted = rng.random(n) < 0.4
    st = group_stats(probs, accepted, by=("race4", "gender"), min_conf=0.4)
    csv_path, png_path = write_balance_report(tmp_path / "export", st)
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    tables = st.tables()
    assert len(rows) == sum(len(t.groups) for _, t in tables)
    by_key = {(r["table"], r["group"]): r for r in rows}
    for name, t in tables:
        for g, a, c, sa in zip(t.groups, t.all, t.accepted, t.share_accepted):
            r = by_key[(name, " / ".join(g))]
            assert int(r["all_count"]) == a and int(r["accepted_count"]) == c
            assert float(r["accepted_share"]) == pytest.approx(sa, abs=1e-6)
    assert by_key[("race4 x gender", "White / Female")]["min_conf"] == "0.4"

    # Each table's bars, top to bottom, are proportional to the shares they stand for.
    img = np.asarray(Image.open(png_path).convert("RGB"))
    for colour, attr in ((ACCEPTED_COLOUR, "share_accepted"), (ALL_COLOUR, "share_all")):
        mask = (img == colour).all(axis=2)
        mask[:, :200] = False  # the legend swatches
        lengths = mask.sum(axis=1)
        bars, y = [], 0
        while y < len(lengths):
            if lengths[y]:
                bars.append(int(lengths[y]))
                while y < len(lengths) and lengths[y]:
                    y += 1
            y += 1
        expected = [(getattr(t, attr), max(t.share_all.max(), t.share_accepted.max())) for _, t in tables]
        assert len(bars) == sum(int((sh > 0).sum()) for sh, _ in expected)  # every share of 1/250 or more shows
        start = 0
        for sh, top in expected:
            sh = sh[sh > 0]
            got = np.array(bars[start: start + len(sh)])
            start += len(sh)
            # The table's largest share fills the 460 px bar width; every other bar is to scale (1 px rounding).
            assert np.abs(got - sh * 460 / top).max() <= 1
