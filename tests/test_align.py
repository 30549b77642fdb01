"""Alignment checked numerically: skimage's estimator, an independent bilinear warp, landmarks onto the template."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from faceqc_gui.engine.align import ARCFACE_112, align_arcface, estimate_similarity, warp_affine


def test_estimate_similarity_equals_skimage_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(50):
        src = rng.uniform(0, 500, (5, 2))
        dst = rng.uniform(0, 112, (5, 2))
        t = SimilarityTransform.from_estimate(src, dst)
        np.testing.assert_allclose(estimate_similarity(src, dst), t.params[:2], rtol=1e-9, atol=1e-9)


def test_no_reflection_on_a_mirrored_face():
    mirrored = ARCFACE_112.astype(np.float64) * [-1, 1] + [200, 0]
    m = estimate_similarity(mirrored, ARCFACE_112)
    assert np.linalg.det(m[:, :2]) > 0  # a proper similarity, never a flip


def test_exact_similarity_is_recovered():
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_112 - shift) @ np.linalg.inv(r).T
    m = estimate_similarity(src, ARCFACE_112)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], ARCFACE_112, atol=1e-4)


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
    got = warp_affine(img, m, (112, 112)).astype(float)
    ref = _bilinear_reference(img.astype(float), m, 112, 112)
    inside = ref.sum(-1) > 0
    # OpenCV interpolates with 5-bit fixed-point weights: agreement within a couple of grey levels.
    assert np.abs(got - ref)[inside].max() <= 3.0
    assert np.abs(got - ref)[inside].mean() < 0.6


def test_landmarks_land_on_the_template_after_alignment():
    rng = np.random.default_rng(2)
    img = np.zeros((400, 300, 3), np.uint8)
    angle = 0.25
    r = 2.2 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lms = ARCFACE_112 @ r.T + [60, 90]
    for (x, y), c in zip(lms, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]):
        xi, yi = int(round(x)), int(round(y))
        img[yi - 2: yi + 3, xi - 2: xi + 3] = c
    crop = align_arcface(img, lms + rng.normal(0, 0.01, lms.shape))
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for (tx, ty), c in zip(ARCFACE_112, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]):
        match = np.all(np.abs(crop.astype(int) - c) < 80, axis=-1) & (crop.sum(-1) > 100)
        ys, xs = np.nonzero(match)
        assert len(xs), f"dot {c} not found"
        assert abs(xs.mean() - tx) < 1.0 and abs(ys.mean() - ty) < 1.0


@pytest.mark.parametrize("shape", [(112, 112, 3), (37, 500, 3)])
def test_crops_keep_channel_order(shape):
    img = np.zeros(shape, np.uint8)
    img[..., 0] = 200  # red only
    crop = align_arcface(img, ARCFACE_112 * (min(shape[:2]) / 112.0))
    assert crop[..., 0].max() == 200 and crop[..., 1:].max() == 0
