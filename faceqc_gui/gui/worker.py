"""Scoring off the UI thread: a QObject worker living in a QThread, and the controller the window talks to.

The worker has its own connection to the project (SQLite connections are per thread; WAL lets the UI thread read
while the worker writes). It plans (walks the folders), hands the UI a fresh snapshot so new files appear at once as
"not scored", runs the pipeline, and stores results in small groups (every 16 images or 0.2 s), emitting each stored
group once: the UI patches its arrays instead of reloading. Pause waits between images; cancel stops the pipeline
and drops only the group in flight (it is rescored next time).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

from PySide6.QtCore import QObject, QThread, Signal, Slot

from ..engine.errors import FaceQCError, MissingModelError

GROUP_IMAGES = 16
GROUP_SECONDS = 0.2


@dataclass
class Progress:
    done: int
    total: int
    rate: float  # images per second over the last few seconds
    eta_s: float | None

    def text(self) -> str:
        eta = "" if self.eta_s is None else f", ETA {format_duration(self.eta_s)}"
        return f"{self.done}/{self.total} images, {self.rate:.1f}/s{eta}"


def format_duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class _SharedLock:
    """Stands in for a second Project's writer lock inside the same process (see open_sibling)."""

    def __init__(self, owner_lock):
        self._owner = owner_lock

    @property
    def held(self) -> bool:
        return self._owner.held

    def acquire(self) -> None:
        self._owner.acquire()

    def release(self) -> None:  # the owning connection releases it when the project is closed
        pass


def open_sibling(project):
    """A second connection to ``project`` for another thread of this process.

    The store's single-writer lock guards against other *processes*; it is an flock on the Project object's own file
    descriptor, so a second Project in this process would be refused as if it were another process. The sibling
    therefore shares the first connection's lock instead of taking its own.
    """
    from ..engine.store import Project

    other = Project.open(project.path)
    owner = getattr(project, "_lock", None)
    if owner is not None and hasattr(other, "_lock"):
        other._lock = _SharedLock(owner)
    return other


_gc_lock = threading.Lock()
_gc_pausers = 0


@contextmanager
def gc_paused():
    """No automatic garbage collection during a bulk phase (walking 100k files, reading a 100k-row snapshot).

    Those phases allocate hundreds of thousands of short-lived, acyclic objects (freed by reference counting anyway);
    meanwhile the collector's full passes run in whichever thread triggers them and hold the GIL for 100+ ms
    (measured at 100k images), which freezes the UI. Nested and concurrent uses are counted."""
    global _gc_pausers
    with _gc_lock:
        _gc_pausers += 1
        gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0:
                gc.enable()


def lower_thread_priority(nice: int = 10) -> None:
    """Let the UI thread win the CPU over scoring. On Linux a thread is a task with its own nice value, and the
    threads it starts (torch's intra-op pool, the decode pool) inherit it; with 2 CPU cores and torch using both,
    the UI otherwise waits for a time slice (measured: 117 ms stalls without it). Elsewhere: no-op."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:
        pass


class ScoringWorker(QObject):
    phase = Signal(str)  # what it is doing, for the status bar
    modelsReady = Signal(object)  # LoadedModels (kept by the controller for the next run)
    deviceFound = Signal(str)  # the device's name; computed here so the UI thread never imports torch
    modelsMissing = Signal(str)  # the detector is missing: nothing can be scored (the message says what to do)
    planned = Signal(object, object)  # ScanPlan, Snapshot
    resultsStored = Signal(list)  # list[ImageResult], one group
    progress = Signal(object)  # Progress
    finished = Signal(str, str)  # outcome ("done" | "cancelled" | "failed" | "no_models"), message

    def __init__(self, project, add_paths=(), loaded=None, models_dir=None, device: str = "auto",
                 batch_size: int = 32, pipeline_factory=None, load_models=None):
        super().__init__()
        self._project = project  # the UI thread's Project (only its path and lock are used here)
        self.add_paths = [str(p) for p in add_paths]
        self.loaded = loaded
        self.models_dir = models_dir
        self.device = device
        self.batch_size = batch_size
        self._pipeline_factory = pipeline_factory
        self._load_models = load_models
        self._resume = threading.Event()
        self._resume.set()
        self._cancel = threading.Event()

    # Called from the UI thread: plain Events, because run() keeps this worker's own thread busy.
    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @Slot()
    def run(self) -> None:
        lower_thread_priority()
        project = None
        try:
            project = open_sibling(self._project)
            outcome, message = self._run(project)
        except FaceQCError as e:
            outcome, message = "failed", str(e)
        except Exception as e:  # a bug must end the run with a message, not kill the app
            outcome, message = "failed", f"Scoring stopped: {type(e).__name__}: {e}"
        finally:
            if project is not None:
                try:
                    project.close()
                except Exception:
                    pass
        self.finished.emit(outcome, message)

    def _models(self):
        if self.loaded is not None:
            return self.loaded
        self.phase.emit("Loading models…")
        if self._load_models is None:
            from ..engine.pipeline import DEFAULT_MODELS, load_models
        else:
            load_models, DEFAULT_MODELS = self._load_models, ("magface", "celeba", "fairface")
        try:
            loaded = load_models(DEFAULT_MODELS, models_dir=self.models_dir, device=self.device, skip_missing=True)
        except MissingModelError as e:
            self.modelsMissing.emit(str(e))
            return None
        self.loaded = loaded
        if getattr(getattr(loaded, "device", None), "type", None) == "cpu":
            # One core stays free for the UI thread: on 2 cores this also scored faster (no oversubscription
            # between the detection and model threads); see docs/BENCHMARKS.md, GUI section.
            from ..engine.device import leave_cores_for_ui

            leave_cores_for_ui()
        self.modelsReady.emit(loaded)
        try:
            from ..engine.device import describe_device

            self.deviceFound.emit(describe_device(loaded.device))
        except Exception:  # fakes and exotic devices: the status bar just says less
            pass
        return loaded

    def _run(self, project) -> tuple[str, str]:
        added = []
        for p in self.add_paths:
            try:
                project.add_folder(p)
                added.append(p)
            except FaceQCError as e:
                self.phase.emit(str(e))
        loaded = self._models()
        if self._cancel.is_set():
            return "cancelled", "Cancelled."
        self.phase.emit("Looking for new and changed files…")
        with gc_paused():
            plan = project.plan_scoring(loaded.model_ids if loaded is not None else {},
                                        progress=lambda n: self.phase.emit(f"Looking for files… {n}"))
            snapshot = project.snapshot()
        self.planned.emit(plan, snapshot)
        if loaded is None:
            return "no_models", f"{len(plan.to_score)} images added, not scored: the face detector weights are missing."
        if not plan.to_score:
            return "done", f"Nothing to score ({plan.summary()})."
        return self._score(project, loaded, plan.to_score)

    def _score(self, project, loaded, paths: list[str]) -> tuple[str, str]:
        if self._pipeline_factory is None:
            from ..engine.pipeline import ScorePipeline

            pipe = ScorePipeline(loaded, batch_size=self.batch_size)
        else:
            pipe = self._pipeline_factory(loaded, self.batch_size)
        total = len(paths)
        done = 0
        group: list = []
        last_flush = time.monotonic()
        times: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self.phase.emit(f"Scoring {total} images…")
        self.progress.emit(Progress(0, total, 0.0, None))

        def flush():
            nonlocal group, last_flush
            if group:
                project.store_results(group)
                self.resultsStored.emit(group)
                group = []
            last_flush = time.monotonic()
            now = time.monotonic()
            times.append((now, done))
            while len(times) > 2 and now - times[0][0] > 5.0:
                times.popleft()
            dt = now - times[0][0]
            rate = (done - times[0][1]) / dt if dt > 0 else 0.0
            eta = (total - done) / rate if rate > 0 else None
            self.progress.emit(Progress(done, total, rate, eta))

        gen = pipe.run(paths, stop_event=self._cancel)
        try:
            for result in gen:
                group.append(result)
                done += 1
                if len(group) >= GROUP_IMAGES or time.monotonic() - last_flush >= GROUP_SECONDS:
                    flush()
                if not self._resume.is_set():
                    flush()
                    self.phase.emit("Paused")
                    while not self._resume.wait(0.1):
                        pass
                    if not self._cancel.is_set():
                        self.phase.emit(f"Scoring {total} images…")
                if self._cancel.is_set():
                    break
        finally:
            gen.close()
        flush()
        if self._cancel.is_set():
            return "cancelled", f"Cancelled after {done} of {total} images (the rest are scored next time)."
        return "done", f"Scored {done} images."


class ScoringController(QObject):
    """Starts one worker at a time in its own QThread and forwards its signals; keeps loaded models between runs."""

    phase = Signal(str)
    modelsReady = Signal(object)
    deviceFound = Signal(str)
    modelsMissing = Signal(str)
    planned = Signal(object, object)
    resultsStored = Signal(list)
    progress = Signal(object)
    finished = Signal(str, str)
    stateChanged = Signal(str)

    def __init__(self, parent: QObject | None = None, models_dir=None, device: str = "auto"):
        super().__init__(parent)
        self.models_dir = models_dir
        self.device = device
        self.loaded = None
        self.pipeline_factory = None  # tests and the benchmark plug in fakes here
        self.load_models = None
        self._thread: QThread | None = None
        self._worker: ScoringWorker | None = None
        self.state = "idle"  # idle | running | paused | stopping

    def _set_state(self, s: str) -> None:
        if s != self.state:
            self.state = s
            self.stateChanged.emit(s)

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, project, add_paths=()) -> bool:
        if self._thread is not None or project is None:
            return False
        worker = ScoringWorker(project, add_paths, loaded=self.loaded, models_dir=self.models_dir,
                               device=self.device, pipeline_factory=self.pipeline_factory,
                               load_models=self.load_models)
        thread = QThread()
        thread.setObjectName("faceqc-scoring")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.phase.connect(self.phase)
        worker.modelsReady.connect(self._on_models)
        worker.deviceFound.connect(self.deviceFound)
        worker.modelsMissing.connect(self.modelsMissing)
        worker.planned.connect(self.planned)
        worker.resultsStored.connect(self.resultsStored)
        worker.progress.connect(self.progress)
        worker.finished.connect(self._on_finished)
        self._thread, self._worker = thread, worker
        self._set_state("running")
        thread.start()
        return True

    def _on_models(self, loaded) -> None:
        self.loaded = loaded
        self.modelsReady.emit(loaded)

    def invalidate_models(self) -> None:
        """Weight files changed (downloaded, located): load them again on the next run."""
        self.loaded = None

    def pause(self) -> None:
        if self._worker is not None and self.state == "running":
            self._worker.pause()
            self._set_state("paused")

    def resume(self) -> None:
        if self._worker is not None and self.state == "paused":
            self._worker.resume()
            self._set_state("running")

    def cancel(self) -> None:
        if self._worker is not None and self.state in ("running", "paused"):
            self._worker.cancel()
            self._set_state("stopping")

    def _on_finished(self, outcome: str, message: str) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        if thread is not None:
            thread.quit()
            thread.wait(5000)
            thread.deleteLater()
        del worker  # only now: it lived in that thread
        self._set_state("idle")
        self.finished.emit(outcome, message)

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Cancel and wait (app exit): the group in flight is dropped, everything stored stays."""
        if self._worker is not None:
            self._worker.cancel()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(timeout_ms)
