"""5-point similarity alignment, as InsightFace's face_align.norm_crop does it (the crops MagFace was trained on).

estimate_similarity reproduces skimage's SimilarityTransform.estimate (Umeyama's least squares, no reflection), and
warp_affine is cv2.warpAffine (bilinear, border 0): MagFace's official alignment uses exactly these two.
"""

from __future__ import annotations

import numpy as np

from .imports import import_preserving_qt_env

# ArcFace 112x112 template (insightface face_align.py `arcface_src`): image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner: the order RetinaFace gives its landmarks in.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def _cv():
    # Imported on first use, not at module import: `import cv2` points QT_QPA_PLATFORM_PLUGIN_PATH at OpenCV's own Qt
    # plugins, which breaks a PySide6 window started later; import_preserving_qt_env saves and restores that variable.
    return import_preserving_qt_env("cv2")


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) matrix M of the least-squares similarity taking src points to dst points (Umeyama 1991, as skimage)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    a = dst_d.T @ src_d / n
    d = np.ones(dim)
    if np.linalg.det(a) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1)
    u, s, vt = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        return np.full((2, 3), np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:dim, :dim] = u @ vt
        else:
            sign = d[dim - 1]
            d[dim - 1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ vt
            d[dim - 1] = sign
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = 1.0 / src_d.var(axis=0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t[:2]


def warp_affine(rgb: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.warpAffine(rgb, M, (w, h)) with bilinear sampling and black border, as the official code."""
    return _cv().warpAffine(np.ascontiguousarray(rgb), np.asarray(m, np.float64), size, borderValue=0.0)


def arcface_matrix(landmarks: np.ndarray) -> np.ndarray:
    """(2, 3) similarity taking the 5 detector points (original pixels) onto ARCFACE_112."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
        raise ValueError(f"alignment needs 5 finite (x, y) landmarks, got {lm.shape} {lm.tolist()}")
    m = estimate_similarity(lm, ARCFACE_112)
    if not np.isfinite(m).all() or abs(np.linalg.det(m[:, :2])) < 1e-12:
        raise ValueError("degenerate landmarks (all at one point): no similarity maps them onto the template")
    return m


def align_arcface(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(112, 112, 3) uint8 crop in the input's channel order (RGB in, RGB out)."""
    return warp_affine(rgb, arcface_matrix(landmarks), (112, 112))


def align_arcface_batch(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    lms = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    if len(lms) == 0:
        return np.zeros((0, 112, 112, 3), np.uint8)
    return np.stack([align_arcface(rgb, lm) for lm in lms])
