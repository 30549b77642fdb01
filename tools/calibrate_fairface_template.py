#!/usr/bin/env python
"""Calibrates faceqc_gui.engine.fairface.CHIP_TEMPLATE_300: where RetinaFace's 5 landmarks sit in dlib's FairFace chip.

FairFace's classifier was trained and is officially run on dlib chips (predict.py: photo resized to a long side of
800, dlib CNN detector with 1 upsample, 5-point shape predictor, get_face_chips(size=300, padding=0.25)). FaceQC
detects with RetinaFace, whose 5 points mean other things (eye centres, nose tip, mouth corners), so dlib's own
normalised template cannot be used with them. For every face both detectors find on the shared photos this tool:

1. runs the official dlib steps and computes dlib's exact chip -> image mapping from get_face_chip_details
   (extract_image_chips: the chip's corner pixels go to the rotated corners of the detail rectangle, plus the
   (-0.5, +0.5) px per-level shift of dlib's pyramid), checked against dlib.get_face_chip on coordinate ramps;
2. maps RetinaFace's landmarks (facer's detector, RGB, threshold 0.8, long side <= 1024, back in original pixels)
   into that chip;
3. fits the template: generalised Procrustes mean of the mapped point sets (iterated to a fixed point), then the
   similarity gauge, in closed form, that minimises the distance between the corners of the chip FaceQC would cut
   (least-squares similarity from the 5 RetinaFace points onto the template, as fairface.py does) and the
   corners of dlib's chip, in 300-px chip pixels. A free least-squares fit of all 10 numbers is reported for
   comparison only (it gains about a pixel and stops looking like a face: it fits the noise).

It reports that residual per face (corners, and dlib's own 5 landmarks seen in both chips), in-sample and
leave-one-photo-out, compares the pixels of FaceQC's chips with dlib's, and measures what the 800-px resize and the
JPEG round trip of the official script do to the classifier's 224-px input.

Needs dlib and its models (pip install dlib-bin face-recognition-models): a calibration-time dependency only.
Usage: python tools/calibrate_fairface_template.py [--testdata DIR] [--cache FILE] [--json OUT] [--detector cnn|hog]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceqc_gui.engine import fairface as ff  # noqa: E402
from faceqc_gui.engine.align import estimate_similarity  # noqa: E402
from faceqc_gui.engine.imageio import load_rgb  # noqa: E402
from faceqc_gui.engine.imports import import_preserving_qt_env  # noqa: E402

CHIP = ff.CHIP_SIZE
PADDING = 0.25
RETINA_LONG_SIDE = 1024
CORNERS = np.array([[0, 0], [CHIP - 1, 0], [0, CHIP - 1], [CHIP - 1, CHIP - 1]], np.float64)


# ---------------------------------------------------------------------------------------------------------------
# dlib side


def dlib_model_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed: pip install face-recognition-models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def from_three(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) affine taking 3 points exactly onto 3 points."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def dlib_chip_to_image(rect: tuple[float, float, float, float], angle: float, size: int = CHIP) -> np.ndarray:
    """dlib's extract_image_chips mapping from chip pixel to image pixel (interpolation.h, 5-point chips)."""
    left, top, right, bottom = rect
    c = np.array([(left + right) / 2, (top + bottom) / 2])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tl, tr, bl = (c + rot @ (np.array(p) - c) for p in ((left, top), (right, top), (left, bottom)))
    m = from_three(np.array([[0, 0], [size - 1, 0], [0, size - 1]], np.float64), np.stack([tl, tr, bl]))
    # dlib's pyramid_down<2>::point_down is p/2 - (1.25, 0.75) while its filter lands half a pixel elsewhere: each
    # pyramid level dlib uses shifts the chip by (-0.5, +0.5) source pixels (measured with ramps, see self_check).
    levels = ff._pyramid_levels(float(np.hypot(m[0, 0], m[1, 0])), size)
    m[:, 2] += np.array([-0.5, 0.5]) * (2 ** levels - 1)
    return m


def self_check(dlib) -> float:
    """Max error (source px) of dlib_chip_to_image against dlib.get_face_chip on x/y ramps, at 4 scales."""
    h = w = 2400
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.array([[600, 400], [560, 404], [420, 402], [460, 405], [512, 480]], np.float64) - 500
    worst = 0.0
    for scale in (0.6, 1.3, 2.4, 4.5):
        pts = [dlib.point(int(round(1200 + x * scale)), int(round(1200 + y * scale))) for x, y in base]
        det = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), pts)
        d = dlib.get_face_chip_details(det, size=CHIP, padding=PADDING)
        m = dlib_chip_to_image((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.angle)
        gx = dlib.get_face_chip(xx, det, size=CHIP, padding=PADDING)
        gy = dlib.get_face_chip(yy, det, size=CHIP, padding=PADDING)
        j, i = np.mgrid[0:CHIP, 0:CHIP]
        pred = affine(m, np.stack([i.ravel(), j.ravel()], 1))
        err = np.hypot(pred[:, 0] - gx.ravel(), pred[:, 1] - gy.ravel())
        worst = max(worst, float(err.max()))
    return worst


def run_dlib(dlib, detector, predictor, rgb: np.ndarray, use_cnn: bool):
    """The official detect_face steps. Returns the 800-px image and, per face, (5x2 landmarks in 800-px pixels,
    chip->800-image matrix, dlib's uint8 chip)."""
    h, w = rgb.shape[:2]
    new_w, new_h = ff.fairface_source_size(w, h)
    img8 = dlib.resize_image(np.ascontiguousarray(rgb), rows=new_h, cols=new_w)
    dets = detector(img8, 1)
    rects = [d.rect for d in dets] if use_cnn else list(dets)
    faces = []
    shapes = dlib.full_object_detections()
    for r in rects:
        shapes.append(predictor(img8, r))
    if len(shapes) == 0:
        return img8, faces
    details = dlib.get_face_chip_details(shapes, size=CHIP, padding=PADDING)
    chips = dlib.get_face_chips(img8, shapes, size=CHIP, padding=PADDING)
    for s, d, chip in zip(shapes, details, chips):
        pts = np.array([[s.part(k).x, s.part(k).y] for k in range(5)], np.float64)
        m = dlib_chip_to_image((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.angle)
        faces.append((pts, m, np.asarray(chip)))
    return img8, faces


# ---------------------------------------------------------------------------------------------------------------
# RetinaFace side (facer's own network and batch_detect, loaded strictly from the shared weights)


def load_retinaface(weights: Path):
    rf = import_preserving_qt_env("facer.face_detection.retinaface")
    net = rf.RetinaFace(cfg=rf.cfg_mnet, phase="test")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    return net.eval(), rf.batch_detect


def run_retinaface(net, batch_detect, rgb: np.ndarray) -> np.ndarray:
    """(n, 5, 2) landmarks in original pixels, found at long side <= 1024 (as FaceQC's detector maps them back)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, RETINA_LONG_SIDE / max(h, w))
    img = rgb
    if scale < 1.0:
        img = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.BILINEAR))
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        out = batch_detect(net, x, threshold=0.8)
    if out["points"].numel() == 0:
        return np.zeros((0, 5, 2))
    pts = out["points"].float().numpy().reshape(-1, 5, 2).astype(np.float64)
    return pts * np.array([w / img.shape[1], h / img.shape[0]])


# ---------------------------------------------------------------------------------------------------------------
# Collecting matched faces


def to_original(m_8: np.ndarray, w: int, h: int, w8: int, h8: int) -> np.ndarray:
    """Composes a chip -> 800-image matrix with dlib's resize mapping back to original pixels."""
    sx, sy = (w - 1) / max(w8 - 1, 1), (h - 1) / max(h8 - 1, 1)
    return np.diag([sx, sy]) @ m_8


def match(dlib_pts: np.ndarray, retina: np.ndarray, used: set[int]) -> int | None:
    """Index of the RetinaFace face whose eyes agree with dlib's eye-corner midpoints (within 35 % of the
    inter-ocular distance), or None."""
    left_eye = (dlib_pts[2] + dlib_pts[3]) / 2  # dlib parts 2-3: image-left eye corners
    right_eye = (dlib_pts[0] + dlib_pts[1]) / 2
    iod = np.linalg.norm(right_eye - left_eye)
    best, best_err = None, 0.35 * iod
    for k, r in enumerate(retina):
        if k in used:
            continue
        err = max(np.linalg.norm(r[0] - left_eye), np.linalg.norm(r[1] - right_eye))
        if err < best_err:
            best, best_err = k, err
    return best


def collect(testdata: Path, detector_kind: str, cache: Path | None) -> list[dict]:
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("detector") == detector_kind:
            print(f"using cached detections from {cache}")
            return data["faces"]
    try:
        import dlib
    except ImportError as e:
        raise SystemExit(f"dlib is needed to calibrate ({e}): pip install dlib-bin face-recognition-models") from e

    models = dlib_model_dir()
    print(f"dlib {dlib.__version__}; ramp self-check of dlib's chip mapping: max error "
          f"{self_check(dlib):.2e} source px")
    if detector_kind == "cnn":
        detector = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
    else:
        detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net, batch_detect = load_retinaface(testdata / "weights" / "retinaface_mobilenet0.25.pth")
    paths = sorted(glob.glob(str(testdata / "faces" / "*" / "*")))
    faces: list[dict] = []
    for path in paths:
        t0 = time.time()
        rgb = load_rgb(path)
        h, w = rgb.shape[:2]
        w8, h8 = ff.fairface_source_size(w, h)
        _, dfaces = run_dlib(dlib, detector, predictor, rgb, detector_kind == "cnn")
        retina = run_retinaface(net, batch_detect, rgb)
        used: set[int] = set()
        n = 0
        for pts8, m8, chip in dfaces:
            pts = affine(to_original(np.hstack([np.eye(2), np.zeros((2, 1))]), w, h, w8, h8), pts8)
            k = match(pts, retina, used)
            if k is None:
                continue
            used.add(k)
            n += 1
            faces.append({
                "image": str(Path(path).relative_to(testdata)),
                "size": [w, h], "size800": [w8, h8],
                "dlib_points_800": pts8.tolist(),
                "chip_to_800": m8.tolist(),
                "retina_points": retina[k].tolist(),
                "dlib_chip_png": _png(chip),
            })
        print(f"{Path(path).name}: dlib {len(dfaces)}, RetinaFace {len(retina)}, matched {n} "
              f"({time.time() - t0:.1f}s)", flush=True)
    if cache is not None:
        cache.write_text(json.dumps({"detector": detector_kind, "faces": faces}))
    return faces


def _png(chip: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="PNG")
    return buf.getvalue().hex()


def _unpng(hexdata: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes.fromhex(hexdata))).convert("RGB"))


# ---------------------------------------------------------------------------------------------------------------
# Fitting


def chip_to_image_dlib(face: dict) -> np.ndarray:
    w, h = face["size"]
    w8, h8 = face["size800"]
    return to_original(np.array(face["chip_to_800"]), w, h, w8, h8)


def mapped_points(faces: list[dict]) -> np.ndarray:
    """RetinaFace's points of every face, in dlib's chip pixels: (n, 5, 2)."""
    out = []
    for f in faces:
        m = chip_to_image_dlib(f)
        out.append(affine(ff._invert(m), np.array(f["retina_points"])))
    return np.stack(out)


def chip_errors(q: np.ndarray, template: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """For each face: where dlib-chip positions `probe` (per face (k, 2), or shared (k, 2)) land in FaceQC's chip,
    minus where they are in dlib's: (n, k, 2). FaceQC's chip is the similarity from the face's points onto the
    template; by equivariance it acts on the chip-mapped points q exactly as on the image points."""
    errs = []
    for i, qi in enumerate(q):
        s = estimate_similarity(qi, template)
        p = probe[i] if probe.ndim == 3 else probe
        errs.append(affine(s, p) - p)
    return np.stack(errs)


def procrustes_template(q: np.ndarray, iters: int = 100) -> np.ndarray:
    """Generalised Procrustes mean of the point sets, then the similarity gauge that minimises the chip-corner
    error (closed form: one least-squares similarity over all faces' corners)."""
    t = q.mean(0)
    for _ in range(iters):
        new = np.mean([affine(estimate_similarity(qi, t), qi) for qi in q], axis=0)
        if np.abs(new - t).max() < 1e-10:
            break
        t = new
    # A similarity G applied to the template moves every face's chip by G: pick G taking the corners as FaceQC
    # would place them back onto the true corners.
    placed = np.concatenate([affine(estimate_similarity(qi, t), CORNERS) for qi in q])
    g = estimate_similarity(placed, np.tile(CORNERS, (len(q), 1)))
    return affine(g, t)


def refine_template(q: np.ndarray, t0: np.ndarray) -> np.ndarray:
    from scipy.optimize import least_squares

    def residuals(flat):
        return chip_errors(q, flat.reshape(5, 2), CORNERS).ravel()

    res = least_squares(residuals, t0.ravel(), method="lm", xtol=1e-12, ftol=1e-12)
    return res.x.reshape(5, 2)


def fit(q: np.ndarray) -> np.ndarray:
    """The template FaceQC uses: Procrustes mean + corner gauge. (A free least-squares fit of all 10 numbers,
    refine_template, gains about 1 px and returns shapes that are no longer a face: it is reported, not used.)"""
    return procrustes_template(q)


def decompose(q: np.ndarray, template: np.ndarray) -> dict:
    """FaceQC's chip relative to dlib's, per face, as a similarity: scale ratio, rotation, shift of the centre."""
    scale, angle, shift = [], [], []
    centre = np.array([(CHIP - 1) / 2, (CHIP - 1) / 2])
    for qi in q:
        s = estimate_similarity(qi, template)
        scale.append(float(np.hypot(s[0, 0], s[1, 0])))
        angle.append(float(np.degrees(np.arctan2(s[1, 0], s[0, 0]))))
        shift.append(float(np.linalg.norm(affine(s, centre[None])[0] - centre)))
    scale, angle, shift = np.array(scale), np.abs(angle), np.array(shift)
    return {"scale_ratio_median_abs_dev": float(np.median(np.abs(scale - 1))),
            "scale_ratio_p90_abs_dev": float(np.percentile(np.abs(scale - 1), 90)),
            "rotation_deg_median": float(np.median(angle)), "rotation_deg_p90": float(np.percentile(angle, 90)),
            "centre_shift_px_median": float(np.median(shift)), "centre_shift_px_p90": float(np.percentile(shift, 90))}


def stats(err: np.ndarray) -> dict:
    d = np.linalg.norm(err, axis=-1)  # (n, k)
    per_face_max = d.max(1)
    return {"mean": float(d.mean()), "max": float(d.max()), "median_face_max": float(np.median(per_face_max)),
            "p90_face_max": float(np.percentile(per_face_max, 90))}


def dlib_noise_floor(testdata: Path, faces: list[dict]) -> dict | None:
    """How far dlib's chip moves when only its detector box changes (HOG instead of the CNN, same landmark model):
    the official pipeline's own jitter, to judge the RetinaFace residual against. Corner error in chip px."""
    try:
        import dlib
    except ImportError:
        return None
    predictor = dlib.shape_predictor(str(dlib_model_dir() / "shape_predictor_5_face_landmarks.dat"))
    hog = dlib.get_frontal_face_detector()
    errs = []
    by_image: dict[str, list[dict]] = {}
    for f in faces:
        by_image.setdefault(f["image"], []).append(f)
    for image, group in by_image.items():
        img8 = dlib.resize_image(np.ascontiguousarray(load_rgb(testdata / image)), rows=group[0]["size800"][1],
                                 cols=group[0]["size800"][0])
        shapes = [predictor(img8, r) for r in hog(img8, 1)]
        for f in group:
            ref = np.array(f["dlib_points_800"])
            iod = np.linalg.norm(ref[0] - ref[2])
            best = None
            for s in shapes:
                pts = np.array([[s.part(k).x, s.part(k).y] for k in range(5)], np.float64)
                d = np.abs(pts - ref).max()
                if d < 0.3 * iod and (best is None or d < best[0]):
                    best = (d, s)
            if best is None:
                continue
            d = dlib.get_face_chip_details(best[1], size=CHIP, padding=PADDING)
            m_hog = dlib_chip_to_image((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.angle)
            back = affine(ff._invert(np.array(f["chip_to_800"])), affine(m_hog, CORNERS))
            errs.append(np.linalg.norm(back - CORNERS, axis=1))
    if not errs:
        return None
    e = np.array(errs)
    return {"n_faces": len(e), "mean": float(e.mean()), "max": float(e.max()),
            "median_face_max": float(np.median(e.max(1)))}


# ---------------------------------------------------------------------------------------------------------------
# Pixels


def to_224(chip: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(chip).resize((ff.INPUT_SIZE, ff.INPUT_SIZE), Image.BILINEAR), np.float64)


def jpeg75(chip: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def pixel_report(testdata: Path, faces: list[dict], template: np.ndarray) -> dict:
    """Mean absolute differences (0-255 scale) of the 224-px classifier inputs."""
    rows = []
    cache: dict[str, np.ndarray] = {}
    for f in faces:
        rgb = cache.setdefault(f["image"], load_rgb(testdata / f["image"]))
        h, w = rgb.shape[:2]
        dlib_chip = _unpng(f["dlib_chip_png"])
        retina = np.array(f["retina_points"])[None]
        m_true = chip_to_image_dlib(f)
        img8, to8 = ff.resize_like_dlib(rgb, tuple(f["size800"]))
        # Same geometry as dlib (its exact mapping), sampled by FaceQC's sampler: from the 800-px image, and
        # straight from the original.
        exact_800 = ff.extract_chip(img8, ff._invert(np.array(f["chip_to_800"])))
        exact_orig = ff.extract_chip(rgb, ff._invert(m_true))
        ours_800 = ff.fairface_chips(rgb, retina, emulate_resize=True, template=template)[0]
        ours_orig = ff.fairface_chips(rgb, retina, emulate_resize=False, template=template)[0]
        ref = to_224(dlib_chip)
        rows.append({
            "image": f["image"],
            "source_px_per_chip_px": float(np.hypot(m_true[0, 0], m_true[1, 0])),
            "sampler_vs_dlib": float(np.abs(to_224(exact_800) - ref).mean()),
            "faceqc_vs_dlib": float(np.abs(to_224(ours_800) - ref).mean()),
            "faceqc_no_resize_vs_dlib": float(np.abs(to_224(ours_orig) - ref).mean()),
            "resize800_effect": float(np.abs(to_224(exact_orig) - to_224(exact_800)).mean()),
            "jpeg75_effect": float(np.abs(to_224(jpeg75(dlib_chip)) - ref).mean()),
            "upscaled": bool(max(w, h) < ff.SOURCE_LONG_SIDE),
        })
    return {"faces": rows}


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--testdata", type=Path, default=Path(os.environ.get("FACEQC_TESTDATA",
                                                                         REPO.parent / "shared" / "testdata")))
    ap.add_argument("--detector", choices=("cnn", "hog"), default="cnn",
                    help="dlib face detector: cnn is the official one (slow on CPU); hog finds similar faces")
    ap.add_argument("--cache", type=Path, default=None, help="JSON cache of the detections (reused when present)")
    ap.add_argument("--json", type=Path, default=None, help="write every number reported here to this file")
    args = ap.parse_args(argv)

    faces = collect(args.testdata.resolve(), args.detector, args.cache)
    if len(faces) < 5:
        print(f"only {len(faces)} matched faces: not enough to calibrate")
        return 1
    q = mapped_points(faces)
    images = sorted({f["image"] for f in faces})
    print(f"\n{len(faces)} faces matched on {len(images)} photos")

    template = fit(q)
    free = refine_template(q, template)
    print("template (chip px):\n" + np.array2string(template, precision=3, suppress_small=True))
    print("current fairface.CHIP_TEMPLATE_300:\n" + np.array2string(ff.CHIP_TEMPLATE_300, precision=3))

    dlib_pts_chip = np.stack([affine(ff._invert(np.array(f["chip_to_800"])), np.array(f["dlib_points_800"]))
                              for f in faces])
    report: dict = {"n_faces": len(faces), "n_images": len(images), "template_points": template.tolist(),
                    "free_fit_template_points": free.tolist()}
    for name, t in (("template", template), ("free 10-number fit", free), ("plain mean", q.mean(0)),
                    ("module constant", ff.CHIP_TEMPLATE_300)):
        c = stats(chip_errors(q, t, CORNERS))
        p = stats(chip_errors(q, t, dlib_pts_chip))
        report[name] = {"corners": c, "dlib_points": p}
        print(f"{name:>17}: corners mean {c['mean']:.2f} max {c['max']:.2f} (median face {c['median_face_max']:.2f},"
              f" p90 {c['p90_face_max']:.2f}); dlib's 5 points mean {p['mean']:.2f} max {p['max']:.2f} chip px")

    # Leave one photo out: fit without it, measure on its faces.
    loo = []
    for img in images:
        train = np.array([f["image"] != img for f in faces])
        t = fit(q[train])
        loo.append(chip_errors(q[~train], t, CORNERS))
    c = stats(np.concatenate(loo))
    report["leave_one_photo_out_corners"] = c
    print(f"leave-one-photo-out corners: mean {c['mean']:.2f} max {c['max']:.2f} (median face "
          f"{c['median_face_max']:.2f}, p90 {c['p90_face_max']:.2f}) chip px")

    for kind in ("real", "synthetic"):
        sel = np.array([f["image"].startswith(f"faces/{kind}/") for f in faces])
        if sel.any():
            c = stats(chip_errors(q[sel], template, CORNERS))
            report[f"corners_{kind}"] = c
            print(f"  {kind} photos ({sel.sum()} faces): corners mean {c['mean']:.2f} max {c['max']:.2f} "
                  f"(median face {c['median_face_max']:.2f})")
    parts = decompose(q, template)
    report["decomposition"] = parts
    print("FaceQC's chip vs dlib's as a similarity: |scale - 1| median {scale_ratio_median_abs_dev:.3f} p90 "
          "{scale_ratio_p90_abs_dev:.3f}; |rotation| median {rotation_deg_median:.1f} p90 {rotation_deg_p90:.1f} deg;"
          " centre shift median {centre_shift_px_median:.1f} p90 {centre_shift_px_p90:.1f} px".format(**parts))

    floor = dlib_noise_floor(args.testdata.resolve(), faces)
    report["dlib_hog_vs_cnn_corners"] = floor
    if floor:
        print(f"dlib against itself (HOG box instead of CNN box, {floor['n_faces']} faces): corners mean "
              f"{floor['mean']:.2f} max {floor['max']:.2f} (median face {floor['median_face_max']:.2f}) chip px")

    per_face = np.linalg.norm(chip_errors(q, template, CORNERS), axis=-1).max(1)
    print("\nper face (max corner error, chip px):")
    for f, e in zip(faces, per_face):
        print(f"  {e:6.2f}  {f['image']}")

    px = pixel_report(args.testdata.resolve(), faces, template)
    report["pixels"] = px
    rows = px["faces"]

    def summary(key, sel=lambda r: True):
        vals = np.array([r[key] for r in rows if sel(r)])
        return f"mean {vals.mean():.2f} max {vals.max():.2f} (n={len(vals)})" if len(vals) else "n=0"

    print("\n224-px input, mean |difference| on the 0-255 scale:")
    for key, label in (("sampler_vs_dlib", "dlib geometry, FaceQC sampler vs dlib chip"),
                       ("faceqc_vs_dlib", "FaceQC chip (RetinaFace + fitted template) vs dlib"),
                       ("faceqc_no_resize_vs_dlib", "same, without the 800-px resize vs dlib"),
                       ("resize800_effect", "800-px resize on vs off, dlib geometry"),
                       ("jpeg75_effect", "official JPEG q75 round trip")):
        print(f"  {label:52s} {summary(key)}")
    print(f"  800-px resize effect, photos larger than 800: {summary('resize800_effect', lambda r: not r['upscaled'])}"
          f"; smaller (upscaled): {summary('resize800_effect', lambda r: r['upscaled'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
