"""Choosing the torch device: CUDA > MPS > CPU, or what the user asked for."""

from __future__ import annotations

import torch

from .errors import FaceQCError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FaceQCError("--device cuda was asked for, but torch sees no CUDA GPU on this machine (use --device cpu or auto).")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FaceQCError("--device mps was asked for, but MPS is not available on this machine (use --device cpu or auto).")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise FaceQCError(f"unknown device {name!r}: use auto, cpu, cuda or mps.")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """Human name for the status bar / CLI banner: the GPU's name, or 'CPU (N threads)'."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
