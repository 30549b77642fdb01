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


def _override_at(p, path):
    snap = p.snapshot()
    r = snap.paths.index(path) if isinstance(snap.paths, list) else list(snap.paths).index(path)
    return int(snap.override[r]), bool(snap.missing[r])


def test_swapped_files_keep_their_decisions_with_their_pictures(proj):
    p, files = proj
    a, b = files[0], files[1]
    p.set_override([_id(p, a)], "accept")
    p.set_override([_id(p, b)], "reject")
    ida, idb = _id(p, a), _id(p, b)
    tmp = a + ".tmp"
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.to_score == []  # same pictures, same models: nothing to rescore
    assert _id(p, a) == idb and _id(p, b) == ida  # the records (results and decisions) followed the pictures
    assert _override_at(p, a) == (-1, False) and _override_at(p, b) == (1, False)


def test_renumbering_after_a_delete_moves_every_decision_with_its_picture(proj):
    p, files = proj
    f2, f3, f4 = files[2], files[3], files[4]
    p.set_override([_id(p, f2)], "accept")
    p.set_override([_id(p, f3)], "reject")
    p.set_override([_id(p, f4)], "reject")
    id2, id3, id4 = _id(p, f2), _id(p, f3), _id(p, f4)
    os.remove(f2)
    os.rename(f3, f2)
    os.rename(f4, f3)
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.to_score == []
    assert _id(p, f2) == id3 and _id(p, f3) == id4
    assert _override_at(p, f2) == (-1, False) and _override_at(p, f3) == (-1, False)
    assert p.ids_for_paths([f4])[f4] == []  # nothing at the old last name any more
    # the deleted picture's accept is not lost: a missing image that says what happened
    snap = p.snapshot()
    gone = [i for i, path in enumerate(snap.paths) if int(snap.ids[i]) == id2]
    assert len(gone) == 1 and snap.missing[gone[0]] and snap.override[gone[0]] == 1
    assert "replaced by another picture" in snap.paths[gone[0]]
    assert p.plan_scoring(MODEL_IDS).to_score == []  # stable: a second scan changes nothing


def test_an_edited_picture_keeps_its_record_and_one_whose_original_moved_gets_a_new_one(proj, tmp_path):
    p, files = proj
    a = files[5]
    p.set_override([_id(p, a)], "reject")
    ida = _id(p, a)
    copy = str(tmp_path / "imgs" / "a" / "original_copy.jpg")
    shutil.copy(a, copy)  # the original picture now also lives here...
    with open(a, "ab") as f:
        f.write(b"edited")  # ...and the file at the old name is edited
    plan = p.plan_scoring(MODEL_IDS)
    assert _id(p, copy) == ida and _override_at(p, copy) == (-1, False)  # the decision went with the picture
    assert a in plan.to_score and _override_at(p, a) == (0, False)  # the edited file is new content, rescored


def test_a_file_that_changes_between_the_walk_and_its_results_is_scored_again(proj, tmp_path):
    # A file still being copied is read half-written (a "truncated" error); when its results arrive the file is
    # complete. Those results must not be taken for the complete file's: the next scan scores it again.
    p, files = proj
    growing = str(tmp_path / "imgs" / "a" / "copying.jpg")
    with open(growing, "wb") as f:
        f.write(open(files[0], "rb").read()[:50])  # the first bytes only
    plan = p.plan_scoring(MODEL_IDS)
    assert plan.to_score == [growing]
    result = fake_result(growing)
    shutil.copy(files[6], growing)  # the copy finishes while the pipeline works on the partial file
    st = os.stat(growing)
    os.utime(growing, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    p.store_results([result])
    again = p.plan_scoring(MODEL_IDS)
    assert again.to_score == [growing]
    p.store_results([fake_result(growing)])  # unchanged since this walk: recorded for good
    assert p.plan_scoring(MODEL_IDS).to_score == []
