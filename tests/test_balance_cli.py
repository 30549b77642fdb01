"""`faceqc project balance` on a small store project whose balanced set is known by hand: the printed table, the
proposal, --apply as one undoable step, infeasible targets and bad arguments."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_store_helpers import MODEL_IDS, MODELS, make_files

from faceqc_gui.cli import main
from faceqc_gui.engine.labels import AGE9, CELEBA_ATTRIBUTES, GENDER, RACE4, RACE7
from faceqc_gui.engine.records import Detection, FaceResult, ImageResult
from faceqc_gui.engine.store import Project

# name: (gender, MagFace norm, smiling); None = no face. Threshold 20: wm3, wf2 rejected now.
IMAGES = {
    "wm1": ("Male", 25.0, False), "wm2": ("Male", 22.0, True), "wm3": ("Male", 18.0, True),
    "bm1": ("Male", 23.0, False), "bm2": ("Male", 21.0, False),
    "wf1": ("Female", 24.0, True), "wf2": ("Female", 19.0, False), "bf1": ("Female", 26.0, False),
    "noface": None,
}


def onehot(labels, top, p=0.9):
    rest = (1 - p) / (len(labels) - 1)
    return {lab: (p if lab == top else rest) for lab in labels}


def result(path, spec):
    if spec is None:
        return ImageResult(path, width=100, height=100, faces=[], models=dict(MODELS))
    gender, norm, smiling = spec
    ff = {"race7": onehot(RACE7, "White"), "race4": onehot(RACE4, "White"), "gender": onehot(GENDER, gender),
          "age": onehot(AGE9, "20-29")}
    ff.update({f"{h}_top": max(ff[h], key=ff[h].get) for h in ("race7", "race4", "gender", "age")})
    celeba = {a: 0.1 for a in CELEBA_ATTRIBUTES}
    celeba["Smiling"] = 0.9 if smiling else 0.1
    lms = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)
    face = FaceResult(0, Detection(np.array([10, 10, 90, 110], np.float32), lms, 0.99), magface_norm=norm,
                      embedding=np.ones(512, np.float32), celeba=celeba, fairface=ff)
    return ImageResult(path, width=100, height=120, faces=[face], models=dict(MODELS))


@pytest.fixture
def project(tmp_path):
    files = dict(zip(IMAGES, make_files(tmp_path / "imgs", len(IMAGES))))
    path = tmp_path / "p.faceqc"
    with Project.create(path) as p:
        p.add_folder(tmp_path / "imgs")
        p.plan_scoring(MODEL_IDS)
        p.store_results([result(files[n], spec) for n, spec in IMAGES.items()])
        ids = {n: p.ids_for_paths([f])[f][0] for n, f in files.items()}
    return path, ids


def accepted_names(path, ids):
    with Project.open(path) as p:
        snap = p.snapshot()
        acc = snap.decide(p.threshold)[0]
    by_id = dict(zip(snap.ids.tolist(), acc.tolist()))
    return {n for n, i in ids.items() if by_id[i]}


def table_row(out, group):
    m = re.search(rf"^{re.escape(group)}\s+(.*)$", out, re.M)
    assert m, out
    return m.group(1).split()


def test_prints_the_table_and_a_proposal_and_changes_nothing(project, capsys):
    path, ids = project
    rc = main(["project", "balance", str(path), "--by", "gender"])
    out = capsys.readouterr().out
    assert rc == 0
    # all 9 images counted (8 faces + 1 without); accepted now: 6 (norm >= 20)
    assert table_row(out, "Male")[:4] == ["5", "55.6%", "4", "66.7%"]
    assert table_row(out, "Female")[:4] == ["3", "33.3%", "2", "33.3%"]
    assert table_row(out, "unknown")[:4] == ["1", "11.1%", "0", "0.0%"]
    # Only images at or above the threshold are chosen by default: Female has 2, so 2 per group.
    assert "4 images meet the target" in out
    assert "0 to accept, 2 to reject" in out
    # have / accepted now / target / would accept / would reject
    assert table_row(out.split("Proposal")[1], "Male")[:5] == ["4", "4", "2", "0", "2"]
    assert table_row(out.split("Proposal")[1], "Female")[:5] == ["2", "2", "2", "0", "0"]
    assert accepted_names(path, ids) == {"wm1", "wm2", "bm1", "bm2", "wf1", "bf1"}


def test_apply_sets_the_proposal_as_one_undoable_step(project, capsys):
    path, ids = project
    before = accepted_names(path, ids)
    rc = main(["project", "balance", str(path), "--by", "gender", "--min-score", "any", "--apply"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # Any score: Female has 3 -> 3 per group; Male's best three are wm1 25, bm1 23, wm2 22.
    assert accepted_names(path, ids) == {"wm1", "bm1", "wm2", "bf1", "wf1", "wf2"}
    assert "Applied as one undoable action: 1 accepted, 1 rejected." in out
    with Project.open(path) as p:
        assert p.can_undo()
        p.undo()
        assert not p.can_undo()  # the whole proposal was one step
    assert accepted_names(path, ids) == before


def test_manual_rejects_are_respected_unless_ignored(project, capsys):
    path, ids = project
    with Project.open(path) as p:
        p.set_override([ids["wm1"]], "reject")
    assert main(["project", "balance", str(path), "--by", "gender", "--apply"]) == 0
    assert accepted_names(path, ids) == {"bm1", "wm2", "wf1", "bf1"}
    capsys.readouterr()
    assert main(["project", "balance", str(path), "--by", "gender", "--ignore-overrides", "--apply"]) == 0
    assert accepted_names(path, ids) == {"wm1", "bm1", "wf1", "bf1"}


def test_celeba_requirement_inside_groups(project, capsys):
    path, ids = project
    # At least half smiling in each group of 2, any score: Male -> wm1 (25) + the best smiling (wm2 22);
    # Female -> bf1 (26) + wf1 (24, smiling).
    rc = main(["project", "balance", str(path), "--by", "gender", "--size", "4", "--min-score", "any",
               "--require", "Smiling>=0.5", "--apply"])
    assert rc == 0, capsys.readouterr().out
    assert accepted_names(path, ids) == {"wm1", "wm2", "bf1", "wf1"}


def test_infeasible_target_says_which_group_lacks_what_and_applies_nothing(project, capsys):
    path, ids = project
    before = accepted_names(path, ids)
    rc = main(["project", "balance", str(path), "--by", "gender", "--size", "6", "--apply"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "Female lacks 1" in cap.out and "largest size that can be met is 4" in cap.out
    assert "nothing applied" in cap.err
    assert accepted_names(path, ids) == before
    rc = main(["project", "balance", str(path), "--by", "race4,gender"])  # Black, Asian, Indian groups are empty
    assert rc == 1
    assert "Asian / Male lacks" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--by", "race7,hair"], "unknown FairFace head"),
    (["--target", "caps:Martian/Male=3"], "no group"),
    (["--size", "lots"], "--size"),
    (["--require", "Smiling>0.5"], "cannot read the constraint"),
    (["--min-conf", "2"], "--min-conf"),
])
def test_bad_arguments_are_readable_errors(project, capsys, args, words):
    path, _ = project
    assert main(["project", "balance", str(path), *args]) == 2
    assert words in capsys.readouterr().err


def test_missing_project_file(tmp_path, capsys):
    assert main(["project", "balance", str(tmp_path / "nope.faceqc")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_second_proposal_may_change_what_the_first_applied_but_not_the_users_own_decisions(project, capsys):
    # The first proposal's accepts and rejects are not hand-made: a bigger target later must be able to use them.
    path, ids = project
    assert main(["project", "balance", str(path), "--by", "gender", "--size", "2", "--min-score", "any",
                 "--apply"]) == 0
    with Project.open(path) as p:
        made = p.balance_made_overrides()
    assert made and len(accepted_names(path, ids)) == 2
    capsys.readouterr()
    assert main(["project", "balance", str(path), "--by", "gender", "--size", "6", "--min-score", "any",
                 "--apply"]) == 0, capsys.readouterr().out
    assert accepted_names(path, ids) == {"wm1", "bm1", "wm2", "bf1", "wf1", "wf2"}
    # a change by hand makes that image's decision the user's own: kept by the next proposal
    with Project.open(path) as p:
        p.set_override([ids["wm1"]], "reject")
        assert ids["wm1"] not in p.balance_made_overrides()
    main(["project", "balance", str(path), "--by", "gender", "--size", "6", "--min-score", "any", "--apply"])
    assert "wm1" not in accepted_names(path, ids)  # whatever else it chose, the user's reject stood
    # undoing an applied proposal: its overrides are gone, so nothing counts as balance-made from it
    with Project.open(path) as p:
        while p.can_undo():  # every proposal and the hand reject
            p.undo()
        assert p.balance_made_overrides() == set()
