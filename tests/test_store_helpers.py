"""Fake scoring results for the store, export, CLI and reliability tests (no model weights needed).

Also importable by child processes of the reliability tests (they add this folder to sys.path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from faceqc_gui.engine.records import Detection, FaceResult, ImageResult

MODELS = {
    "detector": {"file": "retinaface.pth", "sha256": "d" * 64, "official": True},
    "magface": {"file": "magface.pth", "sha256": "m" * 64, "official": True},
    "celeba": {"file": "farl.pth", "sha256": "c" * 64, "official": True},
    "fairface": {"file": "fairface.pt", "sha256": "f" * 64, "official": True},
}
MODEL_IDS = {k: v["sha256"] for k, v in MODELS.items()}


def _rng_for(path: str, salt: int = 0) -> np.random.Generator:
    seed = int.from_bytes(hashlib.blake2b(f"{path}|{salt}".encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed)


def fake_face(rng: np.random.Generator, index: int, norm: float | None = None, size: float | None = None,
              celeba: bool = True, fairface: bool = True, race4: bool = True) -> FaceResult:
    s = float(rng.uniform(20, 200)) if size is None else float(size)
    x, y = rng.uniform(0, 300, size=2)
    box = np.array([x, y, x + s, y + s * 1.2], np.float32)
    lms = (np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) * [s, s * 1.2] + [x, y])
    emb = rng.normal(size=512).astype(np.float32)
    if norm is None:
        norm = float(rng.uniform(5, 35))
    emb *= norm / np.linalg.norm(emb)
    face = FaceResult(index, Detection(box, lms.astype(np.float32), float(rng.uniform(0.8, 1.0))),
                      magface_norm=norm, embedding=emb)
    if celeba:
        face.celeba = {a: float(p) for a, p in zip(CELEBA_ATTRIBUTES, rng.uniform(0, 1, len(CELEBA_ATTRIBUTES)))}
    if fairface:
        ff = {}
        for head, labels in FAIRFACE_HEADS.items():
            if head == "race4" and not race4:
                ff[head] = None
                ff[f"{head}_top"] = None
                continue
            p = rng.dirichlet(np.ones(len(labels)))
            ff[head] = {lab: float(v) for lab, v in zip(labels, p)}
            ff[f"{head}_top"] = labels[int(np.argmax(p))]
        face.fairface = ff
    return face


def fake_result(path: str, n_faces: int | None = None, norms: list[float] | None = None, error: str | None = None,
                salt: int = 0, models: dict | None = None, **face_kw) -> ImageResult:
    """Deterministic per (path, salt): the same file gets the same numbers in every process."""
    rng = _rng_for(str(path), salt)
    models = MODELS if models is None else models
    if error is not None:
        return ImageResult(str(path), error=error, models={k: dict(v) for k, v in models.items()})
    if norms is not None:
        n_faces = len(norms)
    elif n_faces is None:
        n_faces = int(rng.choice([0, 1, 1, 1, 2, 3]))
    faces = [fake_face(rng, i, norm=None if norms is None else norms[i], **face_kw) for i in range(n_faces)]
    return ImageResult(str(path), width=640, height=480, faces=faces, models={k: dict(v) for k, v in models.items()})


def make_files(folder: Path, n: int, prefix: str = "img", ext: str = ".jpg", size: int = 64) -> list[str]:
    """Distinct small files with image extensions (the fake pipeline never decodes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:04d}{ext}"
        p.write_bytes(hashlib.sha256(f"{p.name}{i}".encode()).digest() * (size // 32) + os.urandom(8))
        out.append(str(p))
    return out


def expected_score(result: ImageResult, mode: str = "primary") -> float:
    """The image score by the issue's rule, computed independently of the store."""
    if result.error is not None or not result.faces:
        return float("nan")
    if mode == "primary":
        n = result.primary_face.magface_norm
        return float("nan") if n is None else float(n)
    norms = [f.magface_norm for f in result.faces if f.magface_norm is not None]
    return float(min(norms)) if norms else float("nan")


def expected_decision(result: ImageResult | None, override: str | None, threshold: float,
                      mode: str = "primary") -> bool:
    if override is not None:
        return override == "accept"
    if result is None:
        return False
    s = expected_score(result, mode)
    return bool(np.isfinite(s) and s >= threshold)
