"""The demographics panel against a real project: its bars and cross-table show the numbers one gets by counting the
stored results by hand, they follow the threshold, overrides and options, and clicks ask for the right group filter."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pytestqt", reason="the GUI tests need pytest-qt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402

from faceqc_gui.engine.labels import AGE9, FAIRFACE_HEADS, GENDER, RACE4, RACE7  # noqa: E402
from faceqc_gui.engine.records import Detection, FaceResult, ImageResult  # noqa: E402
from faceqc_gui.engine.store import Project  # noqa: E402
from faceqc_gui.widgets.demographics import DemographicsPanel, group_filter_mask  # noqa: E402

pytestmark = pytest.mark.gui
THRESHOLD = 20.0
TOP_P = (0.35, 0.45, 0.8, 0.95)  # top probabilities, far from the confidence thresholds the tests use


def probs_dict(rng, labels, top):
    """Probabilities with the label ``top`` most likely (its probability drawn from TOP_P)."""
    k = len(labels)
    p_top = float(rng.choice(TOP_P))
    rest = rng.dirichlet(np.ones(k - 1)) * (1 - p_top)
    # Keep the named label on top even when its probability is low.
    rest = np.minimum(rest, p_top * 0.9)
    rest *= (1 - p_top) / rest.sum()
    if rest.max() >= p_top:
        rest = np.full(k - 1, (1 - p_top) / (k - 1))
    vals = list(rest)
    vals.insert(labels.index(top), p_top)
    return {lab: float(v) for lab, v in zip(labels, vals)}


def fairface(rng, race, gender, age):
    race4 = {"White": "White", "Black": "Black", "Latino_Hispanic": "White", "East Asian": "Asian",
             "Southeast Asian": "Asian", "Indian": "Indian", "Middle Eastern": "White"}[race]
    out = {"race7": probs_dict(rng, RACE7, race), "race4": probs_dict(rng, RACE4, race4),
           "gender": probs_dict(rng, GENDER, gender), "age": probs_dict(rng, AGE9, age)}
    for h in FAIRFACE_HEADS:
        out[f"{h}_top"] = max(out[h], key=out[h].get)
    return out


def face(i, norm, ff, size=100.0):
    det = Detection(np.array([0, 0, size, size], np.float32), np.zeros((5, 2), np.float32), 0.99)
    return FaceResult(i, det, magface_norm=norm, fairface=ff)


def make_results(n=80, seed=0):
    """Images with one face (most), two faces (the larger one decides), none, or a load error."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        path = f"/data/img{i:04d}.jpg"
        kind = rng.random()
        if kind < 0.06:
            out.append(ImageResult(path, error="not an image"))
            continue
        if kind < 0.14:
            out.append(ImageResult(path, 100, 100, faces=[]))
            continue
        ff = fairface(rng, str(rng.choice(RACE7, p=[.4, .15, .1, .1, .1, .1, .05])), str(rng.choice(GENDER)),
                      str(rng.choice(AGE9)))
        faces = [face(0, float(rng.normal(21, 3)), ff)]
        if kind > 0.9:  # a smaller second face with other labels must not count
            faces.append(face(1, 30.0, fairface(rng, "Black", "Female", "70+"), size=20.0))
        out.append(ImageResult(path, 100, 100, faces=faces))
    return out


@pytest.fixture
def project(tmp_path):
    results = make_results()
    with Project.create(tmp_path / "p.faceqc") as p:
        p.store_results(results)
        yield p, results


def by_hand(results, snapshot, threshold, head, min_conf=0.0, mode="top", other=None):
    """Counts per label of ``head`` (or per (head, other) pair) for all scored images and the accepted ones, from the
    ImageResults themselves; overrides are read from the snapshot by path."""
    override = dict(zip(snapshot.paths, snapshot.override.tolist()))
    all_c: dict = {}
    acc_c: dict = {}

    def spread(r):
        f = r.primary_face
        out = []
        for h in (head, other) if other else (head,):
            probs = f.fairface[h] if f is not None else None
            if probs is None:
                out.append({"unknown": 1.0})
            elif max(probs.values()) < min_conf:
                out.append({"uncertain": 1.0})
            elif mode == "top":
                out.append({max(probs, key=probs.get): 1.0})
            else:
                s = sum(probs.values())
                out.append({k: v / s for k, v in probs.items()})
        if other is None:
            return out[0]
        return {(a, b): pa * pb for a, pa in out[0].items() for b, pb in out[1].items()}

    for r in results:
        if r.error is not None:
            continue
        f = r.primary_face
        ov = override[r.path]
        accepted = ov == 1 or (ov == 0 and f is not None and f.magface_norm >= threshold)
        for key, w in spread(r).items():
            all_c[key] = all_c.get(key, 0.0) + w
            if accepted:
                acc_c[key] = acc_c.get(key, 0.0) + w
    return all_c, acc_c


def read_bars(panel):
    """{label: (all count, all share, accepted count, accepted share)} as displayed (texts and bar lengths)."""
    out = {}
    for i, label in enumerate(panel.bar_labels()):
        nums = []
        for k, bars in enumerate((panel.all_bars, panel.accepted_bars)):
            count, share = panel.bar_texts[2 * i + k].toPlainText().split("·")
            nums.append(float(count.replace(",", "")))
            nums.append(float(share.strip().rstrip("%")) / 100)
            # The bar's length is the share, in percent.
            assert bars.opts["width"][i] == pytest.approx(nums[-1] * 100, abs=0.051)
        out[label] = tuple(nums)
    return out


def read_table(panel):
    """{(row label, col label): (accepted, all)} parsed from the cell texts, with "All" for the totals."""
    t = panel.table
    rows = [t.verticalHeaderItem(i).text() for i in range(t.rowCount())]
    cols = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    out = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            first = t.item(i, j).text().split("\n")[0]
            acc, al = (float(x.replace(",", "")) for x in first.split("/"))
            out[(r, c)] = (acc, al)
    return out


def shown(label):
    return f"({label})" if label in ("uncertain", "unknown") else label.replace("_", "/")


def check_against_hand(panel, results, snap, threshold, tol=0.0):
    head = panel.head
    all_c, acc_c = by_hand(results, snap, threshold, head, panel.min_conf, panel.mode)
    bars = read_bars(panel)
    n_all, n_acc = sum(all_c.values()), sum(acc_c.values())
    assert set(bars) >= set(all_c)
    for label, (a, sa, c, sc) in bars.items():
        assert a == pytest.approx(all_c.get(label, 0), abs=tol + 1e-9), label
        assert c == pytest.approx(acc_c.get(label, 0), abs=tol + 1e-9), label
        assert sa == pytest.approx(all_c.get(label, 0) / n_all, abs=0.0006)
        assert sc == pytest.approx(acc_c.get(label, 0) / n_acc if n_acc else 0, abs=0.0006)
    a, b = panel.cross
    all_x, acc_x = by_hand(results, snap, threshold, a, panel.min_conf, panel.mode, other=b)
    table = read_table(panel)
    for (r, c), (acc, al) in table.items():
        if r == "All" and c == "All":
            exp_acc, exp_all = sum(acc_x.values()), sum(all_x.values())
        elif r == "All":
            exp_acc = sum(v for k, v in acc_x.items() if shown(k[1]) == c)
            exp_all = sum(v for k, v in all_x.items() if shown(k[1]) == c)
        elif c == "All":
            exp_acc = sum(v for k, v in acc_x.items() if shown(k[0]) == r)
            exp_all = sum(v for k, v in all_x.items() if shown(k[0]) == r)
        else:
            key = next((k for k in set(all_x) | set(acc_x) if (shown(k[0]), shown(k[1])) == (r, c)), None)
            exp_acc, exp_all = acc_x.get(key, 0), all_x.get(key, 0)
        assert acc == pytest.approx(exp_acc, abs=tol + 1e-9), (r, c)
        assert al == pytest.approx(exp_all, abs=tol + 1e-9), (r, c)
    # Every group with images is in the table.
    assert {(shown(k[0]), shown(k[1])) for k, v in all_x.items() if v > 0} <= set(table)


@pytest.fixture
def panel(qtbot):
    w = DemographicsPanel()
    qtbot.addWidget(w)
    w.resize(520, 820)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_numbers_match_counts_made_from_the_stored_results(project, panel):
    p, results = project
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    check_against_hand(panel, results, snap, THRESHOLD)
    assert "(unknown)" in [shown(x) for x in panel.bar_labels()]  # images without a face are counted, apart
    n_scored = sum(r.error is None for r in results)
    assert f"{n_scored:,}</b> scored" in panel.summary.text()
    for head, cross in (("age", ("race7", "age")), ("race4", ("race4", "gender")), ("gender", ("gender", "age"))):
        panel.set_head(head)
        panel.set_cross(cross)
        check_against_hand(panel, results, snap, THRESHOLD)


def test_threshold_and_overrides_update_the_accepted_numbers(project, panel):
    p, results = project
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    before = read_bars(panel)
    panel.set_accepted(snap.decide(23.0)[0])
    check_against_hand(panel, results, snap, 23.0)
    assert read_bars(panel) != before
    # Manual decisions win over the threshold: accept every low-scoring White image, reject every Black one.
    white = [int(i) for i, r in zip(snap.ids, results)
             if r.primary_face is not None and r.error is None and r.primary_face.fairface["race7_top"] == "White"]
    black = [int(i) for i, r in zip(snap.ids, results)
             if r.primary_face is not None and r.error is None and r.primary_face.fairface["race7_top"] == "Black"]
    p.apply_overrides({**{i: "accept" for i in white}, **{i: "reject" for i in black}})
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(23.0)[0])
    check_against_hand(panel, results, snap, 23.0)
    bars = read_bars(panel)
    assert bars["White"][2] == len(white) and bars["Black"][2] == 0


def test_decision_only_updates_are_free_when_nothing_moves_but_data_edits_always_recount(project, panel):
    p, results = project
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    stats = panel.stats
    scores = snap.score[np.isfinite(snap.score)]
    nudge = THRESHOLD + 0.5 * float(np.min(np.abs(scores - THRESHOLD)))  # a step that moves no image
    panel.set_accepted(snap.decide(nudge)[0])
    assert panel.stats is stats
    panel.set_accepted(snap.decide(23.0)[0])
    assert panel.stats is not stats
    check_against_hand(panel, results, snap, 23.0)
    # Streamed results edit the snapshot in place: an image that had no face now has a Black face.
    row = next(i for i, r in enumerate(results) if r.error is None and r.primary_face is None)
    before = read_bars(panel)
    snap.n_faces[row] = 1
    snap.race7[row] = [0.0, 1.0, 0, 0, 0, 0, 0]
    panel.set_data(snap, snap.decide(23.0)[0])
    after = read_bars(panel)
    assert after["Black"][0] == before["Black"][0] + 1 and after["unknown"][0] == before["unknown"][0] - 1


def test_expected_value_and_minimum_confidence(project, panel):
    p, results = project
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    top = read_bars(panel)
    panel.set_mode("expected")
    check_against_hand(panel, results, snap, THRESHOLD, tol=0.051)  # shown with one decimal
    assert read_bars(panel) != top
    panel.set_mode("top")
    panel.set_min_conf(0.6)
    check_against_hand(panel, results, snap, THRESHOLD)
    bars = read_bars(panel)
    n_low = sum(1 for r in results if r.error is None and r.primary_face is not None
                and max(r.primary_face.fairface["race7"].values()) < 0.6)
    assert n_low > 0 and bars["uncertain"][0] == n_low
    panel.set_mode("expected")
    check_against_hand(panel, results, snap, THRESHOLD, tol=0.051)


def click_view(qtbot, panel, scene_pos):
    view_pos = panel.plot.mapFromScene(scene_pos)
    qtbot.mouseClick(panel.plot.viewport(), Qt.MouseButton.LeftButton, pos=view_pos)


def test_clicking_a_bar_or_its_label_asks_for_that_group(project, panel, qtbot):
    p, _ = project
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    labels = panel.bar_labels()
    row = labels.index("Black")
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        click_view(qtbot, panel, panel.bar_scene_pos(row, "all"))
    assert sig.args == [{"race7": "Black"}]
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        click_view(qtbot, panel, panel.bar_scene_pos(labels.index("White"), "accepted"))
    assert sig.args == [{"race7": "White"}]
    # The row's label on the axis is a target too.
    axis = panel.plot.getPlotItem().getAxis("left").sceneBoundingRect()
    y = panel.bar_scene_pos(row, "all").y()
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        click_view(qtbot, panel, QPointF(axis.center().x(), y))
    assert sig.args == [{"race7": "Black"}]
    panel.set_head("gender")
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        click_view(qtbot, panel, panel.bar_scene_pos(panel.bar_labels().index("Female"), "accepted"))
    assert sig.args == [{"gender": "Female"}]
    # Below the last row: nothing.
    vb = panel.plot.getPlotItem().getViewBox()
    with qtbot.assertNotEmitted(panel.groupFilterRequested, wait=100):
        click_view(qtbot, panel, vb.mapViewToScene(QPointF(1.0, len(panel.bar_labels()) - 0.45)))


def test_clicking_a_cell_or_header_asks_for_that_group_and_the_mask_matches(project, panel, qtbot):
    p, results = project
    snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    t = panel.table
    rows = [t.verticalHeaderItem(i).text() for i in range(t.rowCount())]
    cols = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    i, j = rows.index("East Asian"), cols.index("Female")

    def click_cell(r, c):
        rect = t.visualRect(t.model().index(r, c))
        qtbot.mouseClick(t.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())

    t.scrollToItem(t.item(i, j))
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        click_cell(i, j)
    group = sig.args[0]
    assert group == {"race7": "East Asian", "gender": "Female"}
    # The grid shows exactly the images counted in that cell.
    mask = group_filter_mask(snap, group, panel.min_conf)
    acc, al = read_table(panel)[("East Asian", "Female")]
    assert mask.sum() == al
    expect = {r.path for r in results if r.error is None and r.primary_face is not None
              and r.primary_face.fairface["race7_top"] == "East Asian"
              and r.primary_face.fairface["gender_top"] == "Female"}
    assert {snap.paths[k] for k in np.flatnonzero(mask)} == expect
    # The total column and row stand for one head alone; the corner clears the group filter.
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        t.cellClicked.emit(i, len(cols) - 1)
    assert sig.args == [{"race7": "East Asian"}]
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        t.horizontalHeader().sectionClicked.emit(j)
    assert sig.args == [{"gender": "Female"}]
    with qtbot.waitSignal(panel.groupFilterRequested, timeout=2000) as sig:
        t.cellClicked.emit(len(rows) - 1, len(cols) - 1)
    assert sig.args == [{}]
    assert group_filter_mask(snap, {}, 0.0).all()


def test_uncertain_group_filter_uses_the_panels_confidence(project, panel):
    p, results = project
    snap = p.snapshot()
    mask = group_filter_mask(snap, {"race7": "uncertain"}, 0.6)
    expect = {r.path for r in results if r.error is None and r.primary_face is not None
              and max(r.primary_face.fairface["race7"].values()) < 0.6}
    assert expect and {snap.paths[k] for k in np.flatnonzero(mask)} == expect


def test_options_survive_a_round_trip_and_bad_state_is_ignored(panel):
    panel.set_head("age")
    panel.set_mode("expected")
    panel.set_min_conf(0.35)
    panel.set_cross(("race4", "age"))
    state = panel.state()
    other = DemographicsPanel()
    other.restore_state(state)
    assert other.state() == state == {"head": "age", "mode": "expected", "min_conf": 0.35, "cross": ["race4", "age"]}
    other.restore_state({"head": "shoe size", "mode": 3, "min_conf": 7, "cross": ["race7", "race4"]})
    other.restore_state("garbage")
    assert other.state() == state


def test_bad_or_missing_data_shows_a_message_not_a_crash(project, panel):
    p, _ = project
    snap = p.snapshot()
    panel.set_data(None, None)
    assert panel.stats is None and "No project data" in panel.summary.text()
    panel.set_data(snap, np.ones(3, bool))  # a mask of the wrong length
    assert panel.stats is None and "Cannot compute" in panel.summary.text()
    no_ff = SimpleNamespace(**{k: getattr(snap, k) for k in ("ids", "n_faces", "error", "missing")},
                            race7=None, race4=None, gender=None, age=None)
    panel.set_data(no_ff, np.zeros(len(snap.ids), bool))
    assert panel.stats is None and "FairFace" in panel.summary.text()
    assert panel.table.rowCount() == 0 and len(panel.all_bars.opts["width"]) == 0
    empty = SimpleNamespace(ids=np.zeros(0, np.int64), n_faces=np.zeros(0, np.int16), error=np.zeros(0, bool),
                            missing=np.zeros(0, bool), **{h: np.zeros((0, len(v)), np.float32)
                                                          for h, v in FAIRFACE_HEADS.items()})
    panel.set_data(empty, np.zeros(0, bool))
    assert panel.stats is None and "No scored images yet" in panel.summary.text()  # said, not drawn as zeros
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    assert panel.stats is not None and panel.stats.n_all > 0


def test_recompute_for_100k_images_is_fast(panel):
    rng = np.random.default_rng(1)
    n = 100_000

    def probs(k):
        g = rng.gamma(np.ones((n, k)) * 0.5)
        return (g / g.sum(1, keepdims=True)).astype(np.float32)
    snap = SimpleNamespace(ids=np.arange(n), n_faces=np.ones(n, np.int16), error=np.zeros(n, bool),
                           missing=np.zeros(n, bool), **{h: probs(len(v)) for h, v in FAIRFACE_HEADS.items()})
    score = rng.normal(21, 3, n)
    panel.set_data(snap, score >= 20)  # first call: warms up caches and the graphics
    times = []
    for t in (19.0, 20.5, 22.0):
        t0 = time.perf_counter()
        panel.set_accepted(score >= t)
        times.append(time.perf_counter() - t0)
    assert panel.stats.n_accepted == int((score >= 22.0).sum())
    print(f"\ndemographics recompute for 100k images: {min(times) * 1000:.1f} ms (best of 3), "
          f"{max(times) * 1000:.1f} ms (worst)")
    assert min(times) < 1.0


def test_an_unscored_or_fairface_less_project_is_explained_not_shown_as_zeros(tmp_path, panel):
    # The no-model start: all-zero bars would read as "nobody is in the set"; the panel says why there is nothing.
    results = make_results()
    for r in results:
        for f in r.faces:
            f.fairface = None  # scored without the FairFace weights
    with Project.create(tmp_path / "noff.faceqc") as p:
        p.store_results(results)
        snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    assert "No FairFace labels" in panel.summary.text() and panel.bar_labels() == []
    assert panel.table.rowCount() == 0

    from faceqc_gui.engine.balance import candidates_from_snapshot, propose
    from faceqc_gui.engine.errors import FaceQCError

    with pytest.raises(FaceQCError, match="no image has FairFace labels"):
        propose(candidates_from_snapshot(snap, THRESHOLD, by=("race7", "gender")))

    empty = tmp_path / "empty.faceqc"
    with Project.create(empty) as p:
        (tmp_path / "imgs").mkdir()
        (tmp_path / "imgs" / "a.jpg").write_bytes(b"not scored yet")
        p.add_folder(tmp_path / "imgs")
        p.plan_scoring({"detector": "x"})
        snap = p.snapshot()
    panel.set_data(snap, snap.decide(THRESHOLD)[0])
    assert "No scored images yet" in panel.summary.text()
