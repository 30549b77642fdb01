"""`faceqc models`, `faceqc models download`, `faceqc models path`, called in-process."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from test_download import http_server, payload  # noqa: F401 (http_server is a fixture used by name)

from faceqc_gui.cli import main
from faceqc_gui.engine import registry


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def line_of(out: str, key: str) -> str:
    """The first table row of ``key`` (rows start with the key column)."""
    return next(line for line in out.splitlines() if line.split()[:1] == [key])


@pytest.fixture(autouse=True)
def _no_models_in_cwd(tmp_path, monkeypatch):
    # ./models is a search dir; the repo's own models/ folder (README, perhaps a developer's weights) must not count.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


def test_list_shows_every_model_missing_and_the_search_dirs(capsys, tmp_path):
    assert main(["models", "--models-dir", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    for key, spec in registry.MODELS.items():
        row = line_of(out, key)
        assert spec.filename in row and "MISSING" in row
    assert "not published" in line_of(out.split("SHA256")[1], "celeba")
    assert registry.MODELS["detector"].sha256 in out
    assert registry.MODELS["fairface"].licence in out
    dirs = [str(d) for d in registry.search_dirs(tmp_path / "mine")]
    positions = [out.index(d) for d in dirs]
    assert positions == sorted(positions) and str(registry.user_models_dir()) in dirs


def test_list_shows_found_official_and_custom_files(capsys, tmp_path, monkeypatch):
    good, mine = b"detector bytes", b"my own magface"
    monkeypatch.setitem(registry.MODELS, "detector", dataclasses.replace(registry.MODELS["detector"], sha256=sha(good)))
    d = tmp_path / "w"
    d.mkdir()
    (d / "retinaface_mobilenet0.25.pth").write_bytes(good)  # the detector's second accepted name
    (d / "magface_epoch_00025.pth").write_bytes(mine)  # real spec: published sha256 differs
    assert main(["models", "--models-dir", str(d)]) == 0
    out = capsys.readouterr().out
    det, mag = line_of(out, "detector"), line_of(out, "magface")
    assert str(d / "retinaface_mobilenet0.25.pth") in det and "official" in det and "MISSING" not in det
    assert str(d / "magface_epoch_00025.pth") in mag and "CUSTOM" in mag
    assert "MISSING" in line_of(out, "celeba")


def test_path_prints_search_dirs_in_order(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEQC_MODELS", str(tmp_path / "env"))
    assert main(["models", "path", "--models-dir", str(tmp_path / "first")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str(d) for d in registry.search_dirs(tmp_path / "first")]
    assert lines[0] == str(tmp_path / "first") and lines[1] == str(tmp_path / "env")
    assert lines[-1] == str(registry.user_models_dir())


@pytest.fixture
def served_detector(http_server, monkeypatch):  # noqa: F811
    data = payload(11, 300_000)
    http_server.files["det.pth"] = data
    spec = dataclasses.replace(registry.MODELS["detector"], sha256=sha(data), size_bytes=len(data),
                               url=http_server.url("/f/det.pth"))
    monkeypatch.setitem(registry.MODELS, "detector", spec)
    return data


def test_download_writes_into_models_dir_then_skips_installed(capsys, tmp_path, http_server, served_detector):  # noqa: F811
    dest = tmp_path / "dest"
    assert main(["models", "download", "detector", "--models-dir", str(dest)]) == 0
    assert (dest / "mobilenet0.25_Final.pth").read_bytes() == served_detector
    assert "installed" in capsys.readouterr().out
    n = len(http_server.requests)

    assert main(["models", "download", "detector", "--models-dir", str(dest)]) == 0
    assert "already installed" in capsys.readouterr().out
    assert len(http_server.requests) == n  # verified file: no network at all


def test_download_url_override_for_one_key(capsys, tmp_path, http_server, served_detector):  # noqa: F811
    http_server.files["mirror.pth"] = served_detector
    dest = tmp_path / "dest"
    assert main(["models", "download", "detector", "--models-dir", str(dest),
                 "--url", http_server.url("/f/mirror.pth")]) == 0
    assert http_server.requests[-1]["path"] == "/f/mirror.pth"
    assert (dest / "mobilenet0.25_Final.pth").read_bytes() == served_detector

    assert main(["models", "download", "detector", "magface", "--url", http_server.url("/f/mirror.pth")]) == 2
    assert "exactly one KEY" in capsys.readouterr().err


def test_download_failure_exits_nonzero_with_message(capsys, tmp_path, http_server, served_detector):  # noqa: F811
    dest = tmp_path / "dest"
    rc = main(["models", "download", "detector", "--models-dir", str(dest), "--url", http_server.url("/status/404")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "detector" in err and "HTTP 404" in err
    assert not (dest / "mobilenet0.25_Final.pth").exists()


def test_download_unknown_key(capsys):
    assert main(["models", "download", "resnet9000"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_download_keeps_a_custom_file_aside_and_warns_when_an_earlier_folder_wins(capsys, tmp_path, monkeypatch,
                                                                                  http_server, served_detector):  # noqa: F811
    # The user data dir holds custom weights under the official name: the download must not destroy them.
    data_dir = tmp_path / "userdata"
    data_dir.mkdir()
    monkeypatch.setattr(registry, "user_models_dir", lambda: data_dir)
    (data_dir / "mobilenet0.25_Final.pth").write_bytes(b"my fine-tuned detector")
    # ... and ./models (searched before the user data dir) holds another custom file.
    (tmp_path / "cwd" / "models").mkdir()
    (tmp_path / "cwd" / "models" / "mobilenet0.25_Final.pth").write_bytes(b"an old experiment")
    assert main(["models", "download", "detector"]) == 0
    out, err = capsys.readouterr()
    assert (data_dir / "mobilenet0.25_Final.pth").read_bytes() == served_detector
    aside = [p for p in data_dir.iterdir() if ".replaced-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == b"my fine-tuned detector"
    assert "kept as" in err
    assert "warning" in err and "models/mobilenet0.25_Final.pth is found first" in err
