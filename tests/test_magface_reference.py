"""MagFace's own regression data (IrvingMeng/MagFace inference/toy_imgs): ten aligned 112x112 JPEG crops and the
features the published magface_epoch_00025.pth gives for them (inference/gen_feat.py output, `feat.list`).

Without the real weights only the reference data and FaceQC's quality mapping of it are checked; with them, FaceQC
must reproduce the official features.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from faceqc_gui.engine import registry
from faceqc_gui.engine.quality import DEFAULT_THRESHOLD, quality_0_100

REPO = Path(__file__).resolve().parent.parent
# Read at import: the autouse fixture in conftest.py hides $FACEQC_MODELS and the user's data dir from each test.
_ENV_MODELS = os.environ.get("FACEQC_MODELS")
_USER_MODELS = registry.user_models_dir()


def _weights_dirs() -> list[Path]:
    dirs = [Path(_ENV_MODELS).expanduser()] if _ENV_MODELS else []
    return list(dict.fromkeys(dirs + [REPO / "models", Path.cwd() / "models", _USER_MODELS]))


def _find_weights() -> Path | None:
    for d in _weights_dirs():
        for name in registry.MODELS["magface"].filenames:
            if (d / name).is_file():
                return d / name
    return None


def read_img_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_feat_list(path: Path) -> list[tuple[str, np.ndarray]]:
    """gen_feat.py's format: per line the image path, then the 512 floats of its raw embedding, space-separated."""
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            rows.append((parts[0], np.array([float(v) for v in parts[1:]], dtype=np.float64)))
    return rows


@pytest.fixture(scope="module")
def reference(testdata):
    d = testdata / "reference" / "magface_toy"
    return d, read_img_list(d / "img.list"), read_feat_list(d / "feat.list")


def test_reference_norms_rise_and_quality_maps_them_monotonically(reference):
    _, images, feats = reference
    assert [name for name, _ in feats] == images == [f"toy_imgs/{i}.jpg" for i in range(10)]
    assert all(v.shape == (512,) and np.isfinite(v).all() for _, v in feats)
    norms = [float(np.linalg.norm(v)) for _, v in feats]
    assert norms[0] == pytest.approx(21.78, abs=0.01) and norms[-1] == pytest.approx(30.25, abs=0.01)
    assert all(a < b for a, b in zip(norms, norms[1:])), norms
    q = [quality_0_100(n) for n in norms]
    assert all(a <= b for a, b in zip(q, q[1:])), q  # integer rounding may tie, never invert
    assert q[0] < 50 < q[-1]  # the toy set spans OFIQ's centre (23)
    assert all(n > DEFAULT_THRESHOLD for n in norms)  # all ten are usable faces


def test_the_official_weights_reproduce_the_official_features(reference):
    path = _find_weights()
    if path is None:
        where = "\n".join(f"  {d}" for d in _weights_dirs())
        pytest.skip(
            f"needs the real MagFace weights, {registry.MODELS['magface'].filename} (283 MB), which are not on this "
            f"machine. Put the file in one of:\n{where}\n(or set FACEQC_MODELS to its folder); get it with "
            f"`faceqc models download magface` or from {registry.MODELS['magface'].url}"
        )
    from faceqc_gui.engine.imports import import_preserving_qt_env
    from faceqc_gui.engine.magface import MagFaceModel

    cv2 = import_preserving_qt_env("cv2")
    d, _, feats = reference
    model = MagFaceModel(path, "cpu")
    # gen_feat.py reads with cv2.imread (BGR); embed_aligned takes RGB and flips it back.
    crops = np.stack([cv2.imread(str(d / Path(name).name))[..., ::-1] for name, _ in feats])
    got = model.embed_aligned(crops).astype(np.float64)
    want = np.stack([v for _, v in feats])
    cos = np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    rel = np.abs(np.linalg.norm(got, axis=1) - np.linalg.norm(want, axis=1)) / np.linalg.norm(want, axis=1)
    official = "official" if model.is_official else "NOT the published file (sha256 differs)"
    table = f"weights {path} ({official})\n" + "\n".join(
        f"{name}: cos {c:.6f}, norm rel err {r:.2e}" for (name, _), c, r in zip(feats, cos, rel)
    )
    # Tolerances: the official features came from a GPU (different summation order: ~1e-5 relative) and from
    # whichever libjpeg the authors' OpenCV had. libjpeg-turbo (today's OpenCV and Pillow, which agree bit for bit on
    # these files) and IJG libjpeg 9 (older OpenCV builds) can differ by 1-2 grey levels in some pixels through
    # chroma upsampling; for a trained iResNet such input noise moves the embedding by well under 1 % and its norm
    # by a few 1e-4. 2e-3 relative on the norm (0.06 at a norm of 30) still keeps every neighbouring pair of toy
    # images, at least 0.3 apart, in order; cosine >= 0.999 rules out any wrong preprocessing (BGR vs RGB, a mean or
    # a std, a different alignment), each of which costs far more.
    assert np.all(cos >= 0.999), table
    assert np.all(rel <= 2e-3), table
    assert list(np.argsort(np.linalg.norm(got, axis=1))) == list(range(10)), table
