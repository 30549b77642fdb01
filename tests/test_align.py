"""Alignment checked numerically: skimage's estimator, an independent bilinear warp, landmarks onto the template."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from faceqc_gui.engine.align import (
    ARCFACE_112,
    align_arcface,
    align_arcface_batch,
    arcface_matrix,
    estimate_similarity,
    warp_affine,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def _skimage(src, dst):
    # In float64: given float32 points (the template is float32) skimage computes in float32 (~1e-6 px apart);
    # estimate_similarity always works in float64.
    t = SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    assert t, "skimage could not estimate"
    return t.params[:2]


def _rotation(angle, scale):
    return scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_template_is_insightfaces_arcface_112():
    # insightface face_align.py `arcface_src` (MODELS.md 1.1): order eye, eye, nose, mouth, mouth, image-left first.
    assert ARCFACE_112.shape == (5, 2) and ARCFACE_112.dtype == np.float32
    assert ARCFACE_112[0, 0] < ARCFACE_112[1, 0] and ARCFACE_112[3, 0] < ARCFACE_112[4, 0]
    assert ARCFACE_112[:2, 1].max() < ARCFACE_112[2, 1] < ARCFACE_112[3:, 1].min()
    np.testing.assert_allclose(ARCFACE_112[2], [56.0252, 71.7366], atol=1e-4)


def test_estimate_similarity_equals_skimage_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(50):
        src = rng.uniform(0, 500, (5, 2))
        dst = rng.uniform(0, 112, (5, 2))
        got = estimate_similarity(src, dst)
        assert got.shape == (2, 3) and got.dtype == np.float64
        np.testing.assert_allclose(got, _skimage(src, dst), rtol=1e-9, atol=1e-9)


def test_estimate_similarity_equals_skimage_on_noisy_faces():
    rng = np.random.default_rng(3)
    for _ in range(20):
        r = _rotation(rng.uniform(-0.6, 0.6), rng.uniform(0.3, 8))
        src = ARCFACE_112 @ r.T + rng.uniform(0, 2000, 2) + rng.normal(0, 2, (5, 2))
        np.testing.assert_allclose(estimate_similarity(src, ARCFACE_112), _skimage(src, ARCFACE_112),
                                   rtol=1e-9, atol=1e-9)


def test_reflected_points_get_no_reflection_same_as_skimage():
    rng = np.random.default_rng(4)
    for _ in range(10):
        mirrored = ARCFACE_112.astype(np.float64) * [-1, 1] + [rng.uniform(150, 300), 0] + rng.normal(0, 1, (5, 2))
        m = estimate_similarity(mirrored, ARCFACE_112)
        assert np.linalg.det(m[:, :2]) > 0  # a rotation and a scale, never a flip
        np.testing.assert_allclose(m, _skimage(mirrored, ARCFACE_112), rtol=1e-9, atol=1e-9)
        # A flip would have mapped the points exactly; the best proper similarity cannot.
        assert np.abs(mirrored @ m[:, :2].T + m[:, 2] - ARCFACE_112).max() > 5


def test_collinear_points_follow_skimage():
    src = np.c_[np.arange(5.0), 2 * np.arange(5.0) + 1]  # rank-deficient: Umeyama's special case
    dst = np.random.default_rng(5).uniform(0, 100, (5, 2))
    np.testing.assert_allclose(estimate_similarity(src, dst), _skimage(src, dst), rtol=1e-9, atol=1e-9)


def test_exact_similarity_is_recovered():
    r, shift = _rotation(0.3, 2.5), np.array([40.0, -7.0])
    src = (ARCFACE_112 - shift) @ np.linalg.inv(r).T
    m = estimate_similarity(src, ARCFACE_112)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], ARCFACE_112, atol=1e-4)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-6)


def _bilinear_reference(img, m, w, h):
    """Independent inverse-mapping bilinear warp (OpenCV semantics: pixel centres at integers, border 0)."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    sx, sy = (inv @ pts)[:2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((h * w, img.shape[2]))
    H, W = img.shape[:2]
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
            ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            out[ok] += wgt[ok, None] * img[yi[ok], xi[ok]]
    return out.reshape(h, w, -1)


def test_warp_affine_matches_an_independent_bilinear_warp():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (90, 120, 3)).astype(np.uint8)
    m = estimate_similarity(rng.uniform(20, 80, (5, 2)), ARCFACE_112)
    got = warp_affine(img, m, (112, 112))
    assert got.shape == (112, 112, 3) and got.dtype == np.uint8
    ref = _bilinear_reference(img.astype(float), m, 112, 112)
    inside = ref.sum(-1) > 0
    assert inside.mean() > 0.2 and (~inside).mean() > 0.05  # both the warped image and the black border are there
    # OpenCV interpolates with 5-bit fixed-point weights: agreement within a couple of grey levels.
    assert np.abs(got - ref)[inside].max() <= 3.0
    assert np.abs(got - ref)[inside].mean() < 0.6
    assert (got[~inside] == 0).all()


def test_warp_affine_output_size_is_width_then_height():
    img = np.full((50, 60, 3), 9, np.uint8)
    assert warp_affine(img, np.array([[1.0, 0, 0], [0, 1, 0]]), (30, 20)).shape == (20, 30, 3)


def _dotted_face(lms, shape=(400, 300, 3)):
    img = np.zeros(shape, np.uint8)
    for (x, y), c in zip(lms, COLOURS):
        xi, yi = int(round(x)), int(round(y))
        img[yi - 2: yi + 3, xi - 2: xi + 3] = c
    return img


def _find_dots(crop):
    found = []
    for c in COLOURS:
        match = np.all(np.abs(crop.astype(int) - c) < 80, axis=-1) & (crop.sum(-1) > 100)
        ys, xs = np.nonzero(match)
        assert len(xs), f"dot {c} not found"
        found.append((xs.mean(), ys.mean()))
    return np.array(found)


def test_landmarks_land_on_the_template_after_alignment():
    rng = np.random.default_rng(2)
    lms = ARCFACE_112 @ _rotation(0.25, 2.2).T + [60, 90]
    noisy = lms + rng.normal(0, 0.01, lms.shape)
    m = arcface_matrix(noisy)
    np.testing.assert_allclose(noisy @ m[:, :2].T + m[:, 2], ARCFACE_112, atol=0.05)
    crop = align_arcface(_dotted_face(lms), noisy)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert np.abs(_find_dots(crop) - ARCFACE_112).max() < 1.0


def test_batch_alignment_equals_single_alignment():
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (300, 400, 3)).astype(np.uint8)
    lms = np.stack([ARCFACE_112 @ _rotation(a, s).T + off
                    for a, s, off in ((0.1, 1.5, (20, 30)), (-0.4, 2.0, (150, 40)), (0.0, 0.7, (300, 200)))])
    batch = align_arcface_batch(img, lms)
    assert batch.shape == (3, 112, 112, 3) and batch.dtype == np.uint8
    for crop, lm in zip(batch, lms):
        np.testing.assert_array_equal(crop, align_arcface(img, lm))
    assert align_arcface_batch(img, np.zeros((0, 5, 2), np.float32)).shape == (0, 112, 112, 3)


@pytest.mark.parametrize("shape", [(112, 112, 3), (37, 500, 3)])
def test_crops_keep_channel_order(shape):
    img = np.zeros(shape, np.uint8)
    img[..., 0] = 200  # red only
    crop = align_arcface(img, ARCFACE_112 * (min(shape[:2]) / 112.0))
    assert crop[..., 0].max() == 200 and crop[..., 1:].max() == 0


@pytest.mark.parametrize("bad", [np.full((5, 2), 10.0), np.array([[np.nan, 1]] * 5), np.zeros((4, 2))])
def test_degenerate_landmarks_raise_a_clear_error(bad):
    with pytest.raises(ValueError, match="landmarks"):
        align_arcface(np.zeros((50, 50, 3), np.uint8), bad)


def test_opencv_is_imported_lazily_without_touching_qt_variables():
    # `import cv2` sets QT_QPA_PLATFORM_PLUGIN_PATH to OpenCV's bundled Qt plugins, which breaks the PySide6 GUI.
    code = (
        "import os, sys, numpy as np\n"
        "import faceqc_gui.engine.align as a\n"
        "assert 'cv2' not in sys.modules, 'cv2 imported at module import'\n"
        "a.align_arcface(np.zeros((60, 60, 3), np.uint8), a.ARCFACE_112 / 2)\n"
        "assert 'cv2' in sys.modules\n"
        "print(os.environ.get('QT_QPA_PLATFORM_PLUGIN_PATH'), os.environ.get('QT_QPA_FONTDIR'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_QPA_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "None"]
