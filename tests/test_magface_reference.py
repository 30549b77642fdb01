"""MagFace's own regression data: the toy crops and the official features produced by magface_epoch_00025.pth."""

from __future__ import annotations

import numpy as np
import pytest

from faceqc_gui.engine import registry
from faceqc_gui.engine.quality import quality_0_100


def read_reference(testdata):
    d = testdata / "reference" / "magface_toy"
    feats = {}
    for line in (d / "feat.list").read_text().splitlines():
        parts = line.split()
        if parts:
            feats[parts[0].split("/")[-1]] = np.array([float(v) for v in parts[1:]], np.float32)
    return d, feats


def test_reference_features_are_what_the_docs_say(testdata):
    _, feats = read_reference(testdata)
    assert sorted(feats) == [f"{i}.jpg" for i in range(10)]
    norms = [float(np.linalg.norm(feats[f"{i}.jpg"])) for i in range(10)]
    assert all(len(f) == 512 for f in feats.values())
    assert norms[0] == pytest.approx(21.78, abs=0.01) and norms[9] == pytest.approx(30.25, abs=0.01)
    q = [quality_0_100(n) for n in norms]
    assert q == sorted(q) and q[0] < 50 < q[-1]  # OFIQ's mapping keeps the official order and spreads the range


def test_official_weights_reproduce_the_official_features(testdata):
    path = registry.find_model_file("magface")
    if path is None:
        pytest.skip("needs the real MagFace weights: put magface_epoch_00025.pth in ./models, $FACEQC_MODELS or the "
                    "user data dir (`faceqc models download magface`); this machine cannot download them")
    from faceqc_gui.engine.imports import import_preserving_qt_env
    from faceqc_gui.engine.magface import MagFaceModel

    cv2 = import_preserving_qt_env("cv2")
    d, feats = read_reference(testdata)
    model = MagFaceModel(path)
    names = sorted(feats)
    # The official loader reads the crops with cv2.imread (BGR); ours takes RGB and flips, so hand it RGB.
    crops = np.stack([cv2.imread(str(d / n))[..., ::-1] for n in names])
    got = model.embed_aligned(crops)
    for n, g in zip(names, got):
        ref = feats[n]
        cos = float(g @ ref / (np.linalg.norm(g) * np.linalg.norm(ref)))
        # Same decoder family (libjpeg via OpenCV) and fp32 on CPU: differences are float summation order only.
        assert cos > 0.9999, (n, cos)
        assert np.linalg.norm(g) == pytest.approx(np.linalg.norm(ref), rel=1e-3), n
