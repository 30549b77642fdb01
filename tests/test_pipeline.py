"""The pipeline's own behaviour (ordering, batching, one decode/detect per image, errors, stopping), on fake models
so it is fast and exact; the real models are exercised end to end in test_cli_score.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from faceqc_gui.engine.models_base import FaceModel
from faceqc_gui.engine.pipeline import LoadedModels, ScorePipeline
from faceqc_gui.engine.records import Detection


class CountingDetector:
    """Finds as many 'faces' as the image's top-left red value says; counts calls per image size."""

    file_info = {"file": "fake_detector.pth", "sha256": "d" * 64, "official": True}

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def detect(self, rgb):
        with self.lock:
            self.calls += 1
        n = int(rgb[0, 0, 0]) // 10
        return [
            Detection(box=np.array([i, i, i + 10, i + 10], np.float32),
                      landmarks=np.full((5, 2), i + 5, np.float32), score=0.99)
            for i in range(n)
        ]


class MeanModel(FaceModel):
    """Output = the mean of the crop it was given, so each face's result proves which pixels it came from."""

    key = "magface"

    def __init__(self):
        super().__init__("cpu")
        self.file_info = {"file": "fake_magface.pth", "sha256": "m" * 64, "official": False}
        self.batch_sizes: list[int] = []

    def prepare(self, rgb, landmarks):
        crops = [np.full((3, 4, 4), float(rgb[0, 0, 1]) + float(lm[0, 0]), np.float32) for lm in landmarks]
        return torch.from_numpy(np.stack(crops))

    def forward(self, batch):
        self.batch_sizes.append(batch.shape[0])
        return batch.mean(dim=(1, 2, 3), keepdim=False)[:, None].repeat(1, 512).numpy()

    def annotate(self, face, row):
        face.embedding = row
        face.magface_norm = float(row[0])


def _image(path, n_faces, tag):
    arr = np.zeros((20, 30, 3), np.uint8)
    arr[0, 0, 0] = n_faces * 10
    arr[0, 0, 1] = tag
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture()
def setup(tmp_path):
    faces = [0, 1, 3, 2, 0, 5, 1, 1, 4, 0]
    paths = [_image(tmp_path / f"img{i:02d}.png", n, tag=i) for i, n in enumerate(faces)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    paths.insert(4, str(bad))
    faces.insert(4, None)
    det, model = CountingDetector(), MeanModel()
    loaded = LoadedModels(detector=det, models=[model], device=torch.device("cpu"))
    return paths, faces, det, model, loaded


def test_results_in_input_order_with_every_face_scored_from_its_own_image(setup):
    paths, faces, det, model, loaded = setup
    results = list(ScorePipeline(loaded, batch_size=4).run(paths))
    assert [r.path for r in results] == paths
    for r, n in zip(results, faces):
        if n is None:
            assert r.error and not r.faces
            continue
        assert r.error is None and len(r.faces) == n
        tag = int(r.path[-6:-4])
        for i, f in enumerate(r.faces):
            assert f.face_index == i
            assert f.magface_norm == pytest.approx(tag + i + 5)  # crop built from this image's pixels and landmark
    assert det.calls == len(paths) - 1  # detected exactly once per decodable image


def test_faces_are_batched_across_images(setup):
    paths, faces, det, model, loaded = setup
    list(ScorePipeline(loaded, batch_size=8).run(paths))
    assert sum(model.batch_sizes) == sum(n for n in faces if n)
    # Batches combine several images (fewer forward calls than images with faces), unless the producer fell behind.
    assert len(model.batch_sizes) < sum(1 for n in faces if n)


def test_records_name_the_model_files(setup):
    paths, _, _, _, loaded = setup
    r = next(iter(ScorePipeline(loaded).run(paths[:1])))
    assert r.models["magface"] == {"file": "fake_magface.pth", "sha256": "m" * 64, "official": False}
    assert r.models["detector"]["file"] == "fake_detector.pth"


def test_error_entries_and_detector_failures_become_error_records(setup, tmp_path):
    paths, _, det, _, loaded = setup

    class Entry:
        def __init__(self, path, error):
            self.path, self.error = path, error

    def boom(rgb):
        raise RuntimeError("detector exploded\nsecond line")

    results = list(ScorePipeline(loaded).run([Entry(str(tmp_path / "x"), "cannot read folder: permission denied")]))
    assert results[0].error == "cannot read folder: permission denied"
    det.detect = boom
    r = list(ScorePipeline(loaded).run(paths[1:2]))[0]
    assert r.error == "processing failed: RuntimeError: detector exploded" and r.faces == []


def test_stop_event_ends_the_run_early_and_cleanly(setup):
    paths, _, _, _, loaded = setup
    stop = threading.Event()
    got = []
    for r in ScorePipeline(loaded, batch_size=1, queue_images=1).run(paths * 20, stop_event=stop):
        got.append(r)
        if len(got) == 3:
            stop.set()
    assert 3 <= len(got) < len(paths) * 20
    assert not [t for t in threading.enumerate() if t.name == "faceqc-prepare" and t.is_alive()]


def test_closing_the_generator_stops_the_producer(setup):
    paths, _, _, _, loaded = setup
    gen = ScorePipeline(loaded, batch_size=2, queue_images=2).run(paths * 20)
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name == "faceqc-prepare" and t.is_alive()]


def test_leave_cores_for_ui_caps_torch_threads_and_never_raises_them(monkeypatch):
    from faceqc_gui.engine import device as device_mod

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        monkeypatch.setattr(device_mod.os, "cpu_count", lambda: 2)
        assert device_mod.leave_cores_for_ui() == 1 == torch.get_num_threads()
        monkeypatch.setattr(device_mod.os, "cpu_count", lambda: 1)
        assert device_mod.leave_cores_for_ui() == 1  # a single core: still one thread, not zero
        monkeypatch.setattr(device_mod.os, "cpu_count", lambda: 64)
        assert device_mod.leave_cores_for_ui() == 1  # never raises a count someone lowered on purpose
    finally:
        torch.set_num_threads(before)
