"""The one interface every per-face model implements, so the pipeline can batch them all the same way.

A model never decodes or detects: the pipeline gives it the decoded RGB image and the detector's landmarks once,
the model cuts its own aligned crops (``prepare``, CPU, runs in the pipeline's preparation thread), the pipeline
concatenates crops of many images into batches (``forward``, on the device), and writes each output row into the
face's record (``annotate``).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .records import FaceResult


class FaceModel(abc.ABC):
    key: str = ""  # registry key: "magface", "celeba", "fairface"

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.file_info: dict[str, Any] = {}  # {"file": name, "path": str, "sha256": hex, "official": bool | None}

    @abc.abstractmethod
    def prepare(self, rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        """rgb: (H, W, 3) uint8 RGB original image; landmarks: (n, 5, 2) float32 in its pixels.
        Returns the model-ready float32 CPU tensor (n, 3, h, w) (aligned, channel-ordered, normalised)."""

    @abc.abstractmethod
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """Runs the network on a prepared batch (moved to self.device, inference mode); returns (n, k) float32."""

    @abc.abstractmethod
    def annotate(self, face: FaceResult, output: np.ndarray) -> None:
        """Writes one output row (as returned by forward) into the face's record."""


def file_info(path: Path, sha256: str, expected_sha256: str | None) -> dict[str, Any]:
    return {
        "file": path.name,
        "path": str(path),
        "sha256": sha256,
        # True: the published (or first verified) hash; False: another file (custom weights); None: nothing to
        # compare with (no hash published and none recorded yet), so unverified rather than vouched for.
        "official": None if expected_sha256 is None else sha256 == expected_sha256,
    }


def weights_info(key: str, path: Path) -> dict[str, Any]:
    """file_info for a registry model file, with the hash cached across runs (hashing 300 MB costs ~1 s) and checked
    against the official hash, or, where none is published, the one recorded at the first verified download.
    `official` is False for custom weights and None when unverified; `hash_source` says what it was compared with."""
    from .download import expected_sha256, file_sha256  # stdlib-only module; imported lazily to keep startup light

    digest = file_sha256(path)
    expected, source = expected_sha256(key)
    info = file_info(Path(path), digest, expected)
    info["hash_source"] = source
    return info
