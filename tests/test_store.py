"""The project store: results round-trip, derived decisions, overrides, undo/redo, filters, settings."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from test_store_helpers import MODEL_IDS, expected_decision, expected_score, fake_result, make_files

from faceqc_gui.engine import store
from faceqc_gui.engine.decisions import decide_arrays, decide_one, filter_mask
from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from faceqc_gui.engine.store import Filter, Project, ProjectError


@pytest.fixture
def scored(tmp_path):
    """A project over 60 files with random fake results (0-3 faces), plus the results by path."""
    files = make_files(tmp_path / "imgs", 60)
    p = Project.create(tmp_path / "p.faceqc")
    p.add_folder(tmp_path / "imgs")
    plan = p.plan_scoring(MODEL_IDS)
    assert sorted(plan.to_score) == sorted(files)
    results = {f: fake_result(f) for f in files}
    results[files[7]] = fake_result(files[7], error="truncated or corrupt image data (JPEG)")
    p.store_results([results[f] for f in files])
    yield p, results
    p.close()


def test_create_is_wal_refuses_existing_and_reopens(tmp_path):
    path = tmp_path / "new.faceqc"
    with Project.create(path) as p:
        p.add_folder(tmp_path)
        p.add_folder(tmp_path)  # idempotent
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(path)
    with Project.open(path) as p:
        assert p.folders() == [str(tmp_path)]
    with pytest.raises(ProjectError, match="not found"):
        Project.open(tmp_path / "nope.faceqc")
    with Project.open(tmp_path / "made.faceqc", create=True) as p:
        assert p.folders() == []
    with pytest.raises(ProjectError, match="no such file"):
        with Project.open(path) as p:
            p.add_folder(tmp_path / "does-not-exist")


def test_snapshot_matches_results(scored):
    p, results = scored
    snap = p.snapshot()
    assert len(snap) == len(results)
    assert list(snap.ids) == sorted(snap.ids)
    by_path = {path: i for i, path in enumerate(snap.paths)}
    for path, r in results.items():
        i = by_path[path]
        np.testing.assert_allclose(snap.score[i], expected_score(r), rtol=1e-6, equal_nan=True)
        assert snap.error[i] == (r.error is not None)
        assert snap.n_faces[i] == (0 if r.error else len(r.faces))
        primary = r.primary_face if r.error is None else None
        if primary is None:
            assert np.isnan(snap.celeba[i]).all() and np.isnan(snap.race7[i]).all()
        else:
            np.testing.assert_allclose(snap.celeba[i], [primary.celeba[a] for a in CELEBA_ATTRIBUTES], rtol=1e-6)
            for head, labels in FAIRFACE_HEADS.items():
                np.testing.assert_allclose(getattr(snap, head)[i], [primary.fairface[head][lab] for lab in labels],
                                           rtol=1e-6)
    p.set_score_mode("lowest")
    low = p.snapshot()
    for path, r in results.items():
        np.testing.assert_allclose(low.score[by_path[path]], expected_score(r, "lowest"), rtol=1e-6, equal_nan=True)


def test_image_detail_and_embeddings_round_trip(scored):
    p, results = scored
    snap = p.snapshot()
    multi = next(path for path, r in results.items() if r.error is None and len(r.faces) >= 2)
    image_id = int(snap.ids[snap.paths.index(multi)])
    d = p.image_detail(image_id)
    r = results[multi]
    assert d["path"] == multi and d["width"] == 640 and d["height"] == 480 and d["n_faces"] == len(r.faces)
    assert d["models"]["magface"]["sha256"] == MODEL_IDS["magface"]
    assert [f["face_index"] for f in d["faces"]] == [f.face_index for f in r.faces]
    assert sum(f["primary"] for f in d["faces"]) == 1
    assert d["faces"][[f["primary"] for f in d["faces"]].index(True)]["face_index"] == r.primary_face.face_index
    for got, want in zip(d["faces"], r.faces):
        np.testing.assert_allclose(got["box"], want.detection.box, rtol=1e-6)
        np.testing.assert_allclose(got["landmarks"], want.detection.landmarks, rtol=1e-6)
        assert got["magface_norm"] == pytest.approx(want.magface_norm)
        assert got["celeba"]["Smiling"] == pytest.approx(want.celeba["Smiling"], abs=1e-6)  # 6 decimals
        assert got["fairface"]["race7_top"] == want.fairface["race7_top"]
    embs = p.face_embeddings(image_id)
    for got, want in zip(embs, r.faces):
        np.testing.assert_allclose(got, want.embedding, rtol=2e-3, atol=2e-3)  # stored as float16
    with pytest.raises(ProjectError):
        p.image_detail(10**9)


def test_storing_again_replaces_faces(scored):
    p, results = scored
    path = next(path for path, r in results.items() if r.error is None and len(r.faces) >= 2)
    p.store_results([fake_result(path, norms=[11.0])])
    image_id = p.ids_for_paths([path])[path][0]
    d = p.image_detail(image_id)
    assert d["n_faces"] == 1 and len(d["faces"]) == 1 and d["score"] == pytest.approx(11.0)
    assert len(p.face_embeddings(image_id)) == 1


def _project_with(tmp_path, spec):
    """spec: name -> list of norms (None norm = MagFace not run), "error", or "unscored"."""
    folder = tmp_path / "imgs"
    files = dict(zip(spec, make_files(folder, len(spec))))
    p = Project.create(tmp_path / "d.faceqc")
    p.add_folder(folder)
    p.plan_scoring(MODEL_IDS)
    out = []
    for name, v in spec.items():
        if v == "unscored":
            continue
        if v == "error":
            out.append(fake_result(files[name], error="not an image"))
        else:
            r = fake_result(files[name], norms=[n if n is not None else 1.0 for n in v])
            for f, n in zip(r.faces, v):
                f.magface_norm = n
            out.append(r)
    p.store_results(out)
    ids = {name: p.ids_for_paths([f])[f][0] for name, f in files.items()}
    return p, ids


def test_decisions_reasons_and_overrides(tmp_path):
    spec = {"high": [25.0], "equal": [20.0], "low": [12.0], "none": [], "err": "error", "new": "unscored",
            "noscore": [None]}
    p, ids = _project_with(tmp_path, spec)
    with p:
        def state():
            snap = p.snapshot()
            acc, reason = snap.decide(p.threshold)
            return {n: (bool(acc[snap.rows([i])[0]]), int(reason[snap.rows([i])[0]])) for n, i in ids.items()}

        s = state()
        assert s["high"] == (True, store.REASON_SCORE_ABOVE)
        assert s["equal"] == (True, store.REASON_SCORE_ABOVE)  # score >= t
        assert s["low"] == (False, store.REASON_SCORE_BELOW)
        assert s["none"] == (False, store.REASON_NO_FACE)
        assert s["err"] == (False, store.REASON_ERROR)
        assert s["new"] == (False, store.REASON_UNSCORED)
        assert s["noscore"][0] is False
        p.set_override([ids["low"], ids["none"], ids["err"]], "accept")
        p.set_override([ids["high"]], "reject")
        s = state()
        assert s["low"] == s["none"] == s["err"] == (True, store.REASON_OVERRIDE_ACCEPT)
        assert s["high"] == (False, store.REASON_OVERRIDE_REJECT)
        p.set_threshold(5.0)  # would accept "low" and reject nothing by score: overrides must not move
        s = state()
        assert s["high"] == (False, store.REASON_OVERRIDE_REJECT)
        assert s["equal"] == (True, store.REASON_SCORE_ABOVE)
        snap = p.snapshot()
        assert dict(zip(snap.ids.tolist(), snap.override.tolist()))[ids["high"]] == -1
        assert p.image_detail(ids["high"])["reason"] == store.REASON_TEXT[store.REASON_OVERRIDE_REJECT]
        p.set_override([ids["high"]], None)
        assert state()["high"] == (True, store.REASON_SCORE_ABOVE)


def test_lowest_face_mode(tmp_path):
    p, ids = _project_with(tmp_path, {"group": [15.0, 25.0]})
    with p:
        # make the 25 face the larger one: primary mode scores 25, lowest mode 15
        r = fake_result(p.image_detail(ids["group"])["path"], norms=[15.0, 25.0])
        r.faces[1].detection.box = np.array([0, 0, 400, 400], np.float32)
        r.faces[0].detection.box = np.array([0, 0, 10, 10], np.float32)
        p.store_results([r])
        assert p.snapshot().decide(20.0)[0].tolist() == [True]
        p.set_score_mode("lowest")
        snap = p.snapshot()
        assert snap.score_mode == "lowest" and snap.decide(20.0)[0].tolist() == [False]
        assert p.undo() is not None and p.score_mode == "primary"
        with pytest.raises(ProjectError):
            p.set_score_mode("median")


def test_undo_redo_persisted_across_reopen(tmp_path):
    p, ids = _project_with(tmp_path, {"a": [25.0], "b": [10.0], "c": [30.0]})
    path = p.path
    p.set_override([ids["a"], ids["b"]], "reject")
    p.set_threshold(8.0)
    p.set_override([ids["b"]], "accept")
    p.close()
    with Project.open(path) as p:
        assert p.can_undo() and not p.can_redo()
        assert "Accept" in p.undo()
        assert p.image_detail(ids["b"])["override"] == "reject"
        assert "Threshold" in p.undo()
        assert p.threshold == 20.0
    with Project.open(path) as p:
        assert p.can_redo()
        assert "Threshold" in p.redo()
        assert p.threshold == 8.0
        assert p.undo() == "Threshold 20 → 8"  # undo again after the redo: the same step
        assert p.undo() == "Reject 2 images"
    with Project.open(path) as p:
        while p.undo():
            pass
        snap = p.snapshot()
        assert not snap.override.any() and p.threshold == 20.0
        p.redo()
        assert sorted(p.query(Filter(status={"overridden"}))) == sorted([ids["a"], ids["b"]])
        p.set_override([ids["c"]], "reject")  # a new action drops the redo steps
        assert not p.can_redo()
        assert p.redo() is None


def test_bulk_override_is_one_step_and_noops_are_not_recorded(tmp_path):
    files = make_files(tmp_path / "imgs", 300, size=32)
    with Project.create(tmp_path / "b.faceqc") as p:
        p.add_folder(tmp_path / "imgs")
        p.plan_scoring(MODEL_IDS)
        p.store_results([fake_result(f, norms=[25.0]) for f in files])
        ids = p.snapshot().ids
        p.set_override(ids, "reject")
        assert p.counts()["accepted"] == 0
        steps = len(p.history())
        p.set_override(ids, "reject")  # nothing changes: no step
        assert len(p.history()) == steps
        p.undo()
        assert p.counts()["accepted"] == len(files) and p.counts()["overridden"] == 0
        with pytest.raises(ProjectError, match="not in this project"):
            p.set_override([int(ids[0]), 10**9], "accept")
        assert p.counts()["overridden"] == 0  # the bad call changed nothing
        with pytest.raises(ProjectError):
            p.set_override([int(ids[0])], "maybe")
        p.apply_overrides({int(ids[0]): "accept", int(ids[1]): "reject", int(ids[2]): None}, "balance step")
        assert p.history()[-1]["description"] == "balance step"
        assert p.undo() == "balance step"
        assert p.counts()["overridden"] == 0


def _brute(results_by_id, overrides, threshold, flt: Filter, paths):
    """Expected ids for a filter, from the fake inputs (not from the store)."""
    out = []
    for i, r in results_by_id.items():
        ov = overrides.get(i)
        acc = expected_decision(r, ov, threshold)
        st = set()
        st.add("accepted" if acc else "rejected")
        if ov:
            st.add("overridden")
        if r.error:
            st.add("error")
        elif not r.faces:
            st.add("no_face")
        if flt.status and not (st & flt.status):
            continue
        s = expected_score(r)
        if flt.score_min is not None and not (s >= flt.score_min):
            continue
        if flt.score_max is not None and not (s <= flt.score_max):
            continue
        prim = r.primary_face if r.error is None else None
        ok = True
        for attr, (lo, hi) in (flt.celeba or {}).items():
            ok &= prim is not None and lo <= prim.celeba[attr] <= hi
        for head, label in (flt.fairface or {}).items():
            ok &= prim is not None and prim.fairface[f"{head}_top"] == label
        if flt.path_contains and flt.path_contains.lower() not in paths[i].lower():
            ok = False
        if ok:
            out.append(i)
    return sorted(out)


def test_filters_and_query_match_an_independent_evaluation(scored):
    p, results = scored
    snap = p.snapshot()
    by_id = {int(i): results[path] for i, path in zip(snap.ids, snap.paths)}
    paths = {int(i): path for i, path in zip(snap.ids, snap.paths)}
    ids = snap.ids.tolist()
    overrides = {ids[0]: "accept", ids[1]: "reject", ids[2]: "reject", ids[7]: "accept"}
    for i, v in overrides.items():
        p.set_override([i], v)
    p.set_threshold(18.0)
    filters = [
        Filter(status={"accepted"}), Filter(status={"rejected"}), Filter(status={"overridden"}),
        Filter(status={"no_face", "error"}), Filter(score_min=15.0, score_max=25.0),
        Filter(status={"accepted"}, celeba={"Smiling": (0.5, 1.0)}),
        Filter(fairface={"gender": "Female"}), Filter(fairface={"race7": "White", "age": "20-29"}),
        Filter(path_contains="IMG001"), Filter(celeba={"Male": (0.0, 0.3), "Young": (0.6, 1.0)}, score_min=10),
    ]
    for flt in filters:
        want = _brute(by_id, overrides, 18.0, flt, paths)
        assert sorted(p.query(flt)) == want, flt
        snap = p.snapshot()
        assert sorted(snap.ids[filter_mask(snap, flt, 18.0)].tolist()) == want
    with pytest.raises(Exception, match="unknown"):
        p.query(Filter(status={"great"}))
    with pytest.raises(Exception, match="unknown"):
        p.query(Filter(celeba={"Smiley": (0, 1)}))


def test_query_sorting(scored):
    p, results = scored
    ids = p.query(sort="score", descending=True)
    snap = p.snapshot()
    score = dict(zip(snap.ids.tolist(), snap.score.tolist()))
    vals = [score[i] for i in ids]
    finite = [v for v in vals if not np.isnan(v)]
    assert finite == sorted(finite, reverse=True)
    assert all(np.isnan(v) for v in vals[len(finite):])  # no score: last, whichever direction
    asc = [score[i] for i in p.query(sort="score", descending=False)]
    assert [v for v in asc if not np.isnan(v)] == sorted(finite) and np.isnan(asc[-1])
    by_path = p.query(sort="path", descending=False)
    assert [snap.paths[snap.rows([i])[0]] for i in by_path] == sorted(snap.paths)
    smile = p.query(sort="celeba:Smiling")
    sm = [results[snap.paths[snap.rows([i])[0]]] for i in smile]
    got = [r.primary_face.celeba["Smiling"] for r in sm if r.error is None and r.faces]
    assert got == sorted(got, reverse=True)
    with pytest.raises(Exception, match="unknown sort"):
        p.query(sort="beauty")


def test_counts_agree_with_the_inputs(scored):
    p, results = scored
    c = p.counts()
    rs = list(results.values())
    assert c["total"] == len(rs)
    assert c["error"] == sum(r.error is not None for r in rs)
    assert c["no_face"] == sum(r.error is None and not r.faces for r in rs)
    assert c["accepted"] == sum(expected_decision(r, None, 20.0) for r in rs)
    assert c["accepted"] + c["rejected"] == c["total"]
    assert c["missing"] == c["unscored"] == c["overridden"] == 0


def test_settings_are_json_and_not_undoable(tmp_path):
    with Project.create(tmp_path / "s.faceqc") as p:
        assert p.get_setting("grid", {"cols": 4}) == {"cols": 4}
        p.set_setting("grid", {"cols": 6, "sort": "score"})
        assert p.get_setting("grid") == {"cols": 6, "sort": "score"}
        assert not p.can_undo()
        with pytest.raises(TypeError):
            p.set_setting("bad", object())
        assert p.get_setting("bad") is None
        p.set_setting("threshold", 23.5)  # routed to the undoable setter
        assert p.threshold == 23.5 and p.can_undo()
        with pytest.raises(ProjectError):
            p.set_threshold(float("nan"))
        assert p.threshold == 23.5
    with Project.open(tmp_path / "s.faceqc") as p:
        assert p.get_setting("grid")["cols"] == 6 and p.threshold == 23.5


def test_snapshot_apply_override_mirrors_the_store(scored):
    p, _ = scored
    snap = p.snapshot()
    some = snap.ids[::5]
    p.set_override(some, "reject")
    snap.apply_override(some, "reject")
    fresh = p.snapshot()
    assert np.array_equal(fresh.override, snap.override)
    assert np.array_equal(fresh.decide(20.0)[0], snap.decide(20.0)[0])
    with pytest.raises(KeyError):
        snap.rows([10**9])


def test_readonly_open_reads_and_refuses_writes(scored):
    p, _ = scored
    path = p.path
    p.close()
    with Project.open(path, readonly=True) as r:
        assert r.counts()["total"] == 60
        with pytest.raises(ProjectError, match="read-only"):
            r.set_threshold(3)


def test_store_results_stores_walk_and_decode_errors_as_rejected(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "ghost.jpg").symlink_to(tmp_path / "nowhere.jpg")
    make_files(tmp_path / "imgs", 2)
    with Project.create(tmp_path / "e.faceqc") as p:
        p.add_folder(tmp_path / "imgs")
        plan = p.plan_scoring(MODEL_IDS)
        assert [e.path for e in plan.errors] == [str(tmp_path / "imgs" / "ghost.jpg")]
        assert len(plan.to_score) == 2
        d = p.image_detail(p.ids_for_paths([plan.errors[0].path])[plan.errors[0].path][0])
        assert d["error"] == "broken symbolic link" and d["decision"] == "rejected" and d["reason"] == "error"
        assert p.counts()["error"] == 1
        json.dumps(d)


def test_scalar_and_vectorised_decisions_agree_near_the_threshold():
    rng = np.random.default_rng(5)
    n = 5000
    t = 20.0
    score = np.where(rng.random(n) < 0.1, np.nan, t + rng.choice([-1, 1], n) * rng.choice([0, 1e-7, 1e-6, 0.5], n))
    n_faces = rng.choice([-1, 0, 1, 2], n)
    error = rng.random(n) < 0.1
    override = rng.choice([-1, 0, 0, 1], n)
    acc, reason = decide_arrays(score.astype(np.float32), n_faces, error, override, t)
    for i in range(n):
        s = None if np.isnan(score[i]) else float(score[i])
        assert decide_one(s, int(n_faces[i]), bool(error[i]), int(override[i]), t) == (bool(acc[i]), int(reason[i]))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="POSIX file locks only")
def test_a_file_system_without_locks_says_so_instead_of_blaming_another_process(tmp_path, monkeypatch):
    import errno
    import fcntl

    p = Project.create(tmp_path / "nfs.faceqc")
    p.close()

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    p = Project.open(tmp_path / "nfs.faceqc")
    try:
        with pytest.raises(ProjectError, match="does not support file locks") as e:
            p.set_threshold(21.0)
        assert "another FaceQC process" not in str(e.value)
    finally:
        p.close()
