"""MagFace quality: the L2 norm of the raw iResNet embedding, computed as the official inference computes it.

Official pipeline (docs: /work/shared/docs/MODELS.md §1; IrvingMeng/MagFace inference/gen_feat.py): a 112x112 crop
aligned to the ArcFace 5-point template, read by OpenCV (so BGR), ToTensor (/255) then Normalize(mean 0, std 1) (so
nothing more), the network in eval mode, and the norm of its output, never L2-normalised first.

Loading follows inference/network_inf.py: weights under 'state_dict', keys prefixed 'features.module.' (DDP training,
the published magface_epoch_00025.pth) or 'module.features.' (DataParallel); the classifier that rides along is
dropped; and, like the official loader, nothing runs unless every backbone key was filled with the right shape: a
partially loaded network gives plausible-looking but meaningless norms. Files are always read with
``torch.load(weights_only=True)``: a weight file from the internet must not be able to run code.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .align import align_arcface_batch
from .errors import ModelLoadError
from .iresnet import EMBEDDING_SIZE, INPUT_SIZE, build_iresnet, expected_shapes, infer_depth
from .models_base import FaceModel, weights_info
from .records import FaceResult

# Where the backbone sits inside a checkpoint's state dict, most specific first. 'features.' is the inference
# wrapper (NetworkBuilder_inf) saved as is, 'module.' a DataParallel-wrapped bare backbone.
PREFIXES = ("features.module.", "module.features.", "features.", "module.", "")
OFFICIAL_MB = 283  # size of magface_epoch_00025.pth, for the truncated-download hint

_NBT = "num_batches_tracked"


def _describe_head(head: bytes) -> str:
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low:
        return "a web page (for example Google Drive's download-confirmation page saved instead of the file)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "not a PyTorch checkpoint"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def read_checkpoint(path: str | os.PathLike) -> Any:
    """torch.load(path, weights_only=True, map_location='cpu'), every failure turned into a ModelLoadError that says
    what is wrong with the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as e:
        raise ModelLoadError(f"Cannot read the MagFace weight file {path}: {e.strerror or e}.") from e
    if size == 0:
        raise ModelLoadError(f"The MagFace weight file {path} is empty (0 bytes); download it again.")
    # torch.save writes a zip archive (torch >= 1.6) or, in the legacy format, a binary pickle (protocol >= 2).
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ModelLoadError(f"{path} is {_describe_head(head)}, not a PyTorch weight file.")
    try:
        with warnings.catch_warnings():
            # A plain pickle (not torch.save's format) draws a protocol warning before the clear error below.
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise ModelLoadError(
                f"{path.name} stores, besides weights, a Python object of type {refused.group(1)}, which FaceQC "
                "refuses to unpickle (torch.load with weights_only=True: unpickling arbitrary objects can run code "
                "hidden in the file). If you trust the file, save just its weights once with\n"
                f"  python -c \"import torch; c = torch.load(r'{path}', map_location='cpu', weights_only=False); "
                "torch.save(c['state_dict'] if 'state_dict' in c else c, 'magface_epoch_00025.pth')\"\n"
                "and use that file (it will be reported as custom weights)."
            ) from e
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        reason = detail.group(1)[:200] if detail else _first_line(e)
        raise ModelLoadError(f"{path.name} is not a PyTorch checkpoint that can be read safely ({reason}).") from e
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ValueError... for a damaged file
        raise ModelLoadError(
            f"{path.name} is truncated or corrupt ({_first_line(e)}). It is {size / 1e6:.1f} MB; the official "
            f"magface_epoch_00025.pth is about {OFFICIAL_MB} MB. Download it again."
        ) from e


def _pick_prefix(state: dict, names: set[str]) -> tuple[str, int]:
    best, best_n = "", 0
    for prefix in PREFIXES:
        n = sum(1 for k in state if isinstance(k, str) and k.startswith(prefix) and k[len(prefix):] in names)
        if n > best_n:
            best, best_n = prefix, n
    return best, best_n


def _some(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f", … ({len(names) - k} more)" if len(names) > k else "")


def extract_backbone_state(ckpt: Any, name: str = "checkpoint", depth: int | None = None) -> dict[str, torch.Tensor]:
    """A loaded checkpoint (official dict with 'state_dict', or a bare backbone state dict, any of PREFIXES) -> the
    bare backbone's state dict, complete and with the right shapes; anything else raises ModelLoadError.
    `depth` None: taken from the blocks the checkpoint holds (MagFace publishes iResNet100, 50 and 18)."""
    if not isinstance(ckpt, dict):
        raise ModelLoadError(f"{name} holds a {type(ckpt).__name__}, not a MagFace checkpoint (a dict of weights).")
    state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt
    if not isinstance(state, dict):
        raise ModelLoadError(f"{name}: its 'state_dict' entry is a {type(state).__name__}, not a dict of weights.")
    names100 = set(expected_shapes(100))
    prefix, matched = _pick_prefix(state, names100)
    if matched == 0:
        sample = [str(k) for k in list(state)[:3]]
        raise ModelLoadError(
            f"{name} holds no MagFace iResNet weights ({len(state)} entries, e.g. {_some(sample, 3) or 'none'}); "
            "it is not a MagFace checkpoint (expected magface_epoch_00025.pth)."
        )
    # Only keys under the backbone's prefix count: the classifier ('fc.weight' [classes, 512] next to
    # 'features.module.*', 'module.fc.*', 'parallel_fc.*') lives outside it, while a bare backbone's own 'fc.*' and
    # 'features.*' (its last Linear and BatchNorm1d) are found with the empty prefix.
    found = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    found = {k: v for k, v in found.items() if k in names100}
    if depth is None:
        depth = infer_depth(found)
        if depth is None:
            raise ModelLoadError(f"{name} has more residual blocks than iResNet100; it is not a MagFace checkpoint.")
    expected = expected_shapes(depth)
    arch = f"iResNet{depth}"
    extra = sorted(k for k in found if k not in expected)
    wrong = []
    for k, v in found.items():
        if k not in expected:
            continue
        if not torch.is_tensor(v):
            wrong.append(f"{k} is a {type(v).__name__}")
        elif tuple(v.shape) != expected[k]:
            wrong.append(f"{k} {tuple(v.shape)} (expected {expected[k]})")
        elif not k.endswith(_NBT) and not v.is_floating_point():
            wrong.append(f"{k} holds {v.dtype} (expected floating point)")
    # num_batches_tracked only counts training steps; files from old torch versions lack it and eval never reads it.
    missing = [k for k in expected if k not in found and not k.endswith(_NBT)]
    if missing or wrong or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of its {len(expected)} backbone weights are missing ({_some(missing)})")
        if wrong:
            parts.append(f"{len(wrong)} have the wrong shape or type ({_some(wrong, 3)})")
        if extra:
            parts.append(f"{len(extra)} belong to a deeper network ({_some(extra, 3)})")
        raise ModelLoadError(
            f"{name} is not a complete MagFace {arch} checkpoint: " + "; ".join(parts) + ". FaceQC refuses to run a "
            "partially loaded network (its norms would be meaningless); use magface_epoch_00025.pth."
        )
    out: dict[str, torch.Tensor] = {}
    for k in expected:
        v = found.get(k)
        if v is None:
            out[k] = torch.zeros((), dtype=torch.long)
        elif v.is_floating_point():
            # One float64 sum per tensor: NaN/inf propagate, finite float32 values cannot overflow it.
            if not bool(torch.isfinite(v.sum(dtype=torch.float64))):
                raise ModelLoadError(f"{name} is corrupt: weight {k} holds NaN or infinite values.")
            out[k] = v.to(torch.float32)
        else:
            out[k] = v
    return out


def load_magface_state_dict(path: str | os.PathLike, depth: int | None = None) -> dict[str, torch.Tensor]:
    """The bare backbone state dict (keys as build_iresnet's) of a MagFace checkpoint file, or ModelLoadError."""
    return extract_backbone_state(read_checkpoint(path), Path(path).name, depth)


def build_loaded_backbone(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An eval-mode iResNet holding `state` (a complete state dict from load_magface_state_dict)."""
    depth = infer_depth(state)
    if depth is None:
        raise ModelLoadError("The weights do not describe an iResNet 18/34/50/100.")
    # Built on the meta device and filled by assignment: no random init of 65 M weights, no second copy in memory.
    with torch.device("meta"):
        net = build_iresnet(depth)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelLoadError(f"The weights do not fit iResNet{depth}: {_first_line(e)}") from e
    return net.eval()


def preprocess_aligned(crops_rgb: np.ndarray) -> torch.Tensor:
    """(n, 112, 112, 3) uint8 RGB aligned crops -> (n, 3, 112, 112) float32 BGR in [0, 1]: what cv2.imread followed by
    ToTensor and Normalize(0, 1) give for the same pixels."""
    crops = np.asarray(crops_rgb)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"MagFace needs (n, 112, 112, 3) aligned RGB crops, got shape {crops.shape}")
    if crops.dtype != np.uint8:
        raise ValueError(f"MagFace needs uint8 crops, got {crops.dtype}")
    bgr_chw = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2))
    return torch.from_numpy(bgr_chw).to(torch.float32).div_(255.0)


class MagFaceModel(FaceModel):
    """MagFace iResNet (100 for the official file; 50/18 model-zoo files load too): quality = norm of the raw output."""

    key = "magface"

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu"):
        super().__init__(device)
        self.weights_path = Path(weights_path)
        state = load_magface_state_dict(self.weights_path)
        self.depth = infer_depth(state)
        net = build_loaded_backbone(state)
        del state
        if self.device.type == "cuda":
            # channels_last speeds up cuDNN convolutions; results stay fp32 (no autocast: the norm is the score).
            net = net.to(self.device, memory_format=torch.channels_last)
        else:
            net = net.to(self.device)
        self.net = net.eval()
        self.file_info = weights_info(self.key, self.weights_path)

    @property
    def is_official(self) -> bool:
        return bool(self.file_info.get("official"))

    def prepare(self, rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        return preprocess_aligned(align_arcface_batch(rgb, landmarks))

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"MagFace batch must be (n, 3, 112, 112), got {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        with torch.inference_mode():
            x = batch.to(self.device, dtype=torch.float32, non_blocking=True)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            return self.net(x).float().cpu().numpy()

    def embed_aligned(self, crops_rgb: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(n, 112, 112, 3) uint8 RGB aligned crops -> (n, 512) raw embeddings."""
        x = preprocess_aligned(crops_rgb)
        if len(x) == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        return np.concatenate([self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def annotate(self, face: FaceResult, output: np.ndarray) -> None:
        face.embedding = np.asarray(output, dtype=np.float32)
        face.magface_norm = float(np.linalg.norm(face.embedding))

