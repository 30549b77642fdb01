"""`faceqc project ...` end to end on fake scoring results (the networks are replaced, the store is real)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
from test_store_helpers import MODEL_IDS, MODELS, expected_decision, fake_result, make_files

from faceqc_gui.cli import main
from faceqc_gui.engine import pipeline
from faceqc_gui.engine.store import Project


class FakePipeline:
    calls: list[list[str]] = []
    interrupt_after: int | None = None

    def __init__(self, loaded, batch_size=32, **kw):
        self.loaded = loaded

    def run(self, entries, stop_event=None):
        paths = [str(e) for e in entries]
        FakePipeline.calls.append(paths)
        for i, p in enumerate(paths):
            if FakePipeline.interrupt_after is not None and i == FakePipeline.interrupt_after:
                raise KeyboardInterrupt
            yield fake_result(p, models=self.loaded.models_info)


@pytest.fixture
def fake_models(monkeypatch):
    from faceqc_gui.cli import score as score_cmd

    loaded = SimpleNamespace(model_ids=dict(MODEL_IDS), models_info=MODELS, keys=["magface", "celeba", "fairface"],
                             skipped={})
    seen_args = []

    def load_from_args(args):
        seen_args.append(args)
        return loaded

    FakePipeline.calls = []
    FakePipeline.interrupt_after = None
    monkeypatch.setattr(score_cmd, "load_from_args", load_from_args)
    monkeypatch.setattr(pipeline, "ScorePipeline", FakePipeline)
    return SimpleNamespace(loaded=loaded, seen_args=seen_args)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_full_workflow(tmp_path, capsys, fake_models):
    files = make_files(tmp_path / "imgs", 15)
    proj = tmp_path / "p.faceqc"
    code, out, _ = run(capsys, "project", "create", proj, tmp_path / "imgs")
    assert code == 0 and proj.exists()
    code, _, err = run(capsys, "project", "create", proj)
    assert code == 2 and "already exists" in err

    code, out, err = run(capsys, "project", "score", proj, "--device", "cpu", "--batch-size", "4")
    assert code == 0, err
    assert fake_models.seen_args[0].batch_size == 4 and fake_models.seen_args[0].device == "cpu"
    assert sorted(FakePipeline.calls[0]) == sorted(files)
    code, out, err = run(capsys, "project", "score", proj)
    assert code == 0 and FakePipeline.calls[1] == []  # incremental: nothing new

    code, out, _ = run(capsys, "project", "status", proj, "--json")
    info = json.loads(out)
    results = {f: fake_result(f) for f in files}
    want_acc = sum(expected_decision(r, None, 20.0) for r in results.values())
    assert info["counts"]["total"] == 15 and info["counts"]["accepted"] == want_acc
    assert {m["key"]: m["images"] for m in info["models"]}["magface"] == 15
    code, out, _ = run(capsys, "project", "status", proj)
    assert code == 0 and "Threshold" in out

    rejected_by_score = [f for f, r in results.items() if not expected_decision(r, None, 20.0)]
    code, out, _ = run(capsys, "project", "set", proj, rejected_by_score[0], "--accept")
    assert code == 0
    code, out, _ = run(capsys, "project", "list", proj, "--status", "overridden")
    assert out.split() == [rejected_by_score[0]]
    code, out, _ = run(capsys, "project", "set", proj, tmp_path / "imgs", "--reject")  # a folder: all under it
    code, out, _ = run(capsys, "project", "list", proj, "--status", "accepted")
    assert out.strip() == ""
    code, out, _ = run(capsys, "project", "undo", proj)
    assert code == 0 and "Reject 15" in out
    code, out, _ = run(capsys, "project", "list", proj, "--status", "accepted")
    assert len(out.split()) == want_acc + 1
    code, _, err = run(capsys, "project", "set", proj, tmp_path / "nope.jpg", "--accept")
    assert code == 2 and "not in the project" in err

    code, out, _ = run(capsys, "project", "threshold", proj, "0", "--score-mode", "lowest")
    code, out, _ = run(capsys, "project", "list", proj, "--status", "accepted")
    assert sorted(out.split()) == sorted({f for f, r in results.items() if r.faces} | {rejected_by_score[0]})
    run(capsys, "project", "undo", proj)
    run(capsys, "project", "undo", proj)

    target = tmp_path / "export"
    code, out, err = run(capsys, "project", "export", proj, target, "--mode", "symlink")
    assert code == 0, err
    with open(target / "manifest.csv", newline="") as f:
        exported = {r["source"] for r in csv.DictReader(f)}
    assert len(exported) == want_acc + 1 and rejected_by_score[0] in exported
    with Project.open(proj) as p:
        assert p.get_setting("export")["mode"] == "symlink"
    code, _, err = run(capsys, "project", "export", proj, target)
    assert code == 2 and "not empty" in err
    code, _, err = run(capsys, "project", "export", proj, tmp_path / "second")  # the saved mode is said aloud
    assert code == 0 and "exporting as symlinks, the mode of the last export" in err
    assert (tmp_path / "second" / "images").is_dir()


def test_score_interrupted_keeps_what_was_done(tmp_path, capsys, fake_models):
    files = make_files(tmp_path / "imgs", 40)
    proj = tmp_path / "p.faceqc"
    run(capsys, "project", "create", proj, tmp_path / "imgs")
    FakePipeline.interrupt_after = 35
    code, _, err = run(capsys, "project", "score", proj)
    assert code == 130 and "interrupted" in err
    with Project.open(proj) as p:
        assert p.counts()["unscored"] == 5
    FakePipeline.interrupt_after = None
    code, _, _ = run(capsys, "project", "score", proj)
    assert code == 0 and sorted(FakePipeline.calls[-1]) == sorted(files[35:])


def test_errors_are_one_clear_line(tmp_path, capsys, fake_models):
    code, _, err = run(capsys, "project", "status", tmp_path / "missing.faceqc")
    assert code == 2 and "not found" in err and "Traceback" not in err
    junk = tmp_path / "junk.faceqc"
    junk.write_bytes(b"\x00garbage" * 100)
    code, _, err = run(capsys, "project", "status", junk)
    assert code == 2 and "not a FaceQC project" in err
    code, _, err = run(capsys, "project", "create", tmp_path / "x.faceqc", tmp_path / "no-folder")
    assert code == 2 and "no such file" in err and not (tmp_path / "x.faceqc").exists()
    run(capsys, "project", "create", tmp_path / "empty.faceqc")
    code, _, err = run(capsys, "project", "score", tmp_path / "empty.faceqc")
    assert code == 2 and "no folders" in err
    with pytest.raises(SystemExit):
        main(["project", "set", str(tmp_path / "empty.faceqc"), "a.jpg"])  # --accept/--reject/--clear required
    capsys.readouterr()
