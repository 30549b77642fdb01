"""The session (the UI thread's view of a project): live decisions, overrides with undo, filters, sorting, and the
in-place mirroring of streamed results, checked against the store itself."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytestmark = pytest.mark.gui

from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES  # noqa: E402
from faceqc_gui.engine.store import Project  # noqa: E402
from faceqc_gui.gui.rows import patch_snapshot, path_index  # noqa: E402
from faceqc_gui.gui.session import ProjectSession  # noqa: E402
from faceqc_gui.gui.state import ViewState  # noqa: E402
from test_gui_fixtures import FAKE_MODEL_IDS, fake_result, make_project  # noqa: E402


@pytest.fixture
def session(qapp, tmp_path):
    ppath, _, _ = make_project(tmp_path, n=80)
    s = ProjectSession()
    s.open(ppath)
    yield s
    s.close()


@pytest.mark.parametrize("mode", ["primary", "lowest"])
def test_patched_rows_equal_a_fresh_snapshot(tmp_path, mode):
    ppath, _, _ = make_project(tmp_path, n=30, scored=False)
    rng = np.random.default_rng(3)
    with Project.open(ppath) as p:
        p.set_score_mode(mode)
        before = p.snapshot()
        results = [fake_result(path, rng, n_faces=int(rng.integers(0, 4))) for path in before.paths[:20]]
        results[3].error, results[3].faces = "truncated image", []
        p.store_results(results)
        after = p.snapshot()
    rows, unknown = patch_snapshot(before, results, path_index(before))
    assert unknown == [] and sorted(rows.tolist()) == list(range(20))
    for name in ("score", "score_primary", "score_lowest", "n_faces", "error", "missing", "celeba", "race7", "race4",
                 "gender", "age", "width", "height"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name), err_msg=name)


def test_unknown_paths_are_reported_not_guessed(tmp_path):
    ppath, _, _ = make_project(tmp_path, n=3, scored=False)
    with Project.open(ppath) as p:
        snap = p.snapshot()
    rows, unknown = patch_snapshot(snap, [fake_result("/nowhere/x.jpg", np.random.default_rng(0))], path_index(snap))
    assert len(rows) == 0 and unknown == ["/nowhere/x.jpg"]


def test_threshold_redecides_live_and_commits_one_undo_step(session):
    s = session.snapshot
    for t in (15.0, 18.5, 23.0, 26.0):
        session.set_threshold(t)  # a drag: live, not written
        scored = (s.n_faces > 0) & ~s.error & np.isfinite(s.score)
        np.testing.assert_array_equal(session.accepted, scored & (s.score >= t))
    assert session.project.threshold == 20.0 and not session.project.can_undo()
    session.commit_threshold()
    assert session.project.threshold == 26.0
    assert session.undo() is not None
    assert session.threshold == 20.0 and session.project.threshold == 20.0
    scored = (s.n_faces > 0) & ~s.error & np.isfinite(s.score)
    np.testing.assert_array_equal(session.accepted, scored & (session.snapshot.score >= 20.0))


def test_override_wins_and_undo_redo_restore_it(session):
    s = session.snapshot
    low = s.ids[np.nan_to_num(s.score, nan=99) < 20.0][:3].tolist()
    high = s.ids[np.nan_to_num(s.score, nan=0) >= 20.0][:2].tolist()
    assert session.set_override(low, "accept") and session.set_override(high, "reject")
    rows_low, rows_high = session.rows_of_ids(low), session.rows_of_ids(high)
    assert session.accepted[rows_low].all() and not session.accepted[rows_high].any()
    session.set_threshold(5.0)  # nothing moves an overridden image
    assert not session.accepted[rows_high].any()
    session.set_threshold(20.0)
    session.undo()  # the reject
    assert session.accepted[rows_high].all() and session.accepted[rows_low].all()
    session.undo()  # the accept
    assert not session.accepted[rows_low].any()
    assert (session.snapshot.override == 0).all()
    session.redo()
    assert session.accepted[rows_low].all()
    with Project.open(session.project.path, readonly=True) as other:  # written to the file, not only in memory
        fresh = other.snapshot()
    np.testing.assert_array_equal(fresh.override, session.snapshot.override)


def test_filters_and_sort(session):
    s = session.snapshot
    session.view.status = {"rejected"}
    session.refilter()
    assert len(session.order) and not session.accepted[session.order].any()
    assert len(session.order) == int((~session.accepted).sum())
    session.set_threshold(10.0)  # the visible set follows the threshold when it filters by decision
    assert len(session.order) == int((~session.accepted).sum())
    session.view.clear_filter()
    session.view.score_min, session.view.score_max = 18.0, 24.0
    session.refilter()
    assert ((s.score[session.order] >= 18.0) & (s.score[session.order] <= 24.0)).all()
    session.view.clear_filter()
    session.view.celeba = {"Smiling": (0.7, 1.0)}
    session.view.fairface = {"gender": "Female"}
    session.refilter()
    j = CELEBA_ATTRIBUTES.index("Smiling")
    assert (s.celeba[session.order, j] >= 0.7).all()
    assert (s.gender[session.order, 1] > s.gender[session.order, 0]).all()
    session.view.clear_filter()
    session.view.sort, session.view.descending = "score", True
    session.refilter()
    scores = s.score[session.order]
    finite = np.isfinite(scores)
    assert not finite[np.argmin(finite):].any()  # NaN (no face) last
    assert (np.diff(scores[finite]) <= 0).all()
    session.view.sort, session.view.descending = "name", False
    session.refilter()
    names = [s.paths[r].rsplit("/", 1)[-1] for r in session.order]
    assert names == sorted(names)


@pytest.mark.parametrize("key", ["score", "faces", "celeba:Smiling", "race7:Black", "age:20-29"])
@pytest.mark.parametrize("descending", [True, False])
def test_grid_order_equals_the_engines_sort(session, key, descending):
    from faceqc_gui.engine.decisions import sort_rows

    session.view.sort, session.view.descending = key, descending
    session.refilter()
    engine_key = {"faces": "n_faces"}.get(key, key)
    rows = np.arange(len(session.snapshot.ids))
    np.testing.assert_array_equal(session.order, sort_rows(session.snapshot, rows, engine_key, descending))


def test_status_filters_match_the_engines(session):
    from faceqc_gui.engine.decisions import Filter, filter_mask
    from faceqc_gui.gui.state import STATUSES

    s = session.snapshot
    session.set_override(s.ids[:3].tolist(), "reject")
    s.missing[5] = True  # a file gone since the scan
    for t in (18.0, 22.0):
        session.set_threshold(t)
        for st in STATUSES:
            np.testing.assert_array_equal(session.status_mask({st}), filter_mask(s, Filter(status={st}), t), st)
        both = {"no_face", "overridden"}
        np.testing.assert_array_equal(session.status_mask(both), filter_mask(s, Filter(status=both), t))


def test_histogram_is_not_narrowed_by_the_decision_filter(session):
    all_scores = session.histogram_scores()
    session.view.status = {"accepted"}
    session.refilter()
    np.testing.assert_array_equal(np.sort(session.histogram_scores()), np.sort(all_scores))


def test_apply_results_streams_into_an_open_session(qapp, tmp_path):
    ppath, _, _ = make_project(tmp_path, n=10, scored=False)
    s = ProjectSession()
    s.open(ppath)
    seen = []
    s.rowsChanged.connect(lambda rows: seen.append(rows.tolist()))
    assert (s.snapshot.n_faces == -1).all()
    rng = np.random.default_rng(5)
    results = [fake_result(p, rng, n_faces=1, norm=30.0) for p in s.snapshot.paths[:4]]
    s.project.store_results(results)
    s.apply_results(results)
    assert seen and sorted(seen[0]) == [0, 1, 2, 3]
    assert s.accepted[:4].all() and not s.accepted[4:].any()
    s.close()


def test_view_state_survives_garbage():
    v = ViewState.from_dict({"scale": "bogus", "status": ["accepted", 3, "nope"], "score_min": float("nan"),
                             "celeba": {"Smiling": [0.2, 5], "NotAnAttr": [0, 1]}, "fairface": {"gender": "Cat"},
                             "sort": "drop table", "tile_size": 10_000, "selection": [1, "2", True], "current": "x"})
    assert v.scale == "norm" and v.status == {"accepted"} and v.score_min is None
    assert v.celeba == {"Smiling": (0.2, 1.0)} and v.fairface == {} and v.sort == "score"
    assert v.tile_size == 256 and v.selection == [1] and v.current is None
    assert ViewState.from_dict(v.to_dict()) == v
    assert ViewState.from_dict("not a dict") == ViewState()
    assert FAKE_MODEL_IDS  # the fixtures module is importable from here
