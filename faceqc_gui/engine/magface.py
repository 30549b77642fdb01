"""MagFace quality: the L2 norm of the raw iResNet100 embedding, computed as the official inference does.

Official pipeline (MODELS.md §1, IrvingMeng/MagFace inference/gen_feat.py): a 112x112 crop aligned to the ArcFace
5-point template, read by OpenCV (so BGR), ToTensor (/255) and Normalize(0, 1) (i.e. nothing else), the network
in eval mode, and the norm of its output (never L2-normalised first).

Loading follows inference/network_inf.py: the checkpoint is a dict with the weights under 'state_dict', keys
prefixed 'features.module.' (DDP training: the published magface_epoch_00025.pth) or 'module.features.' (DP); the
classifier shard that rides along is dropped; and, like the official loader, we refuse to run unless every
backbone key was filled with the right shape: a silently partial load gives plausible but meaningless norms.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .align import align_arcface_batch
from .errors import ModelLoadError
from .iresnet import build_iresnet
from .models_base import FaceModel, weights_info
from .records import FaceResult

PREFIXES = ("features.module.", "module.features.")


def _read_checkpoint(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses pickles that would run code; the official file holds only plain data and tensors.
        raise ModelLoadError(
            f"{path.name} contains objects other than plain tensors and numbers, which FaceQC refuses to unpickle "
            f"for safety ({str(e).splitlines()[0]}). It is not the official MagFace checkpoint."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise ModelLoadError(
            f"{path.name} is not a readable PyTorch checkpoint (truncated or corrupt download?): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e


def extract_backbone_state(ckpt, expected: dict[str, torch.Tensor], name: str = "checkpoint") -> dict:
    """Official checkpoint (or a bare backbone state dict) -> the backbone's state dict, or ModelLoadError."""
    if not isinstance(ckpt, dict):
        raise ModelLoadError(f"{name} holds a {type(ckpt).__name__}, not a MagFace checkpoint dict.")
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict):
        raise ModelLoadError(f"{name}: 'state_dict' is a {type(state).__name__}, not a dict of tensors.")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            continue
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            # A bare backbone has its own 'fc.*'/'features.*' keys; anything prefixed otherwise (module.fc.*,
            # parallel_fc.*, a wrapper's fc.weight of shape [classes, 512]) is the training classifier.
            if key not in expected:
                continue
        if key in expected and tuple(value.shape) == tuple(expected[key].shape):
            out[key] = value
    missing = [k for k in expected if k not in out]
    if missing:
        found = len(expected) - len(missing)
        raise ModelLoadError(
            f"{name} filled only {found} of the {len(expected)} MagFace iResNet100 backbone weights "
            f"(missing or wrong shape: {', '.join(missing[:4])}{', …' if len(missing) > 4 else ''}). "
            "It is not a MagFace iResNet100 checkpoint (expected magface_epoch_00025.pth)."
        )
    return out


def load_magface_backbone(path: str | os.PathLike, depth: int = 100) -> torch.nn.Module:
    path = Path(path)
    net = build_iresnet(depth)
    state = extract_backbone_state(_read_checkpoint(path), net.state_dict(), path.name)
    net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess_aligned(crops_rgb: np.ndarray) -> torch.Tensor:
    """(n, 112, 112, 3) uint8 RGB crops -> (n, 3, 112, 112) float32 BGR in [0, 1], as cv2.imread + ToTensor give."""
    crops = np.asarray(crops_rgb)
    if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3):
        raise ValueError(f"expected (n, 112, 112, 3) crops, got {crops.shape}")
    bgr = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2))
    return torch.from_numpy(bgr).float().div_(255.0)


class MagFaceModel(FaceModel):
    key = "magface"

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu", depth: int = 100):
        super().__init__(device)
        self.weights_path = Path(weights_path)
        self.net = load_magface_backbone(self.weights_path, depth).to(self.device)
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.file_info = weights_info("magface", self.weights_path)

    @property
    def is_official(self) -> bool:
        return bool(self.file_info.get("official"))

    def prepare(self, rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        return preprocess_aligned(align_arcface_batch(rgb, landmarks))

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        # fp32 on purpose: the quality is a magnitude, and reduced precision would shift it.
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            return self.net(x).float().cpu().numpy()

    def embed_aligned(self, crops_rgb: np.ndarray) -> np.ndarray:
        return self.forward(preprocess_aligned(crops_rgb))

    def annotate(self, face: FaceResult, output: np.ndarray) -> None:
        face.embedding = np.asarray(output, np.float32)
        face.magface_norm = float(np.linalg.norm(face.embedding))
