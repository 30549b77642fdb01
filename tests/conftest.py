"""Shared fixtures. The shared test data lives outside the repo: ../shared/testdata, or $FACEQC_TESTDATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTDATA = Path(os.environ.get("FACEQC_TESTDATA", REPO.parent / "shared" / "testdata")).resolve()

# Tests never reach the network or the user's real data dir.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"shared test data not found at {TESTDATA}; set FACEQC_TESTDATA to its folder")
    return TESTDATA


@pytest.fixture(scope="session")
def retinaface_weights(testdata) -> Path:
    p = testdata / "weights" / "retinaface_mobilenet0.25.pth"
    assert p.is_file(), f"missing {p}"
    return p


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Keep the user data dir (model downloads, recent projects, thumbnail cache) inside pytest's tmp."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.delenv("FACEQC_MODELS", raising=False)
