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
                 "--models-dir", str(models_dir), "--models", "magface", "--skip-missing", "--fast-detection"]) == 0
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


@pytest.fixture(scope="module")
def all_models_dir(tmp_path_factory, retinaface_weights):
    """Every weight file, built from the real architectures with seeded random weights in the official formats."""
    from attr_checkpoints import save_fairface_checkpoint, save_farl_checkpoint
    from magface_checkpoints import save_official_ddp_checkpoint

    d = tmp_path_factory.mktemp("allmodels")
    (d / "mobilenet0.25_Final.pth").symlink_to(retinaface_weights)
    save_official_ddp_checkpoint(d / "magface_epoch_00025.pth", depth=100, seed=5)
    save_farl_checkpoint(d / "face_attribute.farl.celeba.pt", seed=5)
    save_fairface_checkpoint(d / "res34_fair_align_multi_7_20190809.pt", seed=5)
    return d


def test_one_pass_with_all_three_models_jsonl_and_csv(inputs, all_models_dir, tmp_path, capsys):
    from faceqc_gui.engine.labels import AGE9, CELEBA_ATTRIBUTES, GENDER, RACE7

    out = tmp_path / "all.jsonl"
    assert main(["score", str(inputs / "astronaut.png"), str(inputs / "coffee.png"), "-o", str(out),
                 "--models-dir", str(all_models_dir)]) == 0
    face, coffee = read_jsonl(out)
    assert face["magface_norm"] > 0 and 0 <= face["quality_0_100"] <= 100
    assert list(face["celeba"]) == list(CELEBA_ATTRIBUTES) and all(0 <= p <= 1 for p in face["celeba"].values())
    ff = face["fairface"]
    assert list(ff["race7"]) == list(RACE7) and abs(sum(ff["race7"].values()) - 1) < 1e-4
    assert list(ff["gender"]) == list(GENDER) and list(ff["age"]) == list(AGE9)
    assert ff["race7_top"] == max(ff["race7"], key=ff["race7"].get)
    assert ff["race4"] is None  # no 4-race file: stated as absent, not invented
    assert set(face["models"]) == {"detector", "magface", "celeba", "fairface"}
    assert all(len(v["sha256"]) == 64 for v in face["models"].values())
    # Provenance: the real detector is official; random MagFace weights are custom (the official hash is published);
    # the random FaRL / FairFace files are unverified (no hash published, none recorded): null, never "official".
    m = face["models"]
    assert m["detector"]["official"] is True and m["magface"]["official"] is False
    assert m["celeba"]["official"] is None and m["fairface"]["official"] is None
    err = capsys.readouterr().err
    assert "magface_epoch_00025.pth is not the official magface file" in err
    assert "face_attribute.farl.celeba.pt (celeba) is unverified" in err
    assert coffee["face_index"] is None and "celeba" not in coffee

    csv_out = tmp_path / "all.csv"
    assert main(["score", str(inputs / "astronaut.png"), "-o", str(csv_out), "--models-dir", str(all_models_dir)]) == 0
    with open(csv_out, newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert float(row["celeba_Smiling"]) == pytest.approx(face["celeba"]["Smiling"], abs=1e-4)
    assert row["fairface_race7_top"] == ff["race7_top"]
    assert float(row["fairface_age_20-29"]) == pytest.approx(ff["age"]["20-29"], abs=1e-5)
    assert row["model_celeba_file"] == "face_attribute.farl.celeba.pt" and len(row["model_magface_sha256"]) == 64
    assert (row["model_detector_official"], row["model_magface_official"], row["model_celeba_official"]) == \
        ("true", "false", "")


def test_models_option_and_skip_missing_with_partial_weights(inputs, all_models_dir, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("mobilenet0.25_Final.pth", "res34_fair_align_multi_7_20190809.pt"):
        (partial / name).symlink_to(all_models_dir / name)
    out = tmp_path / "p.jsonl"
    rc = main(["score", str(inputs / "astronaut.png"), "-o", str(out), "--models-dir", str(partial)])
    assert rc != 0 and "magface_epoch_00025.pth" in capsys.readouterr().err
    rc = main(["score", str(inputs / "astronaut.png"), "-o", str(out), "--models-dir", str(partial), "--skip-missing"])
    err = capsys.readouterr().err
    assert rc == 0 and "skipping magface" in err and "skipping celeba" in err
    row = read_jsonl(out)[0]
    assert row["magface_norm"] is None and "celeba" not in row and row["fairface"]["gender_top"] in ("Male", "Female")
    rc = main(["score", str(inputs / "astronaut.png"), "-o", str(out), "--models-dir", str(all_models_dir),
               "--models", "celeba"])
    row = read_jsonl(out)[0]
    assert rc == 0 and "celeba" in row and "fairface" not in row and row["magface_norm"] is None


def test_a_file_name_that_is_not_utf8_is_scored_and_written_exactly(inputs, models_dir, tmp_path):
    # Legal on Linux, common from old zip archives: the run must not die on it, and the JSONL keeps the exact name.
    import os

    raw = os.path.join(os.fsencode(inputs), b"caf\xe9.png")
    shutil.copy(inputs / "astronaut.png", os.fsdecode(raw))
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"o.{suffix}"
        assert main(["score", str(inputs), "-o", str(out), "--models-dir", str(models_dir), "--models", "magface",
                     "--skip-missing"]) == 0
        text = out.read_text(encoding="utf-8")  # still valid UTF-8 throughout
        assert "astronaut.png" in text and "coffee.png" in text
        if suffix == "jsonl":
            paths = [r["path"] for r in read_jsonl(out)]
            odd = [p for p in paths if p.endswith(".png") and "caf" in p]
            assert [os.fsencode(p) for p in odd] == [raw]
            assert [r for r in read_jsonl(out) if r["path"] == odd[0]][0]["face_index"] == 0
        else:
            assert "caf\\udce9.png" in text  # the undecodable byte, escaped as JSON would: readable, nothing lost


def test_a_bad_batch_size_is_refused_before_old_output_is_touched(inputs, models_dir, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text("previous results\n")
    with pytest.raises(SystemExit) as e:
        main(["score", str(inputs), "-o", str(out), "--models-dir", str(models_dir), "--batch-size", "0"])
    assert e.value.code == 2 and "--batch-size" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"


def test_ctrl_c_stops_cleanly_and_keeps_every_row_written(inputs, models_dir, tmp_path):
    import signal
    import time

    many = tmp_path / "many"
    many.mkdir()
    for i in range(150):
        shutil.copy(inputs / "astronaut.png", many / f"a{i:03d}.png")
    out = tmp_path / "o.jsonl"
    exe = Path(sys.executable).with_name("faceqc")
    proc = subprocess.Popen([str(exe), "score", str(many), "-o", str(out), "--models-dir", str(models_dir),
                             "--models", "magface", "--skip-missing", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    rows = read_jsonl(out)  # every line complete and parseable
    assert 0 < len(rows) < 150 and all(r["face_index"] == 0 for r in rows)
