"""Choosing the torch device: CUDA > MPS > CPU, or what the user asked for."""

from __future__ import annotations

import os

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


def leave_cores_for_ui(reserve: int = 1) -> int:
    """Cap torch's CPU threads at (cores - reserve), at least 1, and return the cap.

    For the desktop app only: torch's intra-op pool otherwise occupies every core, and on a small machine the UI
    thread then waits for a time slice whenever it needs one (bench/gui.py measured 75-107 ms stalls on 2 cores with
    all threads, against a 50 ms goal). Call it from the thread that runs the models, before their first forward:
    torch applies the count per thread when a thread first runs parallel work. The CLI does not call it.
    """
    cores = os.cpu_count() or 1
    n = max(1, cores - reserve)
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
