"""CelebA's 40 attributes from FaRL: facer 0.0.5's `farl/celeba/224`, buildable on a machine without CUDA.

Network and preprocessing are facer's own code (MODELS.md §3): its VisualTransformer (ViT-B/16, `proj` and
`ln_post` removed, forward = facer's CLIP encode function returning layer 11), its VITClassificationHeadV0 and
FACTransformer.forward; the crop is facer's 5-point similarity onto `get_std_points_xray(224, 500)`, warped with
`make_tanh_warp_grid(warp_factor=0)` + `F.grid_sample(bilinear, align_corners=False)` on the float image,
CLIP-normalised; outputs are sigmoid probabilities. What differs is how the network is built and loaded:

- pyfacer 0.0.5 calls `.cuda()` while constructing (farl_classification and FACTransformer.__init__), which fails
  without an NVIDIA driver. We assemble the same modules from facer's classes ourselves and never call it; the
  state-dict keys are identical (tests compare them with facer's own constructor).
- facer loads with plain torch.load and may download. We read only the local file, with weights_only=True and
  map_location='cpu', and require a strict, complete load.
- facer's random re-initialisation of the ViT (timm's trunc_normal_ over 86 M weights, several seconds on a CPU)
  is skipped while building: every weight is overwritten by the strict load.

The crop is computed from the part of the photo the 224 grid actually samples, not from a float copy of the whole
photo: the result is the same (the footprint includes every bilinear neighbour; zero padding outside the photo is
kept), and a 24-Mpixel photo does not cost 300 MB per image.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ModelLoadError
from .imports import import_preserving_qt_env
from .labels import CELEBA_ATTRIBUTES
from .models_base import FaceModel, weights_info
from .records import FaceResult

CROP = 224
LAYERS = [11]  # pretrain_settings["celeba/224"]["layers"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
N_KEYS = 158

_build_lock = threading.Lock()


def _facer(name: str):
    return import_preserving_qt_env(f"facer.{name}")


@contextlib.contextmanager
def _without_vit_random_init():
    """facer.farl.model's trunc_normal_ becomes a no-op while the network is built (weights are loaded after)."""
    model = _facer("farl.model")
    with _build_lock:
        original = model.trunc_normal_
        model.trunc_normal_ = lambda tensor, *args, **kwargs: tensor
        try:
            yield
        finally:
            model.trunc_normal_ = original


def _cpu_fac_transformer():
    classification = _facer("farl.classification")

    class CpuFACTransformer(classification.FACTransformer):
        """facer's FACTransformer (same attributes, same forward) minus the `.cuda().float()` in __init__."""

        def __init__(self, backbone: torch.nn.Module, head: torch.nn.Module):
            torch.nn.Module.__init__(self)
            self.backbone = backbone
            self.head = head

    return CpuFACTransformer


def build_farl_celeba(random_init: bool = True) -> torch.nn.Module:
    """facer's farl_classification(num_classes=40, layers=[11]), on the CPU, in eval mode.
    `random_init=False` skips facer's trunc_normal_ re-initialisation (for a network about to be loaded)."""
    model = _facer("farl.model")
    classification = _facer("farl.classification")
    ctx = contextlib.nullcontext() if random_init else _without_vit_random_init()
    with ctx:
        vit = model.VisualTransformer(input_resolution=224, patch_size=16, width=768, layers=12, heads=12,
                                      output_dim=512)
    del vit.proj
    del vit.ln_post
    classification.add_method(vit, "forward", classification.get_clip_encode_func(LAYERS))
    head = classification.VITClassificationHeadV0(num_features=len(LAYERS), channel=768,
                                                  num_labels=len(CELEBA_ATTRIBUTES), norm=True)
    return _cpu_fac_transformer()(vit, head).float().eval()


def template_224() -> torch.Tensor:
    """facer's 5-point target in the 224 crop: get_std_points_xray(out_size=224, mid_size=500)."""
    return _facer("face_attribute.farl").get_std_points_xray(out_size=CROP, mid_size=500)


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


def load_farl_celeba(path: str | os.PathLike) -> torch.nn.Module:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, not a pickle, objects weights_only refuses, unreadable file...
        raise ModelLoadError(
            f"{path.name} is not a readable FaRL CelebA checkpoint (corrupt or partial download?): {_first_line(e)}"
        ) from e
    problem = _not_a_state_dict(state)
    if problem:
        raise ModelLoadError(f"{path.name} {problem}; it is not facer's face_attribute.farl.celeba.pt.")
    net = build_farl_celeba(random_init=False)
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
        raise ModelLoadError(f"{path.name} is not facer's FaRL CelebA checkpoint "
                             f"(face_attribute.farl.celeba.pt, {N_KEYS} tensors): {detail}.")
    net.load_state_dict(state, strict=True)
    return net.float().eval()


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing


def as_landmarks(landmarks) -> np.ndarray:
    """(n, 5, 2) float32, or ValueError for anything that is not n finite 5-point sets."""
    lms = np.asarray(landmarks, dtype=np.float32)
    if lms.size == 0:
        return np.zeros((0, 5, 2), np.float32)
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


def farl_grids(landmarks: np.ndarray, height: int, width: int) -> torch.Tensor:
    """facer's sampling grids (n, 224, 224, 2), normalised to the whole (height, width) image."""
    transform = _facer("transform")
    lms = torch.from_numpy(as_landmarks(landmarks))
    matrix = transform.get_face_align_matrix(lms, target_shape=(CROP, CROP), target_pts=template_224())
    return transform.make_tanh_warp_grid(matrix=matrix, warp_factor=0.0, warped_shape=(CROP, CROP),
                                         orig_shape=(height, width))


def _sample_footprint(rgb: np.ndarray, grid: torch.Tensor) -> torch.Tensor:
    """F.grid_sample(rgb/255, grid) for one face, reading only the pixels the grid touches."""
    h, w = rgb.shape[:2]
    g = grid.double()
    # grid_sample (align_corners=False) reads pixel index u = ((g + 1) * W - 1) / 2 and its neighbours.
    ux = ((g[..., 0] + 1) * w - 1) / 2
    uy = ((g[..., 1] + 1) * h - 1) / 2
    x0 = max(0, math.floor(float(ux.min())) - 1)
    y0 = max(0, math.floor(float(uy.min())) - 1)
    x1 = min(w, math.ceil(float(ux.max())) + 2)
    y1 = min(h, math.ceil(float(uy.max())) + 2)
    if x1 - x0 < 1 or y1 - y0 < 1:  # the crop lies entirely outside the photo: grid_sample gives zeros
        return torch.zeros((3, CROP, CROP))
    crop = torch.from_numpy(np.ascontiguousarray(rgb[y0:y1, x0:x1])).permute(2, 0, 1)[None].float() / 255.0
    cw, ch = x1 - x0, y1 - y0
    local = torch.stack([((ux - x0) * 2 + 1) / cw - 1, ((uy - y0) * 2 + 1) / ch - 1], dim=-1).float()
    return F.grid_sample(crop, local[None], mode="bilinear", align_corners=False)[0]


def farl_crops(rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
    """facer's FaRLFaceAttribute preprocessing for the n faces of one image: (n, 3, 224, 224) float32."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    lms = as_landmarks(landmarks)
    if len(lms) == 0:
        return torch.zeros((0, 3, CROP, CROP))
    grids = farl_grids(lms, rgb.shape[0], rgb.shape[1])
    warped = torch.stack([_sample_footprint(rgb, grid) for grid in grids])
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((warped - mean) / std).contiguous()


class FarlCelebAModel(FaceModel):
    """forward() rows: the 40 sigmoid probabilities in labels.CELEBA_ATTRIBUTES order."""

    key = "celeba"

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu"):
        super().__init__(device)
        self.weights_path = Path(weights_path)
        self.net = load_farl_celeba(self.weights_path).to(self.device)
        self.labels = CELEBA_ATTRIBUTES
        self.file_info = weights_info("celeba", self.weights_path)
        if self.file_info.get("hash_source") is None:
            self.file_info["note"] = "hash not published by the authors"

    def prepare(self, rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        return farl_crops(rgb, landmarks)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net(batch.to(self.device, dtype=torch.float32)).float()

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(self.logits(batch)).cpu().numpy()

    def annotate(self, face: FaceResult, output: np.ndarray) -> None:
        row = np.asarray(output, np.float64).reshape(-1)
        if row.shape[0] != len(CELEBA_ATTRIBUTES):
            raise ValueError(f"CelebA output row has {row.shape[0]} values, expected {len(CELEBA_ATTRIBUTES)}")
        face.celeba = {name: float(p) for name, p in zip(CELEBA_ATTRIBUTES, row)}
