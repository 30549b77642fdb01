"""FairFace race / gender / age: the official ResNet-34 classifiers, fed chips cut like the official dlib chips.

Official inference (dchen236/FairFace predict.py, MODELS.md §4): the photo is resized so its long side is 800 px
(dlib bilinear), dlib finds faces and 5 landmarks, `dlib.get_face_chips(size=300, padding=0.25)` cuts a 300-px chip,
and the classifier sees ToPILImage -> Resize((224, 224)) -> ToTensor -> ImageNet mean/std, RGB. Both checkpoints
are a torchvision resnet34 whose fc is Linear(512, 18); the 7-race model's logits are sliced [0:7] race, [7:9]
gender, [9:18] age with a softmax per slice; the 4-race model's [0:4] is its race (the rest is unused).

We detect with RetinaFace, not dlib, so the chip is rebuilt from RetinaFace's 5 points (eye centres, nose tip,
mouth corners; dlib's are eye corners and the base of the nose) with a similarity onto CHIP_TEMPLATE_300: where
RetinaFace's points fall, on average, inside dlib's own 300-px chips. tools/calibrate_fairface_template.py measured
it on the shared photos and docs/FAIRFACE_ALIGNMENT.md gives the method and the residual. The chip is sampled the
way dlib samples it: from the 800-px resized photo (`SOURCE_LONG_SIDE`), bilinear, with dlib's halving pyramid when
the chip would shrink the face more than 2x.

Not reproduced: the official script writes each chip to disk in the input's format (JPEG quality 75 for .jpg
inputs) and reads it back; that lossy round trip is left out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .align import estimate_similarity
from .errors import ModelLoadError
from .imports import import_preserving_qt_env
from .labels import AGE9, GENDER, RACE4, RACE7
from .models_base import FaceModel, weights_info
from .records import FaceResult

CHIP_SIZE = 300  # dlib.get_face_chips(size=300, padding=0.25) in predict.py
INPUT_SIZE = 224
SOURCE_LONG_SIDE = 800  # predict.py resizes every photo to this long side before dlib sees it

# Where RetinaFace's 5 landmarks (image-left eye centre, image-right eye centre, nose tip, image-left mouth corner,
# image-right mouth corner) sit in dlib's 300-px, padding-0.25 chip, in chip pixel indices. Obtained with
# tools/calibrate_fairface_template.py on 73 faces of 37 shared photos: dlib 20.0.1's CNN detector + 5-point
# predictor on the 800-px resized photo gave dlib's exact chip transform per face; RetinaFace's points (facer,
# threshold 0.8, long side <= 1024) were mapped into it; this is their Procrustes mean, placed so that the chip
# corners match dlib's best. Residual: chip corners off by 19.4 px on average (leave-one-photo-out 20.0), mostly a
# 5 % scale difference from face to face; dlib's own chip moves 4.2 px when only its box changes
# (docs/FAIRFACE_ALIGNMENT.md).
CHIP_TEMPLATE_300 = np.array(
    [[94.596, 92.592], [205.291, 91.333], [149.475, 154.743], [104.851, 207.895], [197.247, 206.731]],
    dtype=np.float64,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

RACE7_SLICE, GENDER_SLICE, AGE_SLICE, RACE4_SLICE = slice(0, 7), slice(7, 9), slice(9, 18), slice(0, 4)
# Layout of FairFaceModel.forward's rows: probabilities, each head softmax-normalised on its own.
OUTPUT_RACE7, OUTPUT_GENDER, OUTPUT_AGE, OUTPUT_RACE4 = slice(0, 7), slice(7, 9), slice(9, 18), slice(18, 22)


def _cv():
    return import_preserving_qt_env("cv2")


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def as_landmarks(landmarks: Any) -> np.ndarray:
    """(n, 5, 2) float64, or ValueError for anything that is not n finite 5-point sets."""
    lms = np.asarray(landmarks, dtype=np.float64)
    if lms.size == 0:
        return np.zeros((0, 5, 2))
    if lms.shape[-2:] != (5, 2):
        raise ValueError(f"expected landmarks of shape (n, 5, 2), got {lms.shape}")
    lms = lms.reshape(-1, 5, 2)
    if not np.isfinite(lms).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if np.abs(lms).max() > 1e7:
        raise ValueError("landmarks lie absurdly far outside any image")
    if (lms.std(axis=1) < 1e-3).all(axis=1).any():
        raise ValueError("degenerate landmarks: all 5 points coincide")
    return lms


def fairface_source_size(width: int, height: int, long_side: int = SOURCE_LONG_SIDE) -> tuple[int, int]:
    """predict.py's resized (width, height): long side = `long_side`, the other side truncated (int())."""
    if width > height:
        return long_side, max(1, int(long_side * height / width))
    return max(1, int(long_side * width / height)), long_side


def resize_like_dlib(rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """dlib.resize_image: bilinear, no anti-aliasing, corner pixels aligned (x_src = x_dst * (W-1)/(W'-1)).
    Returns the image and the (2, 3) matrix taking original pixel indices to the resized image's."""
    h, w = rgb.shape[:2]
    new_w, new_h = size
    sx = (w - 1) / max(new_w - 1, 1)
    sy = (h - 1) / max(new_h - 1, 1)
    cv2 = _cv()
    dst_to_src = np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0]])
    out = cv2.warpAffine(np.ascontiguousarray(rgb), dst_to_src, (new_w, new_h),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    src_to_dst = np.array([[1.0 / sx if sx else 0.0, 0.0, 0.0], [0.0, 1.0 / sy if sy else 0.0, 0.0]])
    return out, src_to_dst


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(2, 3) affine a∘b (b first)."""
    a3 = np.vstack([a, [0.0, 0.0, 1.0]])
    b3 = np.vstack([b, [0.0, 0.0, 1.0]])
    return (a3 @ b3)[:2]


def _invert(m: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]


def chip_matrix(landmarks: np.ndarray, template: np.ndarray = CHIP_TEMPLATE_300) -> np.ndarray:
    """(2, 3) image -> chip matrix (pixel indices): the least-squares similarity taking the 5 points onto the
    template."""
    return estimate_similarity(np.asarray(landmarks, np.float64).reshape(5, 2), template)


def _pyramid_levels(source_px_per_chip_px: float, size: int = CHIP_SIZE) -> int:
    """How many 2x pyramid levels dlib's extract_image_chips goes down before sampling: it halves the chip's
    source rectangle (width size*scale, dlib's +1 width convention) while the halved one is still larger than
    the chip."""
    width = size * source_px_per_chip_px  # dlib's drectangle width of the chip's source window
    levels = 0
    while ((width - 1) / 2 + 1) ** 2 > size * size:
        width = (width - 1) / 2 + 1
        levels += 1
    return levels


def extract_chip(rgb: np.ndarray, image_to_chip: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 chip: bilinear sampling through the inverse of `image_to_chip`, black outside the
    image; when the chip shrinks the source more than 2x, the source is first halved with a [1 4 6 4 1] Gaussian
    pyramid as dlib does, so the chip does not alias."""
    cv2 = _cv()
    try:
        chip_to_image = _invert(np.asarray(image_to_chip, np.float64))
    except np.linalg.LinAlgError:
        chip_to_image = np.full((2, 3), np.nan)
    scale = float(np.hypot(chip_to_image[0, 0], chip_to_image[1, 0]))
    if not np.isfinite(chip_to_image).all() or not scale > 0:
        raise ValueError("degenerate landmarks: the chip transform cannot be inverted")
    src = rgb
    levels = _pyramid_levels(scale, size)
    if levels:
        # Only the chip's footprint (plus the filter's reach at every level) needs to go down the pyramid.
        corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], np.float64)
        pts = corners @ chip_to_image.T
        margin = 4 * (2 ** levels) + 2
        h, w = rgb.shape[:2]
        x0 = int(max(0, np.floor(pts[:, 0].min()) - margin))
        y0 = int(max(0, np.floor(pts[:, 1].min()) - margin))
        x1 = int(min(w, np.ceil(pts[:, 0].max()) + margin + 1))
        y1 = int(min(h, np.ceil(pts[:, 1].max()) + margin + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((size, size, 3), np.uint8)
        src = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        done = 0
        while done < levels and min(src.shape[:2]) >= 2:
            src = cv2.pyrDown(src)  # output pixel j is centred on input pixel 2j
            done += 1
        f = float(2 ** done)
        crop_to_level = np.array([[1 / f, 0.0, -x0 / f], [0.0, 1 / f, -y0 / f]])
        chip_to_image = _compose(crop_to_level, chip_to_image)
    return cv2.warpAffine(np.ascontiguousarray(src), chip_to_image, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def fairface_chips(rgb: np.ndarray, landmarks: np.ndarray, emulate_resize: bool = True,
                   template: np.ndarray = CHIP_TEMPLATE_300) -> np.ndarray:
    """(n, 300, 300, 3) uint8 RGB chips as FairFace's detect_face cuts them, from RetinaFace landmarks in the
    original image's pixels. With `emulate_resize` the chips come from the 800-px resized photo like the official
    script's; without it, straight from the original pixels."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    lms = as_landmarks(landmarks)
    if len(lms) == 0:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    to_source = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    source = rgb
    if emulate_resize:
        h, w = rgb.shape[:2]
        source, to_source = resize_like_dlib(rgb, fairface_source_size(w, h))
    chips = []
    for lm in lms:
        src_pts = lm @ to_source[:, :2].T + to_source[:, 2]
        chips.append(extract_chip(source, chip_matrix(src_pts, template)))
    return np.stack(chips)


def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """(n, 300, 300, 3) uint8 chips -> (n, 3, 224, 224) float32: PIL bilinear Resize((224, 224)) (what
    torchvision's Resize does to a PIL image), /255, ImageNet mean/std."""
    out = np.empty((len(chips), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, chip in enumerate(chips):
        small = np.asarray(Image.fromarray(chip).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR), np.float32)
        out[i] = ((small / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------------------------
# Networks


def build_fairface_resnet34() -> torch.nn.Module:
    """predict.py's network: torchvision resnet34 with fc = Linear(512, 18) (both checkpoints)."""
    tv_models = import_preserving_qt_env("torchvision.models")
    net = tv_models.resnet34(weights=None)
    net.fc = torch.nn.Linear(net.fc.in_features, 18)
    return net.eval()


def _not_a_state_dict(obj) -> str | None:
    """Why `obj` is not a plain {name: tensor} state dict (None when it is)."""
    if not isinstance(obj, dict):
        return f"holds a {type(obj).__name__}, not a state dict"
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            return f"is a dict with non-tensor entries (e.g. {k!r}), not a plain state dict"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_fairface_net(path: str | os.PathLike, what: str = "FairFace") -> torch.nn.Module:
    """Strict load of a FairFace checkpoint (a state dict whose tensors were saved on CUDA: map_location='cpu')."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a pickle, refused by weights_only, unreadable...
        raise ModelLoadError(
            f"{path.name} is not a readable {what} checkpoint (corrupt or partial download?): {_first_line(e)}"
        ) from e
    problem = _not_a_state_dict(state)
    if problem:
        raise ModelLoadError(f"{path.name} {problem}; it is not a {what} checkpoint.")
    net = build_fairface_resnet34()
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
        raise ModelLoadError(f"{path.name} is not a {what} ResNet-34 checkpoint with an 18-way output ({detail}).")
    net.load_state_dict(state, strict=True)
    return net.float().eval()


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    # float64 on the CPU: Apple's MPS has no float64 (a .double() there raises), and probabilities go to the CPU anyway.
    return torch.softmax(logits.detach().cpu().double(), dim=1).float()


class FairFaceModel(FaceModel):
    """forward() rows: [race7 (7) | gender (2) | age (9)] probabilities from the 7-race model, then race4 (4) from
    the 4-race model when its file was given: shape (n, 18) or (n, 22); see the OUTPUT_* slices."""

    key = "fairface"

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu",
                 weights4_path: str | os.PathLike | None = None, emulate_resize: bool = True):
        super().__init__(device)
        self.weights_path = Path(weights_path)
        self.weights4_path = Path(weights4_path) if weights4_path is not None else None
        self.emulate_resize = emulate_resize
        self.net7 = load_fairface_net(self.weights_path, "FairFace 7-race").to(self.device)
        self.net4 = (load_fairface_net(self.weights4_path, "FairFace 4-race").to(self.device)
                     if self.weights4_path is not None else None)
        self.file_info = weights_info("fairface", self.weights_path)
        self.file_info4: dict[str, Any] | None = (weights_info("fairface4", self.weights4_path)
                                                  if self.weights4_path is not None else None)
        for info in (self.file_info, self.file_info4):
            if info is not None and info.get("hash_source") is None:
                info["note"] = "hash not published by the authors"

    @property
    def n_outputs(self) -> int:
        return 22 if self.net4 is not None else 18

    def prepare(self, rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        return chips_to_tensor(fairface_chips(rgb, landmarks, self.emulate_resize))

    def logits(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode():
            x = batch.to(self.device, dtype=torch.float32)
            return self.net7(x).float(), (self.net4(x).float() if self.net4 is not None else None)

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        logits7, logits4 = self.logits(batch)
        parts = [_softmax(logits7[:, RACE7_SLICE]), _softmax(logits7[:, GENDER_SLICE]),
                 _softmax(logits7[:, AGE_SLICE])]
        if logits4 is not None:
            parts.append(_softmax(logits4[:, RACE4_SLICE]))
        return torch.cat(parts, dim=1).cpu().numpy()

    def annotate(self, face: FaceResult, output: np.ndarray) -> None:
        row = np.asarray(output, np.float64).reshape(-1)
        if row.shape[0] not in (18, 22):
            raise ValueError(f"FairFace output row has {row.shape[0]} values, expected 18 or 22")

        def head(values: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
            return {label: float(p) for label, p in zip(labels, values)}

        def top(values: np.ndarray, labels: tuple[str, ...]) -> str:
            return labels[int(np.argmax(values))]

        race4 = row[OUTPUT_RACE4] if row.shape[0] == 22 else None
        face.fairface = {
            "race7": head(row[OUTPUT_RACE7], RACE7),
            "race4": head(race4, RACE4) if race4 is not None else None,
            "gender": head(row[OUTPUT_GENDER], GENDER),
            "age": head(row[OUTPUT_AGE], AGE9),
            "race7_top": top(row[OUTPUT_RACE7], RACE7),
            "race4_top": top(race4, RACE4) if race4 is not None else None,
            "gender_top": top(row[OUTPUT_GENDER], GENDER),
            "age_top": top(row[OUTPUT_AGE], AGE9),
        }
