"""Export of the accepted set: files, names, manifests in trainers' formats, and the safety rules."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from test_store_helpers import MODEL_IDS, expected_decision, fake_result, make_files

from faceqc_gui.engine.align import ARCFACE_112
from faceqc_gui.engine.export import ExportError, export_project
from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from faceqc_gui.engine.store import Project


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _tree_state(folder) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[p] = (_digest(p), st.st_mtime_ns, st.st_size)
    return out


@pytest.fixture
def proj(tmp_path):
    src = tmp_path / "src"
    files = make_files(src / "one", 12) + make_files(src / "two", 8)  # one/img0000.jpg and two/img0000.jpg clash
    spaced = src / "two" / "my face.jpg"
    spaced.write_bytes(b"spaced" * 20)
    files.append(str(spaced))
    p = Project.create(tmp_path / "e.faceqc")
    p.add_folder(src)
    plan = p.plan_scoring(MODEL_IDS)
    results = {f: fake_result(f) for f in plan.to_score}
    results[files[0]] = fake_result(files[0], norms=[30.0])
    results[files[12]] = fake_result(files[12], norms=[31.0])  # two/img0000.jpg
    results[str(spaced)] = fake_result(str(spaced), norms=[29.0], race4=False)
    p.store_results(list(results.values()))
    snap = p.snapshot()
    ids = dict(zip(snap.paths, snap.ids.tolist()))
    overrides = {files[1]: "accept", files[2]: "reject"}
    for f, v in overrides.items():
        p.set_override([ids[f]], v)
    expected = {f for f, r in results.items() if expected_decision(r, overrides.get(f), 20.0)}
    yield p, src, results, expected
    p.close()


def _manifest(target):
    with open(target / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_copy_export_files_and_manifests(proj, tmp_path):
    p, src, results, expected = proj
    before = _tree_state(src)
    target = tmp_path / "out"
    summary = export_project(p, target, mode="copy")
    assert _tree_state(src) == before  # sources untouched
    rows = _manifest(target)
    assert {r["source"] for r in rows} == expected and summary.exported == len(expected)
    names = [r["file"] for r in rows]
    assert len(set(n.lower() for n in names)) == len(names)  # unique, even case-insensitively
    assert sorted(os.listdir(target / "images")) == sorted(n.split("/", 1)[1] for n in names)
    for r in rows:
        assert " " not in r["file"]
        assert _digest(target / r["file"]) == _digest(r["source"])
        res = results[r["source"]]
        assert r["decision"] == "accepted"
        if r["source"].endswith("img0001.jpg") and "/one/" in r["source"]:
            assert r["reason"] == "override_accept"
        elif res.faces:
            assert r["reason"] == "score_above" and float(r["score"]) >= 20.0
            prim = res.primary_face
            assert float(r["magface_norm"]) == pytest.approx(prim.magface_norm, rel=1e-5)
            assert float(r["celeba_Smiling"]) == pytest.approx(prim.celeba["Smiling"], abs=1e-6)
            assert r["fairface_gender_top"] == prim.fairface["gender_top"]
            assert r["model_magface_sha256"] == MODEL_IDS["magface"]
            assert len(r["face_norms"].split(";")) == len(res.faces)
    assert not any(n.startswith(".faceqc-export") for n in os.listdir(target))

    m = json.loads((target / "manifest.json").read_text(encoding="utf-8"))  # strict JSON: no NaN
    assert m["threshold"] == 20.0 and len(m["images"]) == len(rows)
    by_src = {e["source"]: e for e in m["images"]}
    for path in expected:
        e, res = by_src[path], results[path]
        assert len(e["faces"]) == len(res.faces)
        for got, want in zip(e["faces"], res.faces):
            assert got["magface_norm"] == pytest.approx(want.magface_norm)
        assert e["models"]["celeba"]["sha256"] == MODEL_IDS["celeba"]
    assert m["summary"]["exported"] == len(expected)
    assert "Exported" in (target / "summary.txt").read_text()


def test_celeba_list_format_and_threshold(proj, tmp_path):
    p, _, results, expected = proj
    for t, target in ((0.5, tmp_path / "c5"), (0.8, tmp_path / "c8")):
        export_project(p, target, mode="symlink", celeba_threshold=t)
        lines = (target / "list_attr_celeba.txt").read_text().splitlines()
        src_of = {r["file"].split("/", 1)[1]: r["source"] for r in _manifest(target)}
        n = int(lines[0])
        assert lines[1].split() == list(CELEBA_ATTRIBUTES)
        assert len(lines) == n + 2
        with_faces = [s for s in expected if results[s].faces]
        assert n == len(with_faces)
        for line in lines[2:]:
            parts = line.split()
            assert len(parts) == 41 and (target / "images" / parts[0]).exists()
            prim = results[src_of[parts[0]]].primary_face
            assert [int(v) for v in parts[1:]] == [1 if prim.celeba[a] >= t else -1 for a in CELEBA_ATTRIBUTES]


def test_fairface_labels_csv(proj, tmp_path):
    p, _, results, expected = proj
    export_project(p, tmp_path / "ff", mode="symlink")
    src_of = {r["file"]: r["source"] for r in _manifest(tmp_path / "ff")}
    with open(tmp_path / "ff" / "fairface_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["file", "race", "race4", "gender", "age"]
    for r in rows:
        ff = results[src_of[r["file"]]].primary_face.fairface
        for col, head in (("race", "race7"), ("gender", "gender"), ("age", "age")):
            probs = ff[head]
            assert r[col] == FAIRFACE_HEADS[head][int(np.argmax([probs[lab] for lab in FAIRFACE_HEADS[head]]))]
        assert r["race4"] == (ff["race4_top"] or "")
    assert any(r["race4"] == "" for r in rows)  # the image scored without the 4-race file


def test_hardlink_and_symlink_modes(proj, tmp_path):
    p, src, _, _ = proj
    before = _tree_state(src)
    export_project(p, tmp_path / "hl", mode="hardlink")
    for r in _manifest(tmp_path / "hl"):
        assert os.path.samefile(tmp_path / "hl" / r["file"], r["source"])
        assert not os.path.islink(tmp_path / "hl" / r["file"])
    export_project(p, tmp_path / "sl", mode="symlink")
    for r in _manifest(tmp_path / "sl"):
        link = tmp_path / "sl" / r["file"]
        assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(r["source"])
    assert {k: v[0] for k, v in _tree_state(src).items()} == {k: v[0] for k, v in before.items()}


def test_refuses_source_folders_and_non_empty_targets(proj, tmp_path):
    p, src, _, _ = proj
    before = _tree_state(src)
    for bad in (src, src / "one", src / "one" / "export", tmp_path):
        with pytest.raises(ExportError, match="source folder"):
            export_project(p, bad)
    assert not (src / "one" / "export").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_project(p, busy)
    assert os.listdir(busy) == ["notes.txt"]
    export_project(p, busy, allow_nonempty=True)
    assert (busy / "notes.txt").read_text() == "mine" and (busy / "manifest.csv").exists()
    with pytest.raises(ExportError, match="already has"):  # never overwrites a previous export
        export_project(p, busy, allow_nonempty=True)
    with pytest.raises(ExportError, match="mode"):
        export_project(p, tmp_path / "x", mode="move")
    with pytest.raises(ExportError, match="between 0 and 1"):
        export_project(p, tmp_path / "x", celeba_threshold=2)
    assert not (tmp_path / "x").exists()
    assert _tree_state(src) == before


def test_missing_accepted_files_are_skipped_and_reported(proj, tmp_path):
    p, src, results, expected = proj
    gone = sorted(expected)[0]
    os.remove(gone)
    summary = export_project(p, tmp_path / "m")
    assert gone in summary.skipped_missing
    assert {r["source"] for r in _manifest(tmp_path / "m")} == expected - {gone}


def test_aligned_crops(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(220, 200, 3), dtype=np.uint8)
    (tmp_path / "src").mkdir()
    img = tmp_path / "src" / "face.png"
    Image.fromarray(rgb).save(img)
    (tmp_path / "src" / "broken.png").write_bytes(b"\x89PNG not really")
    with Project.create(tmp_path / "c.faceqc") as p:
        p.add_folder(tmp_path / "src")
        p.plan_scoring(MODEL_IDS)
        r = fake_result(str(img), norms=[28.0])
        # landmarks = the ArcFace template shifted by (30, 40): the aligned crop is exactly that window
        r.faces[0].detection.landmarks = (ARCFACE_112 + np.array([30, 40], np.float32)).astype(np.float32)
        p.store_results([r, fake_result(str(tmp_path / "src" / "broken.png"), norms=[27.0])])
        summary = export_project(p, tmp_path / "out", crops=True)
    assert summary.crops == 1 and len(summary.crop_failures) == 1
    rows = {os.path.basename(r["source"]): r for r in _manifest(tmp_path / "out")}
    crop = np.asarray(Image.open(tmp_path / "out" / rows["face.png"]["crop"]))
    assert crop.shape == (112, 112, 3)
    np.testing.assert_array_equal(crop, rgb[40:152, 30:142])
    assert rows["broken.png"]["crop"] == "" and (tmp_path / "out" / rows["broken.png"]["file"]).exists()


@pytest.mark.parametrize("existing", [False, True])
def test_cancel_midway_leaves_nothing_behind(proj, tmp_path, existing):
    # Cancel after a few files were placed: no half export under the final names, the target as it was, and the
    # sources untouched; a later export into the same target works.
    import threading

    from faceqc_gui.engine.export import ExportCancelled

    p, src, _, expected = proj
    before = _tree_state(src)
    target = tmp_path / "out"
    if existing:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        if done >= 2:
            stop.set()
    with pytest.raises(ExportCancelled, match="nothing was written"):
        export_project(p, target, allow_nonempty=existing, progress=progress, stop_event=stop)
    assert seen and max(seen) < len(expected)
    if existing:
        assert sorted(os.listdir(target)) == ["notes.txt"]
    else:
        assert not target.exists()
    assert _tree_state(src) == before
    export_project(p, target, allow_nonempty=existing)
    assert len(_manifest(target)) >= 1


def test_export_names_are_unique_across_case_and_unicode_normalisation():
    from faceqc_gui.engine.export import unique_names

    names = unique_names(["/i/a\u0301.jpg", "/j/\u00e1.jpg", "/k/A\u0301.JPG", "/l/my photo.png", "/m/my_photo.png"])
    assert names[0] == "a\u0301.jpg" and names[1] == "\u00e1_2.jpg" and names[2] == "A\u0301_3.JPG"
    assert names[3:] == ["my_photo.png", "my_photo_2.png"]
    import unicodedata

    keys = [unicodedata.normalize("NFC", os.path.splitext(n)[0]).casefold() for n in names]
    assert len(set(keys)) == len(keys)  # what macOS / Windows would see as the same file never repeats


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root reads chmod-000 files anyway") \
    if hasattr(os, "geteuid") else pytest.mark.skipif(True, reason="POSIX permissions only")
def test_an_unreadable_source_is_skipped_and_named_not_fatal(proj, tmp_path):
    p, src, results, expected = proj
    victim = sorted(expected)[0]
    os.chmod(victim, 0)
    try:
        summary = export_project(p, tmp_path / "out")
    finally:
        os.chmod(victim, 0o644)
    assert summary.exported == len(expected) - 1
    assert [s for s, _ in summary.skipped_unreadable] == [victim]
    assert victim in (tmp_path / "out" / "summary.txt").read_text()


def test_unreadable_check_is_exercised_as_root_too(proj, tmp_path, monkeypatch):
    # Root reads chmod-000 files, so the test above skips in CI: simulate the failing open instead.
    import builtins

    p, src, results, expected = proj
    victim = sorted(expected)[0]
    real_open = builtins.open

    def fake_open(file, *a, **k):
        if str(file) == victim:
            raise PermissionError(13, "Permission denied", victim)
        return real_open(file, *a, **k)
    monkeypatch.setattr(builtins, "open", fake_open)
    summary = export_project(p, tmp_path / "out")
    monkeypatch.undo()
    assert summary.exported == len(expected) - 1
    assert summary.skipped_unreadable == [(victim, "Permission denied")]
    assert "cannot be read" in summary.text() and victim in (tmp_path / "out" / "summary.txt").read_text()
    assert victim not in {r["source"] for r in _manifest(tmp_path / "out")}
