"""The scoring pipeline: decode and detect each image once, feed every loaded model in batches, stream results.

Shape of a run (one producer thread, the caller's thread as consumer):

    producer thread:  decode (small thread pool, Pillow releases the GIL) -> detect -> each model's prepare()
                      -> bounded queue of prepared images (back-pressure keeps memory flat)
    caller's thread:  takes prepared images, stacks their crops per model into batches of `batch_size` faces,
                      runs each model's forward() once per batch, writes outputs into the records, and yields every
                      ImageResult as soon as all of its faces are done, in input order.

Why this split: detection and crop warping are cheap next to the three networks, so running them ahead of the
networks in a second thread hides them almost entirely (bench/engine.py measures how close the pipeline gets to the
networks' own forward throughput). A partial batch is flushed when the producer falls behind, so the GUI sees results
stream in instead of waiting for a full batch.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import registry
from .device import resolve_device
from .errors import FaceQCError, ImageLoadError, MissingModelError
from .models_base import FaceModel
from .records import FaceResult, ImageResult

DEFAULT_MODELS = ("magface", "celeba", "fairface")


@dataclass
class LoadedModels:
    detector: Any  # detect.FaceDetector
    models: list[FaceModel]
    device: torch.device
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why (the missing-file message)

    @property
    def file_infos(self) -> dict[str, dict[str, Any]]:
        infos = {"detector": dict(self.detector.file_info)}
        for m in self.models:
            infos[m.key] = dict(m.file_info)
            extra = getattr(m, "file_info4", None)  # FairFace's optional 4-race file
            if extra:
                infos["fairface4"] = dict(extra)
        return infos

    @property
    def model_ids(self) -> dict[str, str]:
        """key -> sha256 of the file that produced the numbers (the store rescoring test uses these)."""
        return {k: v.get("sha256") or "" for k, v in self.file_infos.items()}

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.models]


def parse_model_keys(text: str | Iterable[str] | None) -> list[str]:
    if text is None:
        return list(DEFAULT_MODELS)
    items = text.split(",") if isinstance(text, str) else list(text)
    keys = [k.strip().lower() for k in items if k.strip()]
    unknown = [k for k in keys if k not in registry.SELECTABLE]
    if unknown:
        raise FaceQCError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(registry.SELECTABLE)}.")
    return list(dict.fromkeys(keys))


def _build_model(key: str, path: Path, device: torch.device, models_dir) -> FaceModel:
    # Imported here so that `faceqc models` and the GUI's browsing never pay for building networks they don't use.
    if key == "magface":
        from .magface import MagFaceModel

        return MagFaceModel(path, device)
    if key == "celeba":
        from .farl import FarlCelebAModel

        return FarlCelebAModel(path, device)
    if key == "fairface":
        from .fairface import FairFaceModel

        return FairFaceModel(path, device, weights4_path=registry.find_model_file("fairface4", models_dir))
    raise FaceQCError(f"unknown model {key!r}")


def load_models(
    keys: Iterable[str] | str | None = DEFAULT_MODELS,
    models_dir=None,
    device: str | torch.device = "auto",
    skip_missing: bool = False,
    fast_detection: bool = False,
) -> LoadedModels:
    """Finds and loads the detector and the asked-for models once. The detector is always required; a missing model
    file raises MissingModelError unless `skip_missing`, which records why in `skipped` and goes on."""
    from .detect import FaceDetector

    keys = parse_model_keys(keys)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    det_path = registry.find_model_file("detector", models_dir)
    if det_path is None:
        raise MissingModelError(registry.missing_message("detector", models_dir), "detector")
    skipped: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for key in keys:
        p = registry.find_model_file(key, models_dir)
        if p is None:
            msg = registry.missing_message(key, models_dir)
            if not skip_missing:
                raise MissingModelError(msg + "\n(Run with --skip-missing to score with the other models.)", key)
            skipped[key] = msg
        else:
            paths[key] = p
    detector = FaceDetector(det_path, device=dev, fast=fast_detection)
    models = [_build_model(k, p, dev, models_dir) for k, p in paths.items()]
    return LoadedModels(detector=detector, models=models, device=dev, skipped=skipped)


@dataclass
class _Prepared:
    result: ImageResult
    tensors: dict[str, torch.Tensor]  # model key -> (n_faces, 3, h, w); absent when the image has no face


_DONE = object()


class ScorePipeline:
    def __init__(self, loaded: LoadedModels, batch_size: int = 32, decode_workers: int = 2, queue_images: int = 64):
        if batch_size < 1:
            raise FaceQCError("--batch-size must be at least 1")
        self.loaded = loaded
        self.batch_size = batch_size
        self.decode_workers = max(1, decode_workers)
        self.queue_images = queue_images
        self._infos = loaded.file_infos

    # -- producer side ---------------------------------------------------------------------------------------------
    def _new_result(self, path: str) -> ImageResult:
        return ImageResult(path=path, models={k: {kk: v[kk] for kk in ("file", "sha256", "official", "hash_source")
                                                  if kk in v}
                                              for k, v in self._infos.items()})

    def prepare_image(self, path: str, rgb_or_error) -> _Prepared:
        """Detect once, then cut every model's crops from the same decoded pixels."""
        result = self._new_result(path)
        if isinstance(rgb_or_error, str):
            result.error = rgb_or_error
            return _Prepared(result, {})
        rgb: np.ndarray = rgb_or_error
        result.height, result.width = int(rgb.shape[0]), int(rgb.shape[1])
        try:
            detections = self.loaded.detector.detect(rgb)
            result.faces = [FaceResult(face_index=i, detection=d) for i, d in enumerate(detections)]
            tensors: dict[str, torch.Tensor] = {}
            if detections:
                landmarks = np.stack([d.landmarks for d in detections]).astype(np.float32)
                for m in self.loaded.models:
                    tensors[m.key] = m.prepare(rgb, landmarks)
        except Exception as e:  # one bad image must not end the run
            result.faces = []
            result.error = f"processing failed: {type(e).__name__}: {e}".splitlines()[0]
            return _Prepared(result, {})
        return _Prepared(result, tensors)

    @staticmethod
    def _decode(path: str):
        from .imageio import load_rgb

        try:
            return load_rgb(path)
        except ImageLoadError as e:
            return str(e)
        except Exception as e:  # defensive: the loader should already turn everything into ImageLoadError
            return f"could not read image: {type(e).__name__}: {e}".splitlines()[0]

    def _produce(self, items: list[tuple[str, str | None]], out: queue.Queue, stop: threading.Event) -> None:
        try:
            with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="faceqc-decode") as pool:
                pending: deque = deque()
                it = iter(items)

                def submit_next() -> bool:
                    nxt = next(it, None)
                    if nxt is None:
                        return False
                    path, error = nxt
                    fut = None if error else pool.submit(self._decode, path)
                    pending.append((path, error, fut))
                    return True

                for _ in range(self.decode_workers * 2):  # a few decodes in flight ahead of detection
                    if not submit_next():
                        break
                while pending and not stop.is_set():
                    path, error, fut = pending.popleft()
                    submit_next()
                    decoded = error if fut is None else fut.result()
                    with torch.inference_mode():
                        prepared = self.prepare_image(path, decoded)
                    while not stop.is_set():
                        try:
                            out.put(prepared, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                for _, _, fut in pending:
                    if fut is not None:
                        fut.cancel()
        except BaseException as e:  # surfaces in the consumer instead of dying silently in this thread
            out.put(e)
        finally:
            out.put(_DONE)

    # -- consumer side ---------------------------------------------------------------------------------------------
    def _run_models(self, batch: list[_Prepared]) -> None:
        faces = [f for p in batch for f in p.result.faces]
        if not faces:
            return
        for m in self.loaded.models:
            stacked = torch.cat([p.tensors[m.key] for p in batch if p.result.faces])
            outputs = m.forward(stacked)
            for face, row in zip(faces, outputs):
                m.annotate(face, row)

    def run(self, entries: Iterable, stop_event: threading.Event | None = None) -> Iterator[ImageResult]:
        """entries: paths (str/Path) or scan.FileEntry objects (an entry with an error becomes an error record).
        Yields one ImageResult per entry, in order. Setting `stop_event` ends the run after the images already
        prepared are finished; closing the generator (break, Ctrl-C) stops the producer too."""
        items: list[tuple[str, str | None]] = []
        for e in entries:
            if isinstance(e, (str, Path)):
                items.append((str(e), None))
            else:
                items.append((str(e.path), getattr(e, "error", None)))
        stop = stop_event or threading.Event()
        producer_stop = threading.Event()
        q: queue.Queue = queue.Queue(maxsize=self.queue_images)
        producer = threading.Thread(target=self._produce, args=(items, q, producer_stop), name="faceqc-prepare",
                                    daemon=True)
        producer.start()
        waiting: list[_Prepared] = []  # prepared, faces not yet run, in input order
        n_faces = 0
        done = False
        try:
            while not done:
                if stop.is_set():
                    producer_stop.set()
                try:
                    # Block only while nothing waits; otherwise peek briefly so a slow producer flushes a partial batch.
                    item = q.get(timeout=0.05 if waiting else 0.5)
                except queue.Empty:
                    if waiting:
                        yield from self._flush(waiting)
                        waiting, n_faces = [], 0
                    continue
                if item is _DONE:
                    done = True
                    continue
                if isinstance(item, BaseException):
                    raise item
                if not item.result.faces and not waiting:
                    yield item.result  # nothing to batch: no face or an error
                    continue
                waiting.append(item)
                n_faces += len(item.result.faces)
                if n_faces >= self.batch_size:
                    yield from self._flush(waiting)
                    waiting, n_faces = [], 0
            if waiting:
                yield from self._flush(waiting)
        finally:
            producer_stop.set()
            # Drain so a producer blocked on put() can see the stop flag and exit.
            while producer.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            producer.join(timeout=5)

    def _flush(self, waiting: list[_Prepared]) -> Iterator[ImageResult]:
        # A batch may exceed batch_size by one image's faces: splitting an image across batches buys nothing.
        self._run_models(waiting)
        for p in waiting:
            yield p.result


def score_paths(paths: Iterable, loaded: LoadedModels, batch_size: int = 32) -> list[ImageResult]:
    """Convenience for scripts and tests: all results of a run as a list."""
    return list(ScorePipeline(loaded, batch_size=batch_size).run(paths))

