"""Face detection: facer's RetinaFace MobileNet-0.25, loaded strictly from a local file, run at two scales.

Exactly facer's detector (its network class and its `batch_detect`: RGB input minus the BGR means (104, 117, 123),
confidence 0.8, NMS 0.4 with the +1 area convention), with two changes in how it is driven:

1. Loading. facer loads with strict=False and only checks that one key matched, so a different training or a
   truncated file would load silently with random layers. We load the state dict ourselves
   (weights_only=True, map_location='cpu': the canonical file holds CUDA-tagged storages) and require every key.

2. Scales. RetinaFace's anchors stop at 512 px. At full resolution a face larger than that (every 1024² synthetic
   face) gets extra boxes on parts of itself; shrunk to 640 px, small faces in group photos vanish
   (MODELS.md §9: the Solvay photo has 29 people: 18 found at 640, 29 at 1024 and above). So:
     pass A: long side <= 640 (never upscaled): finds large faces cleanly;
     pass B: long side <= 2048 (cost cap), only for images larger than pass A's size: finds small faces.
   A pass-B face is added when it is small at pass B's scale (< 400 px: the part-of-face boxes appear only on faces
   that are large at the scale they are detected at) and does not overlap a face already kept. Finally a box
   lying mostly inside a larger kept box is dropped (a part of that face). Boxes and landmarks are mapped back to
   the original pixels; callers align from the original image.
   Pass B is skipped when every pass-A face spans at least PORTRAIT_FRACTION of the image's short side (a
   portrait or a synthetic 1024² face): such images have no room for faces pass A could miss, and pass B is the
   most expensive step of the whole pipeline on a CPU (bench/engine.py).
   Measured on the shared photos (tests/test_detect.py): one box per big synthetic face, 29 on Solvay.
"""

from __future__ import annotations

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
LARGE_PASS_LONG_SIDE = 2048
LARGE_PASS_MAX_FACE = 400  # px at pass B's scale; above this pass B's boxes may be parts of a face
OVERLAP_IOU = 0.3
CONTAINED_FRACTION = 0.6
PORTRAIT_FRACTION = 0.4


def _load_facer_net(weights_path: Path):
    facer_rf = import_preserving_qt_env("facer.face_detection.retinaface")
    RetinaFace, cfg_mnet = facer_rf.RetinaFace, facer_rf.cfg_mnet

    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"{weights_path.name} is not a readable RetinaFace checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'unreadable'}). Replace it with the official mobilenet0.25_Final.pth."
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{weights_path.name} does not contain a state dict (found {type(state).__name__}).")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    net = RetinaFace(cfg=cfg_mnet, phase="test")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
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
    net.eval()
    return net


def _iou_and_containment(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of `box` with each of `others`, and the fraction of `box`'s area inside each."""
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


class FaceDetector:
    key = "detector"

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu", threshold: float = 0.8):
        self.weights_path = Path(weights_path)
        self.device = torch.device(device)
        self.threshold = threshold
        self.net = _load_facer_net(self.weights_path).to(self.device)
        self.file_info = weights_info("detector", self.weights_path)

    def _run(self, rgb: np.ndarray, long_side: int) -> tuple[list[Detection], float]:
        """facer's batch_detect on the image shrunk to `long_side` (never enlarged); results in original pixels."""
        batch_detect = import_preserving_qt_env("facer.face_detection.retinaface").batch_detect
        h, w = rgb.shape[:2]
        scale = min(1.0, long_side / max(h, w))
        img = rgb
        if scale < 1.0:
            img = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                         Image.BILINEAR))
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].to(self.device)
        with torch.inference_mode():
            out = batch_detect(self.net, x.float(), threshold=self.threshold)
        if out["rects"].numel() == 0:  # facer returns empty float tensors of shape (0,) when nothing is found
            return [], scale
        sx = w / img.shape[1]
        sy = h / img.shape[0]
        rects = out["rects"].float().cpu().numpy() * np.array([sx, sy, sx, sy], np.float32)
        points = out["points"].float().cpu().numpy().reshape(-1, 5, 2) * np.array([sx, sy], np.float32)
        scores = out["scores"].float().cpu().numpy()
        dets = [Detection(box=r.astype(np.float32), landmarks=p.astype(np.float32), score=float(s))
                for r, p, s in zip(rects, points, scores)]
        return dets, scale

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        kept, _ = self._run(rgb, SMALL_PASS_LONG_SIDE)
        short_side = min(rgb.shape[:2])
        portrait = bool(kept) and all(
            max(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= PORTRAIT_FRACTION * short_side for d in kept)
        if max(rgb.shape[:2]) > SMALL_PASS_LONG_SIDE and not portrait:
            large, scale_b = self._run(rgb, LARGE_PASS_LONG_SIDE)
            for d in large:
                size_at_b = max(d.box[2] - d.box[0], d.box[3] - d.box[1]) * scale_b
                if size_at_b >= LARGE_PASS_MAX_FACE:
                    continue
                iou, inside = _iou_and_containment(d.box, np.array([k.box for k in kept]).reshape(-1, 4))
                if len(iou) and (iou.max() > OVERLAP_IOU or inside.max() > CONTAINED_FRACTION):
                    continue
                kept.append(d)
        return self._drop_parts(sorted(kept, key=lambda d: -d.score))

    @staticmethod
    def _drop_parts(dets: list[Detection]) -> list[Detection]:
        """Removes boxes that lie mostly inside a larger box: those are parts of that face."""
        out: list[Detection] = []
        by_area = sorted(dets, key=lambda d: -d.area)
        for d in by_area:
            if out:
                _, inside = _iou_and_containment(d.box, np.array([o.box for o in out]))
                if inside.max() > CONTAINED_FRACTION:
                    continue
            out.append(d)
        return sorted(out, key=lambda d: -d.score)
