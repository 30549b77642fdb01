"""Issue 6 in the main window: the Demographics dock follows the project and filters the grid; the Balanced
Selection dialog applies its proposal as one undoable step."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QDialog  # noqa: E402
from test_gui_fixtures import make_project  # noqa: E402
from test_gui_window import new_window  # noqa: E402

from faceqc_gui.widgets import balance_dialog, main_window  # noqa: E402


def make_window(qtbot, tmp_path):
    ppath, _, _ = make_project(tmp_path, n=60)
    win = new_window(qtbot, tmp_path)
    win.open_project(ppath)
    qtbot.waitUntil(lambda: win.session.is_open and len(win.session.snapshot.ids) == 60)
    return win


def test_demographics_dock_counts_the_open_project_and_filters_the_grid(qtbot, tmp_path):
    win = make_window(qtbot, tmp_path)
    s = win.session
    win.act_demographics.trigger()
    assert win.demo_dock.isVisible()
    stats = win.demographics.stats
    assert stats is not None
    has_ff = ~np.isnan(s.snapshot.race7).any(axis=1)
    label = s.snapshot.race7[has_ff].argmax(axis=1)
    from faceqc_gui.engine.labels import RACE7

    group = RACE7[int(np.bincount(label).argmax())]
    win.demographics.groupFilterRequested.emit({"race7": group})
    assert s.view.fairface == {"race7": group}
    assert 0 < s.visible_count() <= int((label == RACE7.index(group)).sum())
    assert win.filters.ff_boxes["race7"].currentData() == group


def test_balance_dialog_applies_one_undoable_step(qtbot, tmp_path, monkeypatch):
    win = make_window(qtbot, tmp_path)
    s = win.session
    before = s.snapshot.override.copy()
    chosen = {}

    class FakeDialog:
        def __init__(self, snapshot, threshold, parent=None, **kw):
            ids = [int(i) for i in snapshot.ids[:3]]
            chosen.update({ids[0]: "accept", ids[1]: "reject", ids[2]: "reject"})

        def exec(self):
            return QDialog.DialogCode.Accepted

        def changes(self):
            return dict(chosen)

        def description(self):
            return "balanced selection (test)"

    monkeypatch.setattr(main_window, "BalanceDialog", FakeDialog)
    win.act_balance.trigger()
    rows = s.rows_of_ids(list(chosen))
    assert list(s.snapshot.override[rows]) == [1, -1, -1]
    assert s.can_undo()
    s.undo()
    np.testing.assert_array_equal(s.snapshot.override, before)
    assert balance_dialog.BalanceDialog is not FakeDialog  # the real dialog class stays importable


def _top_or_bucket(probs: np.ndarray, labels, min_conf: float) -> list[str]:
    """Each image's bucket computed by hand: its top label, 'uncertain' below min_conf, 'unknown' without numbers."""
    out = []
    for p in probs:
        if np.isnan(p).any():
            out.append("unknown")
        elif p.max() < min_conf:
            out.append("uncertain")
        else:
            out.append(labels[int(p.argmax())])
    return out


@pytest.mark.parametrize("bucket", ["uncertain", "unknown", "top"])
def test_clicks_on_every_bucket_filter_the_grid_to_exactly_those_images(qtbot, tmp_path, bucket):
    from faceqc_gui.engine.labels import GENDER, RACE7

    win = make_window(qtbot, tmp_path)
    s = win.session
    win.act_demographics.trigger()
    win.demographics.set_min_conf(0.6)
    race = _top_or_bucket(s.snapshot.race7, RACE7, 0.6)
    gender = _top_or_bucket(s.snapshot.gender, GENDER, 0.6)
    if bucket == "top":
        label = next(x for x in race if x not in ("uncertain", "unknown"))
    else:
        label = bucket
    assert label in race, "the fixture project must hold images in this bucket"
    win.demographics.groupFilterRequested.emit({"race7": label})
    expect = {s.snapshot.paths[i] for i, r in enumerate(race) if r == label}
    shown = {s.snapshot.paths[r] for r in s.order}
    assert shown == expect
    assert win.filters.ff_boxes["race7"].currentData() == label and win.filters.ff_conf.value() == 60
    assert f"{len(expect)} images" in win.status.currentMessage()

    # a race x gender cell: both conditions, the same confidence
    g = gender[next(i for i, r in enumerate(race) if r == label)]
    win.demographics.groupFilterRequested.emit({"race7": label, "gender": g})
    assert {s.snapshot.paths[r] for r in s.order} == {
        s.snapshot.paths[i] for i in range(len(race)) if race[i] == label and gender[i] == g}

    # the All/All corner clears it; the view (with its confidence) survives a save and reload of the state
    win.demographics.groupFilterRequested.emit({})
    assert s.visible_count() == 60 and not s.view.fairface


def test_group_filter_state_round_trips():
    from faceqc_gui.gui.state import ViewState

    v = ViewState(fairface={"race7": "uncertain", "gender": "Female"}, fairface_min_conf=0.6)
    back = ViewState.from_dict(v.to_dict())
    assert back.fairface == v.fairface and back.fairface_min_conf == 0.6
    assert back.to_filter().fairface_min_conf == 0.6
    bad = ViewState.from_dict({"fairface": {"race7": "Martian"}, "fairface_min_conf": "x"})
    assert bad.fairface == {} and bad.fairface_min_conf == 0.0


def test_a_click_shows_exactly_the_panels_count_with_unscored_and_missing_images_around(qtbot, tmp_path):
    # Unscored images (scoring still running) and missing files are not in the panel's counts; a click on
    # "(unknown)" or on a label must not pull them into the grid either.
    import os

    from test_gui_fixtures import FAKE_MODEL_IDS, make_images

    from faceqc_gui.engine.store import Project

    ppath, folder, paths = make_project(tmp_path, n=40)
    make_images(folder, 6, seed=9, prefix="later")  # found by the next scan, not scored yet
    os.remove(paths[0])  # a scored file that went away
    with Project.open(ppath) as p:
        plan = p.plan_scoring(FAKE_MODEL_IDS)
        assert len(plan.to_score) == 6
    win = new_window(qtbot, tmp_path)
    win.open_project(ppath)
    qtbot.waitUntil(lambda: win.session.is_open and len(win.session.snapshot.ids) == 46)
    win.act_demographics.trigger()
    s = win.session
    for label in ("unknown", "White"):
        bars = win.demographics.stats.marginals["race7"]
        counted = bars.all[bars.index((label,))] if (label,) in bars.groups else 0
        win.demographics.groupFilterRequested.emit({"race7": label})
        assert s.visible_count() == counted, label
        shown = {s.snapshot.paths[r] for r in s.order}
        assert paths[0] not in shown and not any("later" in x for x in shown)


def test_ctrl_b_real_dialog_apply_then_ctrl_z(qtbot, tmp_path):
    # The whole path a user takes, with the real dialog: Ctrl+B, a size, Apply; the grid's decisions and the
    # Demographics dock follow; one Ctrl+Z restores every decision.
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from test_gui_window import key

    win = make_window(qtbot, tmp_path)
    s = win.session
    win.act_demographics.trigger()
    before_override = s.snapshot.override.copy()
    before_acc = win.demographics.stats.n_accepted
    seen = {}

    def drive():
        dlg = QApplication.activeModalWidget()
        seen["dialog"] = type(dlg).__name__
        dlg.set_size(4)  # 4 images in total, spread uniformly over race7 x gender
        dlg.refresh()
        seen["message"] = dlg.message.text()
        if dlg.apply_button.isEnabled():
            qtbot.mouseClick(dlg.apply_button, Qt.MouseButton.LeftButton)
        else:
            dlg.reject()
    QTimer.singleShot(200, drive)
    key(qtbot, win, Qt.Key.Key_B, Qt.KeyboardModifier.ControlModifier)
    assert seen["dialog"] == "BalanceDialog", seen
    assert "cannot be met" not in seen["message"], seen["message"]  # the seeded fixture can: it was applied
    assert win.demographics.stats.n_accepted != before_acc or (s.snapshot.override != before_override).any()
    assert s.can_undo()
    win.activateWindow()  # the closed modal dialog had the focus; shortcuts reach the active window only
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win)
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(s.snapshot.override, before_override)
    assert win.demographics.stats.n_accepted == before_acc
