"""Face detection: facer's RetinaFace MobileNet-0.25, loaded strictly from a local file, run at two scales.

The network and its post-processing are facer's own (`RetinaFace` with `cfg_mnet`, `post_process`, driven as facer's
`batch_detect` drives them, with anchors computed once per size instead of per call): the input is fed
as RGB minus the BGR means (104, 117, 123), exactly as facer does it (the FaRL models downstream were used with that),
confidence > 0.8, NMS 0.4 with the +1 area convention. Three things differ in how it is driven:

1. Loading. facer's `load_net` loads with strict=False after checking that *one* key matched, downloads when no path
   is given, and sets `cudnn.benchmark` globally. We build facer's network class ourselves, load the file with
   weights_only=True / map_location='cpu' (the canonical file holds CUDA-tagged storages), strip `module.`, and require
   every one of the 300 keys with its shape: a different architecture, a truncated file or a full-training checkpoint
   is a `ModelLoadError`. One different *training* has the same name, size, keys and shapes (biubug6's
   Face-Detector-1MB `mobilenet0.25_Final.pth`, other anchor sizes: five wrong boxes on the astronaut instead of one),
   so it is refused by its checksum. Any other file that loads is used and reported as not official (`file_info`).
   Nothing here touches the network.

2. Scales. RetinaFace's largest anchor is 512 px. At full resolution a face larger than that gets extra boxes on parts
   of itself (a 1200x1800 portrait: 4 boxes, all inside the real face's box); shrunk to 640 px, small faces in group
   photos vanish (Solvay 1927, 3000x2171, 29 people: 19 found at 640, 29 at 1024 and above). No single size is right
   for both (MODELS.md section 9), so every image larger than 640 px is run twice:
     pass A: long side <= 640 (never enlarged). All its faces are kept: it is clean on big faces, even a face filling
             a tight crop (checked on crops of the shared portraits at 0.8x-1.6x the face box).
     pass B: long side <= 2048 (bounds the cost: the full 3000x2171 is 2.1x the pixels of 2048x1482, for faces
             of >= ~24 px that 2048 already sees). Only its boxes < 400 px at its scale are used:
             - one matching a pass-A face (IoU >= 0.5) replaces it: the same face seen with more pixels, so finer
               landmarks (Solvay: pass A sees those faces at 15-23 px);
             - one not overlapping any kept face (IoU <= 0.3 and <= 75 % of its area inside a kept box) is added:
               a face too small (or scored just under 0.8) for pass A.
   Then any box with > 75 % of its area inside a larger kept box is dropped (a part of that face).
   Calibration on the shared photos (tests/test_detect.py holds the counts against the truth in SOURCES.md):
   - 400 px: the largest real face pass B had to add is Obama's, looking down, 343 px (pass A missed it); the
     smallest rejected pass-B box is 446 px (parts of the 1200x1800 portrait's face), and pass B's one false positive
     (a 484 px box on Hawking's lap) is above it too. A real face that big is one pass A normally sees.
   - 75 %: part-of-face boxes lie 87-100 % inside the face's box; real faces overlapping another face's box reach
     53 % (a face cut by the border behind John Lennon) and 36 % (the man behind Obama).
   - Replacing pass-A faces by their pass-B twins brings Solvay's landmarks closer to those of a full-resolution run
     (mean distance 5.1 % -> 3.2 % of the face width, worst 12 % -> 5 %) without changing any count.
   With ``fast=True`` (CLI `--fast-detection`) pass B is skipped for portrait-like images (every pass-A face >= 400 px
   at pass B's scale and >= 40 % of the short side): ~2.6x less detection time on CPU for big single faces, but a
   small second face beside the big one (a bystander, a poster; < ~90 px in a 1800-px image) is then never looked
   for, since pass A cannot see it. Off by default: counts first (tests/test_detect.py has the bystander case).
   Result: one box for every big synthetic / portrait face, 29 on Solvay, 2 in the women-on-phones photo (one
   missed at 640), and medium faces that scored just under 0.8 at 640 come back (classroom: 13 -> 15).
   Boxes and landmarks are mapped back to original pixels by the exact resize factor of each axis; callers align
   from the original image.

Cost on CPU: decode + detection of a 1024x1024 synthetic face (pass A only) is ~67 ms on the 2-core dev box
(bench/engine.py, line e); a 3000x2171 group photo needs both passes. Before the cached anchors (batch_detect below)
facer's per-call anchor list made it 3-4x slower.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ModelLoadError
from .imports import import_preserving_qt_env
from .models_base import weights_info
from .records import Detection

SMALL_PASS_LONG_SIDE = 640
PORTRAIT_FRACTION = 0.4  # pass B is skipped when every pass-A face spans >= this share of the image's short side
LARGE_PASS_LONG_SIDE = 2048
LARGE_PASS_MAX_FACE = 400  # px at pass B's scale: bigger pass-B boxes are parts of faces or false positives
OVERLAP_IOU = 0.3
SAME_FACE_IOU = 0.5  # a pass-B box this close to a pass-A box is the same face
CONTAINED_FRACTION = 0.75

# Files that load strictly but were trained for other anchors: their boxes are wrong, so they are refused.
INCOMPATIBLE_SHA256 = {
    "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1": (
        "biubug6/Face-Detector-1MB-with-landmark's mobilenet0.25_Final.pth: same name, size and layers as the "
        "RetinaFace checkpoint, but trained with other anchor sizes, so its boxes come out wrong"
    ),
}


def _retinaface_module():
    return import_preserving_qt_env("facer.face_detection.retinaface")


@functools.lru_cache(maxsize=16)
def _priors_cpu(height: int, width: int) -> torch.Tensor:
    """RetinaFace's anchors for an input of height x width, equal element for element to facer's
    `PriorBox(cfg_mnet, (height, width)).generate_anchors()` (tests/test_detect.py checks it).

    facer builds them as a Python list (~67k floats for 640x640, ~500k for 2048x1482) on every call and converts
    it with one `torch.tensor(list)`, which holds the GIL for the whole conversion: the desktop app's UI thread froze
    for 60-100 ms per image while the worker detected (bench/gui.py --watchdog). Here: numpy, once per input size.
    Same arithmetic: float64 values rounded once to float32.
    """
    cfg = _retinaface_module().cfg_mnet
    parts = []
    for step, min_sizes in zip(cfg["steps"], cfg["min_sizes"]):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height, (np.arange(fw) + 0.5) * step / width,
                             indexing="ij")
        for_sizes = [np.stack([cx, cy, np.full_like(cx, m / width), np.full_like(cy, m / height)], axis=-1)
                     for m in min_sizes]
        parts.append(np.stack(for_sizes, axis=2).reshape(-1, 4))  # order: row, column, anchor size
    out = torch.from_numpy(np.concatenate(parts).astype(np.float32))
    if cfg["clip"]:
        out.clamp_(max=1, min=0)
    return out


def batch_detect(net: torch.nn.Module, images: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    """facer's `batch_detect` (same means, thresholds, top-k, NMS and output), with cached anchors (_priors_cpu)."""
    rf = _retinaface_module()
    cfg = rf.cfg_mnet
    img = images.float() - torch.tensor([104, 117, 123], dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    _, _, h, w = img.shape
    scale = torch.tensor([w, h, w, h], dtype=img.dtype, device=img.device)
    scale1 = torch.tensor([w, h] * 5, dtype=img.dtype, device=img.device)
    loc, conf, landms = net(img)
    priors = _priors_cpu(int(h), int(w)).to(img.device)
    rects, points, scores, image_ids = [], [], [], []
    for image_id, (loc_i, conf_i, landms_i) in enumerate(zip(loc, conf, landms)):
        for rect, landmarks, score in rf.post_process(loc_i, conf_i, landms_i, priors, cfg, scale, scale1, 1,
                                                      threshold, 5000, 0.4, 750):
            rects.append(rect)
            points.append(landmarks)
            scores.append(score)
            image_ids.append(image_id)
    if not rects:
        empty = torch.empty(0, device=img.device)
        return {"rects": empty, "points": empty, "scores": empty, "image_ids": empty}
    return {"rects": torch.stack(rects), "points": torch.stack(points),
            "scores": torch.tensor(scores, device=img.device), "image_ids": torch.tensor(image_ids, device=img.device)}


def _load_facer_net(weights_path: Path) -> torch.nn.Module:
    facer_rf = _retinaface_module()
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else "unreadable"
        raise ModelLoadError(
            f"{weights_path.name} is not a readable RetinaFace checkpoint ({type(e).__name__}: {reason}). "
            f"Replace it with the official mobilenet0.25_Final.pth (`faceqc models download detector`)."
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{weights_path.name} does not contain a state dict (found {type(state).__name__}).")
    state = {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in state.items()}
    net = facer_rf.RetinaFace(cfg=facer_rf.cfg_mnet, phase="test")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    wrong = [k for k in expected if k in state
             and not (torch.is_tensor(state[k]) and tuple(state[k].shape) == tuple(expected[k].shape))]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        )
        raise ModelLoadError(
            f"{weights_path.name} is not the RetinaFace MobileNet-0.25 checkpoint FaceQC needs ({detail})."
        )
    net.load_state_dict(state, strict=True)
    return net.eval()


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a decoded image: grey (H, W) / (H, W, 1) is repeated, an alpha channel dropped."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"the detector needs a uint8 image, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"the detector needs an (H, W, 3) RGB image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def _resize(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Shrinks so the long side is <= long_side (never enlarges); PIL's bilinear filter anti-aliases when shrinking."""
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.BILINEAR))


def _overlaps(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of `box` with each of `others`, and the fraction of `box`'s own area inside each."""
    if len(others) == 0:
        return np.zeros(0), np.zeros(0)
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    areas = np.clip((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-6, None)
    return inter / (area + areas - inter), inter / area


def _boxes(dets: list[Detection]) -> np.ndarray:
    return np.array([d.box for d in dets], np.float64).reshape(-1, 4)


def merge_scales(small_pass: list[Detection], large_pass: list[Detection], large_scale: float) -> list[Detection]:
    """The two-scale policy of the module docstring; `large_scale` = pass B's size / original size."""
    usable = [d for d in large_pass
              if max(d.box[2] - d.box[0], d.box[3] - d.box[1]) * large_scale < LARGE_PASS_MAX_FACE]
    kept = list(small_pass)
    used: set[int] = set()
    # A face both passes found: pass B saw it with more pixels (and still within its anchors), so its landmarks are
    # the finer ones; keep the face, take pass B's box and points.
    for k, a in enumerate(kept):
        iou, _ = _overlaps(a.box, _boxes(usable))
        for j in np.argsort(-iou):
            if iou[j] < SAME_FACE_IOU:
                break
            if int(j) not in used:
                kept[k] = usable[j]
                used.add(int(j))
                break
    for j, d in sorted(enumerate(usable), key=lambda t: -t[1].score):
        if j in used:
            continue
        iou, inside = _overlaps(d.box, _boxes(kept))
        if len(iou) and (iou.max() > OVERLAP_IOU or inside.max() > CONTAINED_FRACTION):
            continue
        kept.append(d)
    return _drop_parts(kept)


def _portrait_like(small_pass: list[Detection], shape, large_scale: float) -> bool:
    if not small_pass:
        return False
    short = min(shape[:2])
    for d in small_pass:
        size = max(d.box[2] - d.box[0], d.box[3] - d.box[1])
        if size * large_scale < LARGE_PASS_MAX_FACE or size < PORTRAIT_FRACTION * short:
            return False
    return True


def _drop_parts(dets: list[Detection]) -> list[Detection]:
    """Drops boxes lying mostly inside a larger box (parts of that face); the rest sorted by score, best first."""
    out: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.area):
        _, inside = _overlaps(d.box, _boxes(out))
        if len(inside) and inside.max() > CONTAINED_FRACTION:
            continue
        out.append(d)
    return sorted(out, key=lambda d: -d.score)


class FaceDetector:
    key = "detector"

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu", threshold: float = 0.8,
                 batch_size: int = 8, fast: bool = False):
        self.weights_path = Path(weights_path)
        self.device = torch.device(device)
        self.threshold = float(threshold)
        self.batch_size = max(1, int(batch_size))  # images per forward in detect_batch (bounds pass-B memory)
        self.fast = bool(fast)  # skip pass B on portrait-like images (see the module doc)
        net = _load_facer_net(self.weights_path)
        self.file_info = weights_info("detector", self.weights_path)
        why = INCOMPATIBLE_SHA256.get(self.file_info["sha256"])
        if why:
            raise ModelLoadError(
                f"{self.weights_path.name} is {why}. Replace it with the official RetinaFace mobilenet0.25_Final.pth "
                f"(`faceqc models download detector`)."
            )
        self.net = net.to(self.device)
        self._batch_detect = batch_detect

    def _pass(self, images: list[np.ndarray], long_side: int) -> list[list[Detection]]:
        """facer's batch_detect on same-size images shrunk to `long_side`; detections in original pixels."""
        h, w = images[0].shape[:2]
        small = [_resize(im, long_side) for im in images]
        sh, sw = small[0].shape[:2]
        x = torch.from_numpy(np.stack(small)).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            # batch_detect converts to float and subtracts the means itself; it is not under no_grad.
            out = self._batch_detect(self.net, x.float(), threshold=self.threshold)
        result: list[list[Detection]] = [[] for _ in images]
        if out["rects"].numel() == 0:  # no face anywhere: facer returns float tensors of shape (0,)
            return result
        sx, sy = w / sw, h / sh
        rects = out["rects"].float().cpu().numpy().reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)
        points = out["points"].float().cpu().numpy().reshape(-1, 5, 2) * np.array([sx, sy], np.float32)
        scores = out["scores"].float().cpu().numpy().reshape(-1)
        ids = out["image_ids"].long().cpu().numpy().reshape(-1)
        for r, p, s, i in zip(rects, points, scores, ids):
            result[int(i)].append(Detection(box=r.astype(np.float32), landmarks=p.astype(np.float32), score=float(s)))
        return result

    def _detect_same_size(self, images: list[np.ndarray]) -> list[list[Detection]]:
        small = self._pass(images, SMALL_PASS_LONG_SIDE)
        long_side = max(images[0].shape[:2])
        if long_side <= SMALL_PASS_LONG_SIDE:
            return [_drop_parts(d) for d in small]
        scale_b = min(1.0, LARGE_PASS_LONG_SIDE / long_side)
        # fast: portrait-like images (every face too large for pass B to use and spanning a good part of the frame:
        # a synthetic 1024² face) skip pass B, the costliest step on a CPU, at the price of small second faces.
        need_b = [i for i, (im, a) in enumerate(zip(images, small))
                  if not (self.fast and _portrait_like(a, im.shape, scale_b))]
        out = [_drop_parts(a) for a in small]
        if need_b:
            large = self._pass([images[i] for i in need_b], LARGE_PASS_LONG_SIDE)
            for i, b in zip(need_b, large):
                out[i] = merge_scales(small[i], b, scale_b)
        return out

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in one decoded image, best score first, boxes and landmarks in its pixels."""
        return self.detect_batch([rgb])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """detect() for many images; images of the same size share each forward pass (faster on a GPU)."""
        arrays = [_as_rgb_uint8(im) for im in images]
        results: list[list[Detection]] = [[] for _ in arrays]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(arrays):
            if a.shape[0] > 0 and a.shape[1] > 0:
                groups.setdefault(a.shape[:2], []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                for i, dets in zip(chunk, self._detect_same_size([arrays[i] for i in chunk])):
                    results[i] = dets
        return results
