"""The balanced-selection dialog on small projects whose best balanced set is known by hand: what it proposes, what
it shows, what Apply hands back (and that the project applies it as one undoable step), and plain failure messages."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt", reason="the GUI tests need pytest-qt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QDialog  # noqa: E402

from faceqc_gui.engine.labels import AGE9, CELEBA_ATTRIBUTES, GENDER, RACE4, RACE7  # noqa: E402
from faceqc_gui.engine.records import Detection, FaceResult, ImageResult  # noqa: E402
from faceqc_gui.engine.store import Project  # noqa: E402
from faceqc_gui.widgets.balance_dialog import (  # noqa: E402
    C_ACCEPT, C_GROUP, C_HAVE, C_MISSING, C_NOW, C_REJECT, C_TARGET, C_VALUE, BalanceDialog,
)

pytestmark = pytest.mark.gui
THRESHOLD = 20.0

# name: (gender, MagFace norm, smiling). Threshold 20: m4 and f3 are rejected now.
IMAGES = {
    "m1": ("Male", 25.0, False), "m2": ("Male", 23.0, False), "m3": ("Male", 21.0, True), "m4": ("Male", 18.0, True),
    "f1": ("Female", 24.0, True), "f2": ("Female", 22.0, False), "f3": ("Female", 19.5, True),
}


def onehot(labels, top, p=0.9):
    rest = (1 - p) / (len(labels) - 1)
    return {lab: (p if lab == top else rest) for lab in labels}


def result(name, gender, norm, smiling, celeba=True):
    ff = {"race7": onehot(RACE7, "White"), "race4": onehot(RACE4, "White"), "gender": onehot(GENDER, gender),
          "age": onehot(AGE9, "20-29")}
    ff.update({f"{h}_top": max(ff[h], key=ff[h].get) for h in ("race7", "race4", "gender", "age")})
    attrs = {a: 0.1 for a in CELEBA_ATTRIBUTES}
    attrs["Smiling"] = 0.9 if smiling else 0.1
    det = Detection(np.array([0, 0, 100, 100], np.float32), np.zeros((5, 2), np.float32), 0.99)
    face = FaceResult(0, det, magface_norm=norm, fairface=ff, celeba=attrs if celeba else None)
    return ImageResult(f"/data/{name}.jpg", 100, 100, faces=[face])


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "small.faceqc") as p:
        p.store_results([result(n, *v) for n, v in IMAGES.items()]
                        + [ImageResult("/data/noface.jpg", 100, 100, faces=[])])
        snap = p.snapshot()
        ids = {path.rsplit("/", 1)[1].split(".")[0]: int(i) for path, i in zip(snap.paths, snap.ids)}
        yield p, ids


def make_dialog(qtbot, p, **kw):
    d = BalanceDialog(p.snapshot(), p.threshold, auto_update=False, **kw)
    qtbot.addWidget(d)
    d.set_by(("gender",))
    return d


def names(ids, which):
    inv = {v: k for k, v in ids.items()}
    return {inv[int(i)] for i in which}


def shown_rows(d):
    """{group name: {column: text}} as the table shows them."""
    t = d.table
    out = {}
    for r in range(t.rowCount()):
        out[t.item(r, C_GROUP).text()] = {c: t.item(r, c).text() for c in (C_HAVE, C_NOW, C_TARGET, C_ACCEPT,
                                                                           C_REJECT, C_MISSING)}
    return out


def test_uniform_as_large_as_possible_keeps_the_best_of_each_group(qtbot, project):
    p, ids = project
    assert p.threshold == THRESHOLD
    d = make_dialog(qtbot, p)
    prop = d.prepare()
    # Images scoring at least the threshold: Male m1 m2 m3, Female f1 f2 -> 2 each, the best two.
    assert prop.feasible
    assert names(ids, prop.selected_ids) == {"m1", "m2", "f1", "f2"}
    assert names(ids, prop.reject_ids) == {"m3"} and len(prop.accept_ids) == 0
    d.refresh()
    rows = shown_rows(d)
    assert rows["Male"] == {C_HAVE: "3", C_NOW: "3", C_TARGET: "2", C_ACCEPT: "0", C_REJECT: "1", C_MISSING: ""}
    assert rows["Female"] == {C_HAVE: "2", C_NOW: "2", C_TARGET: "2", C_ACCEPT: "0", C_REJECT: "0", C_MISSING: ""}
    assert rows["(no group)"][C_HAVE] == "1"  # the image without a face
    assert d.apply_button.isEnabled()


def test_size_without_quality_floor_and_apply_is_one_undoable_step(qtbot, project):
    p, ids = project
    d = make_dialog(qtbot, p)
    d.floor_check.setChecked(False)
    d.set_size(6)
    d.refresh()
    prop = d.proposal
    assert prop.feasible and names(ids, prop.selected_ids) == {"m1", "m2", "m3", "f1", "f2", "f3"}
    before = p.snapshot().decide(THRESHOLD)[0]
    qtbot.mouseClick(d.apply_button, Qt.MouseButton.LeftButton)
    assert d.result() == QDialog.DialogCode.Accepted
    assert d.changes() == {ids["f3"]: "accept"}
    # What the main window does with it.
    p.apply_overrides(d.changes(), d.description())
    snap = p.snapshot()
    acc = snap.decide(THRESHOLD)[0]
    assert names(ids, snap.ids[acc]) == {"m1", "m2", "m3", "f1", "f2", "f3"}
    assert "accept 1, reject 0" in d.description()
    p.undo()
    assert np.array_equal(p.snapshot().decide(THRESHOLD)[0], before)


def test_manual_decisions_are_kept_unless_the_user_says_otherwise(qtbot, project):
    p, ids = project
    p.set_override([ids["f2"]], "reject")
    p.set_override([ids["noface"]], "accept")
    d = make_dialog(qtbot, p)
    d.floor_check.setChecked(False)
    d.set_size(4)
    prop = d.prepare()
    # f2 was rejected by hand: Female gets f1 and f3; the accepted no-face image stays, outside the groups.
    assert names(ids, prop.selected_ids) == {"m1", "m2", "f1", "f3", "noface"}
    assert d.prepare().changes() == {ids["m3"]: "reject", ids["f3"]: "accept"}
    d.keep_check.setChecked(False)
    prop = d.prepare()
    assert names(ids, prop.selected_ids) == {"m1", "m2", "f1", "f2"}
    assert prop.changes() == {ids["m3"]: "reject", ids["f2"]: "accept", ids["noface"]: "reject"}


def test_custom_shares_and_caps_typed_in_the_table(qtbot, project):
    p, ids = project
    d = make_dialog(qtbot, p)
    d.set_kind("shares")
    assert not d.table.isColumnHidden(C_VALUE)
    rows = {d.table.item(r, C_GROUP).text(): r for r in range(d.table.rowCount())}
    d.table.item(rows["Male"], C_VALUE).setText("2")  # what the cell editor commits
    d.table.item(rows["Female"], C_VALUE).setText("1")
    d.set_size(3)
    assert names(ids, d.prepare().selected_ids) == {"m1", "m2", "f1"}
    d.set_kind("caps")
    assert d.table.item(rows["Male"], C_VALUE).text() == ""  # caps start empty = no cap
    d.set_group_value(("Male",), 1)
    d.set_size(None)
    prop = d.prepare()
    assert names(ids, prop.selected_ids) == {"m1", "f1", "f2"}
    assert names(ids, prop.reject_ids) == {"m2", "m3"}
    # The shares typed before are still there when switching back.
    d.set_kind("shares")
    assert d.table.item(rows["Male"], C_VALUE).text() == "2"


def test_celeba_share_within_each_group(qtbot, project):
    p, ids = project
    d = make_dialog(qtbot, p)
    d.floor_check.setChecked(False)
    d.set_size(4)
    d.add_constraint("Smiling", min_share=0.5)
    prop = d.prepare()
    # Two per group, at least one smiling: Male m1 + m3 (m2 is better but neither m1 nor m2 smiles); Female f1 + f2.
    assert prop.feasible and names(ids, prop.selected_ids) == {"m1", "m3", "f1", "f2"}
    assert "Smiling" in prop.target.describe()


def test_impossible_target_says_which_groups_lack_how_many(qtbot, project):
    p, ids = project
    d = make_dialog(qtbot, p)
    d.set_size(8)  # 4 per group; above the threshold Male has 3, Female 2
    d.refresh()
    assert d.proposal is not None and not d.proposal.feasible
    text = d.message.text()
    assert "Male lacks 1" in text and "Female lacks 2" in text
    assert d.message.property("error") is True
    rows = shown_rows(d)
    assert rows["Male"][C_MISSING] == "1" and rows["Female"][C_MISSING] == "2"
    assert not d.apply_button.isEnabled()
    qtbot.mouseClick(d.apply_button, Qt.MouseButton.LeftButton)
    assert d.changes() == {}


def test_bad_input_shows_a_message_and_never_crashes(qtbot, project):
    p, ids = project
    d = make_dialog(qtbot, p)
    d.set_kind("shares")
    d.set_group_value(("Male",), "lots")
    assert d.refresh() is None
    assert "not a number" in d.message.text() and not d.apply_button.isEnabled()
    d.set_group_value(("Male",), "-1")
    assert d.refresh() is None and ">= 0" in d.message.text()
    d.set_kind("caps")
    d.set_group_value(("Male",), "1.5")
    assert d.refresh() is None and "whole number" in d.message.text()
    d.set_kind("uniform")
    d.gender_check.setChecked(False)
    assert d.refresh() is None and "at least one" in d.message.text()
    d.set_by(("gender",))
    d.add_constraint("Eyeglasses", min_share=0.6, max_share=0.2)
    assert d.refresh() is None and "above its maximum" in d.message.text()


def test_constraints_need_celeba_numbers(qtbot, tmp_path):
    with Project.create(tmp_path / "nocelebA.faceqc") as p:
        p.store_results([result(n, *v, celeba=False) for n, v in IMAGES.items()])
        d = make_dialog(qtbot, p)
        assert d.refresh() is not None
        d.add_constraint("Smiling", min_share=0.5)
        assert d.refresh() is None and "celeba" in d.message.text().lower()


def test_settings_changes_recompute_before_apply(qtbot, project):
    p, ids = project
    d = BalanceDialog(p.snapshot(), p.threshold, by=("gender",))  # auto-updating, as in the app
    qtbot.addWidget(d)
    assert d.proposal is not None and d.apply_button.isEnabled()
    d.floor_check.setChecked(False)
    assert not d.apply_button.isEnabled()  # the proposal on screen is stale until recomputed
    qtbot.waitUntil(lambda: d.apply_button.isEnabled(), timeout=3000)
    assert names(ids, d.proposal.selected_ids) == {"m1", "m2", "m3", "f1", "f2", "f3"}
    d.set_size(2)
    qtbot.mouseClick(d.apply_button, Qt.MouseButton.LeftButton)  # too early: the old proposal must not be applied
    assert d.result() != QDialog.DialogCode.Accepted and d.changes() == {}
    qtbot.waitUntil(lambda: d.apply_button.isEnabled(), timeout=3000)
    qtbot.mouseClick(d.apply_button, Qt.MouseButton.LeftButton)
    assert d.result() == QDialog.DialogCode.Accepted
    assert d.changes() == {ids["m2"]: "reject", ids["m3"]: "reject", ids["f2"]: "reject"}


def test_default_groups_are_race7_by_gender(qtbot, project):
    p, _ = project
    d = BalanceDialog(p.snapshot(), p.threshold, auto_update=False)
    qtbot.addWidget(d)
    assert d.by() == ("race7", "gender")
    assert len(d.groups()) == len(RACE7) * len(GENDER)
    # Every image here is White: all other groups are empty, so a uniform set is impossible, and the message says so.
    assert d.proposal is None or not d.proposal.feasible
    assert "Black / Female lacks" in d.message.text()
