"""`faceqc score` end to end: real detector weights, real image files, JSONL and CSV, errors, exit codes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from faceqc_gui.cli import main
from faceqc_gui.engine.records import CSV_COLUMNS


@pytest.fixture()
def models_dir(tmp_path, retinaface_weights):
    d = tmp_path / "models"
    d.mkdir()
    (d / "mobilenet0.25_Final.pth").symlink_to(retinaface_weights)
    return d


@pytest.fixture()
def inputs(tmp_path, testdata):
    d = tmp_path / "in ünïcødé"
    d.mkdir()
    shutil.copy(testdata / "faces" / "real" / "skimage_astronaut.png", d / "astronaut.png")
    shutil.copy(testdata / "faces" / "real" / "dlib_2008_007676.jpg", d / "group.jpg")
    shutil.copy(testdata / "nonfaces" / "skimage_coffee.png", d / "coffee.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("this is not an image")
    return d


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]


def test_detection_only_run_writes_a_row_per_face_and_per_problem_image(inputs, models_dir, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    rc = main(["score", str(inputs), "-o", str(out), "--models-dir", str(models_dir), "--models", "magface",
               "--skip-missing", "--device", "cpu"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipping magface" in err and "magface_epoch_00025.pth" in err
    rows = read_jsonl(out)
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(Path(r["path"]).name, []).append(r)
    assert set(by_file) == {"astronaut.png", "group.jpg", "coffee.png", "empty.jpg", "notes.jpg"}
    assert len(by_file["astronaut.png"]) == 1 and by_file["astronaut.png"][0]["face_index"] == 0
    assert len(by_file["group.jpg"]) >= 6  # 7 young women at a table (SOURCES.md)
    coffee = by_file["coffee.png"]
    assert coffee == [dict(coffee[0], face_index=None, box=None, error=None, accepted=False)]
    assert "empty" in by_file["empty.jpg"][0]["error"] or "0 bytes" in by_file["empty.jpg"][0]["error"]
    assert by_file["notes.jpg"][0]["error"]
    face = by_file["astronaut.png"][0]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= face["width"] and 0 <= y1 < y2 <= face["height"]
    assert len(face["landmarks"]) == 5 and face["det_score"] > 0.9
    # No MagFace ran: no score, nothing accepted, and the record says which files produced it.
    assert face["magface_norm"] is None and face["accepted"] is False
    assert face["models"]["detector"]["sha256"].startswith("2979b33f")
    assert "magface" not in face["models"]


def test_csv_output_has_the_stable_columns(inputs, models_dir, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score", str(inputs / "astronaut.png"), str(inputs / "coffee.png"), "-o", str(out),
                 "--models-dir", str(models_dir), "--models", "magface", "--skip-missing"]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_COLUMNS
    assert [Path(r["path"]).name for r in rows] == ["astronaut.png", "coffee.png"]
    assert float(rows[0]["box_x2"]) > float(rows[0]["box_x1"]) and rows[0]["lm4_y"] != ""
    assert rows[1]["face_index"] == "" and rows[1]["box_x1"] == ""


def test_missing_weight_file_fails_clearly_and_keeps_old_output(inputs, models_dir, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    out.write_text("previous results\n")
    rc = main(["score", str(inputs), "-o", str(out), "--models-dir", str(models_dir)])
    assert rc != 0
    err = capsys.readouterr().err
    assert "magface_epoch_00025.pth" in err and str(models_dir) in err and "faceqc models download" in err
    assert out.read_text() == "previous results\n"


def test_missing_detector_and_missing_input_path(tmp_path, inputs, capsys):
    empty = tmp_path / "nomodels"
    empty.mkdir()
    rc = main(["score", str(inputs), "-o", str(tmp_path / "o.jsonl"), "--models-dir", str(empty), "--skip-missing"])
    assert rc != 0 and "mobilenet0.25_Final.pth" in capsys.readouterr().err
    rc = main(["score", str(tmp_path / "does-not-exist"), "-o", str(tmp_path / "o.jsonl")])
    assert rc != 0 and "does-not-exist" in capsys.readouterr().err


def test_faceqc_models_env_var_is_searched(inputs, models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEQC_MODELS", str(models_dir))
    out = tmp_path / "o.jsonl"
    assert main(["score", str(inputs / "astronaut.png"), "-o", str(out), "--models", "magface", "--skip-missing"]) == 0
    assert read_jsonl(out)[0]["face_index"] == 0


def test_console_script_runs_as_a_process(inputs, models_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    exe = Path(sys.executable).with_name("faceqc")
    r = subprocess.run([str(exe), "score", str(inputs / "coffee.png"), "-o", str(out), "--models-dir",
                        str(models_dir), "--models", "magface", "--skip-missing"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert read_jsonl(out)[0]["face_index"] is None


def test_magface_scores_match_an_independent_computation(inputs, models_dir, tmp_path):
    """The whole path (decode, detect, align, BGR/255, iResNet100, norm) against the same steps done by hand."""
    import numpy as np
    import torch
    from magface_checkpoints import save_official_ddp_checkpoint

    from faceqc_gui.engine.align import align_arcface
    from faceqc_gui.engine.imageio import load_rgb

    net = save_official_ddp_checkpoint(models_dir / "magface_epoch_00025.pth", depth=100, seed=11)
    out = tmp_path / "s.jsonl"
    assert main(["score", str(inputs / "astronaut.png"), str(inputs / "group.jpg"), "-o", str(out),
                 "--models-dir", str(models_dir), "--models", "magface", "--threshold", "0", "--batch-size", "4"]) == 0
    rows = read_jsonl(out)
    assert len(rows) >= 7 and all(r["magface_norm"] is not None for r in rows)
    assert rows[0]["models"]["magface"]["official"] is False  # random weights are "custom"
    for r in rows[:3]:
        rgb = load_rgb(r["path"])
        crop = align_arcface(rgb, np.array(r["landmarks"], np.float32))
        x = torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            want = float(net(x).norm())
        # landmarks in the JSON are rounded to 0.01 px: tiny differences in the crop are allowed
        assert r["magface_norm"] == pytest.approx(want, rel=2e-3)
        assert r["quality_0_100"] is not None and r["accepted"] is True  # threshold 0
