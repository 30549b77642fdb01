"""Incremental rescoring: only new or changed files, renamed files keep their decisions, removed ones go missing."""

from __future__ import annotations

import os
import shutil

import pytest
from test_store_helpers import MODEL_IDS, fake_result, make_files

from faceqc_gui.engine.store import Filter, Project


def _score(p: Project, model_ids=MODEL_IDS):
    plan = p.plan_scoring(model_ids)
    p.store_results([fake_result(f) for f in plan.to_score])
    return plan


@pytest.fixture
def proj(tmp_path):
    files = make_files(tmp_path / "imgs" / "a", 6) + make_files(tmp_path / "imgs" / "b", 4, prefix="b")
    p = Project.create(tmp_path / "inc.faceqc")
    p.add_folder(tmp_path / "imgs")
    first = _score(p)
    assert first.new == len(files) and sorted(first.to_score) == sorted(files)
    yield p, files
    p.close()


def _id(p, path):
    return p.ids_for_paths([path])[path][0]


def test_second_scan_scores_nothing_and_touch_is_not_a_change(proj):
    p, files = proj
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.to_score == [] and plan.unchanged == len(files)
    st = os.stat(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.to_score == [] and plan.unchanged == len(files)


def test_changed_content_is_rescored_until_its_results_arrive(proj):
    p, files = proj
    before = p.image_detail(_id(p, files[2]))
    with open(files[2], "ab") as f:
        f.write(b"edited")
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.to_score == [files[2]] and plan.changed == 1
    # interrupted before the new results were stored: the next scan must still want it
    assert p.plan_scoring(MODEL_IDS).to_score == [files[2]]
    p.store_results([fake_result(files[2], salt=1)])
    assert p.plan_scoring(MODEL_IDS).to_score == []
    after = p.image_detail(_id(p, files[2]))
    assert after["id"] == before["id"] and after["hash"] != before["hash"] and after["size"] == before["size"] + 6


def test_other_model_files_trigger_rescoring_only_for_requested_keys(proj):
    p, files = proj
    other = dict(MODEL_IDS, celeba="x" * 64)
    plan = p.plan_scoring(other)
    assert sorted(plan.to_score) == sorted(files) and plan.models_changed == len(files)
    # a run that only asks for MagFace (same file) has nothing to do
    assert p.plan_scoring({"detector": MODEL_IDS["detector"], "magface": MODEL_IDS["magface"]}).to_score == []


def test_renamed_and_moved_files_keep_results_and_override(proj, tmp_path):
    p, files = proj
    i_ren, i_mov = _id(p, files[1]), _id(p, files[8])
    p.set_override([i_ren], "accept")
    p.set_override([i_mov], "reject")
    score_before = p.image_detail(i_ren)["score"]
    renamed = str(tmp_path / "imgs" / "a" / "renamed.jpg")
    moved = str(tmp_path / "imgs" / "new_sub" / "moved.jpg")
    os.rename(files[1], renamed)
    os.makedirs(os.path.dirname(moved))
    shutil.move(files[8], moved)
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.renamed == 2 and plan.to_score == [] and plan.missing == 0
    d = p.image_detail(i_ren)
    assert d["path"] == renamed and d["override"] == "accept" and d["score"] == score_before and not d["missing"]
    assert p.image_detail(i_mov)["path"] == moved and p.image_detail(i_mov)["override"] == "reject"
    assert p.counts()["total"] == len(files)


def test_removed_files_are_missing_with_their_decisions_and_come_back(proj, tmp_path):
    p, files = proj
    gone = _id(p, files[3])
    p.set_override([gone], "accept")
    data = open(files[3], "rb").read()
    os.remove(files[3])
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.missing == 1 and plan.to_score == []
    d = p.image_detail(gone)
    assert d["missing"] and d["override"] == "accept" and d["n_faces"] >= 0
    assert p.query(Filter(status={"missing"})) == [gone]
    with open(files[3], "wb") as f:
        f.write(data)
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.missing == 0 and not p.image_detail(gone)["missing"]


def test_a_vanished_folder_marks_images_missing_instead_of_failing(proj, tmp_path):
    p, files = proj
    b_ids = [_id(p, f) for f in files if "/b/" in f]
    os.rename(tmp_path / "imgs", tmp_path / "unplugged")
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.missing_folders == [str(tmp_path / "imgs")] and plan.missing == len(files)
    os.rename(tmp_path / "unplugged", tmp_path / "imgs")
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.missing == 0 and plan.to_score == [] and plan.renamed == 0
    assert [_id(p, f) for f in files if "/b/" in f] == b_ids


def test_new_files_and_duplicates(proj, tmp_path):
    p, files = proj
    # a copy of an existing file is a new image (its original is still there), not a rename
    shutil.copy(files[0], tmp_path / "imgs" / "copy.jpg")
    new = make_files(tmp_path / "imgs" / "c", 3, prefix="c")
    plan = p.plan_scoring(MODEL_IDS)
    assert sorted(plan.to_score) == sorted(new + [str(tmp_path / "imgs" / "copy.jpg")]) and plan.new == 4
    assert p.counts()["unscored"] == 4
    # two identical files replacing one vanished image: exactly one inherits it
    p.store_results([fake_result(f) for f in plan.to_score])
    os.remove(files[5])
    orig = _id(p, files[4])
    data = open(files[4], "rb").read()
    os.remove(files[4])
    for name in ("dup1.jpg", "dup2.jpg"):
        (tmp_path / "imgs" / name).write_bytes(data)
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.renamed == 1 and plan.new == 1 and plan.missing == 1
    assert p.image_detail(orig)["path"] == str(tmp_path / "imgs" / "dup1.jpg")


def test_walk_errors_are_stored_and_forgotten_when_fixed(proj, tmp_path):
    p, _ = proj
    link = tmp_path / "imgs" / "broken.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    plan = p.plan_scoring(MODEL_IDS)
    assert [e.path for e in plan.errors] == [str(link)]
    assert p.counts()["error"] == 1
    link.unlink()
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.errors == [] and p.counts()["error"] == 0 and p.counts()["missing"] == 0


def test_a_file_name_that_is_not_utf8_is_an_error_row_and_the_scan_goes_on(proj, tmp_path):
    # SQLite stores text as UTF-8; such a name once aborted the whole scan (UnicodeEncodeError) and added nothing.
    p, files = proj
    raw = os.path.join(os.fsencode(tmp_path / "imgs" / "a"), b"caf\xe9.jpg")
    shutil.copy(files[0], os.fsdecode(raw))
    shutil.copy(files[0], tmp_path / "imgs" / "a" / "new_ok.jpg")
    plan = p.plan_scoring(MODEL_IDS)
    assert [os.path.basename(f) for f in plan.to_score] == ["new_ok.jpg"]  # the good new file is still scored
    p.store_results([fake_result(f) for f in plan.to_score])
    snap = p.snapshot()
    bad = [i for i, path in enumerate(snap.paths) if "caf" in path]
    assert len(bad) == 1 and snap.error[bad[0]]
    assert snap.paths[bad[0]].endswith("caf\\udce9.jpg")
    assert "not valid UTF-8" in p.image_detail(int(snap.ids[bad[0]]))["error"]
    # the CLI hands such a name over as the shell gives it: found, no crash
    assert len(p.ids_for_paths([os.fsdecode(raw)])[os.fsdecode(raw)]) == 1
    with pytest.raises(Exception, match="not valid UTF-8"):
        weird = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"d\xe9"))
        os.mkdir(weird)
        p.add_folder(weird)
