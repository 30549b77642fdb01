"""Helpers shared by the GUI tests and bench/gui.py: generated images, fake (but store-valid) scoring results, a fake
pipeline that streams them, and projects filled with them. The one test here checks the helpers themselves."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from faceqc_gui.engine.records import Detection, FaceResult, ImageResult

FAKE_MODEL_IDS = {"detector": "fake-detector", "magface": "fake-magface"}


def make_images(folder: Path, n: int, size: int = 48, seed: int = 0, prefix: str = "img") -> list[str]:
    """n small JPEGs of distinct flat colours (cheap to write, real files for thumbnails and exports)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}_{i:06d}.jpg"
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        Image.fromarray(np.broadcast_to(colour, (size, size, 3)).copy()).save(p, quality=70)
        paths.append(str(p))
    return paths


def fake_result(path: str, rng: np.random.Generator, n_faces: int | None = None, norm: float | None = None,
                size: int = 48) -> ImageResult:
    """A plausible result: 0-2 faces with a MagFace norm, 40 CelebA probabilities and FairFace heads."""
    nf = int(rng.choice([0, 1, 1, 1, 1, 2])) if n_faces is None else n_faces
    faces = []
    for k in range(nf):
        w = size * (0.7 - 0.3 * k)
        box = np.array([2 + 10 * k, 2, 2 + 10 * k + w, 2 + w], np.float32)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        lm = np.array([[cx - w / 5, cy - w / 8], [cx + w / 5, cy - w / 8], [cx, cy], [cx - w / 6, cy + w / 5],
                       [cx + w / 6, cy + w / 5]], np.float32)
        ff: dict = {}
        for head, labels in FAIRFACE_HEADS.items():
            probs = rng.dirichlet(np.ones(len(labels)))
            ff[head] = dict(zip(labels, probs.tolist()))
            ff[f"{head}_top"] = labels[int(np.argmax(probs))]
        faces.append(FaceResult(
            face_index=k, detection=Detection(box, lm, float(rng.uniform(0.85, 1.0))),
            magface_norm=float(rng.normal(22.0, 4.0) if norm is None else norm),
            embedding=rng.normal(size=512).astype(np.float32),
            celeba=dict(zip(CELEBA_ATTRIBUTES, rng.uniform(0, 1, len(CELEBA_ATTRIBUTES)).tolist())),
            fairface=ff))
    return ImageResult(path=path, width=size, height=size, faces=faces,
                       models={k: {"file": f"{k}.pth", "sha256": v, "official": False}
                               for k, v in FAKE_MODEL_IDS.items()})


def make_project(tmp: Path, n: int = 60, scored: bool = True, seed: int = 0, name: str = "p.faceqc"):
    """A project on ``n`` generated images, scored with fake results unless ``scored`` is False. Returns
    (project path, image folder, paths). The project is closed (callers open their own)."""
    from faceqc_gui.engine.store import Project

    folder = tmp / "images"
    paths = make_images(folder, n, seed=seed)
    ppath = tmp / name
    with Project.open(ppath, create=True) as p:
        p.add_folder(folder)
        plan = p.plan_scoring(FAKE_MODEL_IDS)
        if scored:
            rng = np.random.default_rng(seed + 1)
            p.store_results([fake_result(x, rng) for x in plan.to_score])
    return ppath, folder, paths


@dataclass
class FakeLoaded:
    model_ids: dict = field(default_factory=lambda: dict(FAKE_MODEL_IDS))
    skipped: dict = field(default_factory=dict)
    device: str = "fake"


def fake_load_models(keys, models_dir=None, device="auto", skip_missing=False):
    return FakeLoaded()


class FakePipeline:
    """Streams fake results for the given paths, ``delay`` seconds apart; honours stop_event like the real one."""

    def __init__(self, loaded, batch_size: int = 32, delay: float = 0.0, seed: int = 7):
        self.delay = delay
        self.rng = np.random.default_rng(seed)
        self.started = threading.Event()

    def run(self, paths, stop_event=None):
        self.started.set()
        for p in paths:
            if stop_event is not None and stop_event.is_set():
                return
            if self.delay:
                time.sleep(self.delay)
            yield fake_result(str(p), self.rng)


def test_fake_results_round_trip_through_the_store(tmp_path):
    from faceqc_gui.engine.store import Project

    ppath, folder, paths = make_project(tmp_path, n=12)
    with Project.open(ppath) as p:
        snap = p.snapshot()
        assert len(snap.ids) == 12
        assert (snap.n_faces >= 0).all()
        has_face = snap.n_faces > 0
        assert np.isfinite(snap.score[has_face]).all() and np.isnan(snap.score[~has_face]).all()
        assert not np.isnan(snap.celeba[has_face]).any()
        assert os.path.isfile(snap.paths[0])
