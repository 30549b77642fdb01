"""GUI responsiveness on a large project: the numbers behind "100k images open fast and the UI never stalls".

    python bench/gui.py                        # 100k images (generated once into --workdir, reused)
    python bench/gui.py --images 20000 --real-detector

Measures, on a project of N generated image files with (fake but store-valid) scores:
  open        MainWindow.open_project until the grid model holds every row (snapshot, order, model reset), and until
              every visible tile shows its thumbnail: cold (empty thumbnail cache) and warm
  threshold   one threshold move as the user makes it (slider value -> re-decide -> repaint of the visible tiles),
              without and with a filter that depends on the decision (then the visible set changes too)
  scroll      a page scroll + synchronous repaint, thumbnails loading meanwhile
  stall       longest gap of a 5 ms heartbeat timer on the UI thread while the worker scores a second, unscored
              project of the same files (fake pipeline at a GPU-like rate; --real-detector adds a run of the real
              RetinaFace on the shared test faces, torch working in the worker thread)
  memory      resident set size after opening and scrolling
Goals (issue 5): first thumbnails < 1 s, threshold change < 16 ms, stall < 50 ms.
Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

from test_gui_fixtures import FAKE_MODEL_IDS, FakePipeline, fake_load_models, fake_result, make_images  # noqa: E402

TESTDATA = Path(os.environ.get("FACEQC_TESTDATA", REPO.parent / "shared" / "testdata"))


def rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_dataset(work: Path, n: int) -> tuple[Path, Path]:
    """N distinct 128 px JPEG files (a pool of 200 pictures, each copy with unique trailing bytes so content hashes
    differ) and a project holding fake scores for all of them. Reused when already there."""
    folder = work / f"images-{n}"
    project = work / f"scored-{n}.faceqc"
    if project.is_file() and (work / f"done-{n}").is_file():
        from faceqc_gui.engine.store import Project, ProjectError

        try:  # made by an older version of the store? then make it again
            Project.open(project, readonly=True).close()
            return folder, project
        except ProjectError as e:
            print(f"regenerating: {e}", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    for p in (project, Path(str(project) + "-wal"), Path(str(project) + "-shm")):
        if p.exists():
            p.unlink()
    t0 = time.perf_counter()
    pool = [Path(p).read_bytes() for p in make_images(work / "pool", 200, size=128)]
    for i in range(n):
        sub = folder / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"face_{i:07d}.jpg").write_bytes(pool[i % len(pool)] + i.to_bytes(4, "little"))
    from faceqc_gui.engine.store import Project

    with Project.open(project, create=True) as p:
        p.add_folder(folder)
        plan = p.plan_scoring(FAKE_MODEL_IDS)
        rng = np.random.default_rng(0)
        for i in range(0, len(plan.to_score), 2000):
            p.store_results([fake_result(x, rng, size=128) for x in plan.to_score[i:i + 2000]])
    (work / f"done-{n}").write_text("ok")
    print(f"generated {n} images + scored project in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder, project


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def visible_thumbs_ready(win) -> bool:
    first, last = win.grid.visible_range()
    if first >= last:
        return False
    s = win.session
    return all(win.model.pixmaps.get(int(s.snapshot.ids[s.order[i]])) is not None for i in range(first, last))


def new_window(work: Path, thumbs: Path, settings_name: str):
    from faceqc_gui.gui.settings import AppSettings
    from faceqc_gui.widgets.main_window import MainWindow

    win = MainWindow(settings=AppSettings(work / settings_name), thumb_cache_dir=thumbs, probe_device=False)
    win.resize(1600, 1000)
    win.show()
    return win


def bench_open(app, work: Path, project: Path, thumbs: Path, cold: bool) -> dict:
    if cold:
        shutil.rmtree(thumbs, ignore_errors=True)
    win = new_window(work, thumbs, "gui-open.json")
    pump(app, 0.3)
    t0 = time.perf_counter()
    if not win.open_project(project):
        raise SystemExit(f"could not open {project}: {win.banners.banners['project'].label.text()}")
    t_model = time.perf_counter() - t0
    rows = win.model.rowCount()
    while not visible_thumbs_ready(win) and time.perf_counter() - t0 < 30:
        app.processEvents()
        time.sleep(0.0005)
    t_thumbs = time.perf_counter() - t0
    first, last = win.grid.visible_range()
    out = {"model_s": t_model, "first_thumbs_s": t_thumbs, "rows": rows, "visible_tiles": last - first,
           "rss_mb": rss_mb()}
    return out, win


def bench_threshold(app, win, moves: int = 60, also_repaint=()) -> dict:
    bar = win.bar
    lo, hi = 14.0, 30.0
    times = []
    for i in range(moves):
        t = lo + (hi - lo) * ((i * 7) % moves) / moves
        t0 = time.perf_counter()
        bar.line.setValue(t)  # as a drag does: live re-decision, no write
        win.grid.viewport().repaint()
        for w in also_repaint:
            w.repaint()
        times.append(time.perf_counter() - t0)
        app.processEvents()
    return _stats_ms(times)


def bench_scroll(app, win, steps: int = 60) -> dict:
    sb = win.grid.verticalScrollBar()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        sb.setValue(sb.value() + sb.pageStep())
        win.grid.viewport().repaint()
        times.append(time.perf_counter() - t0)
        pump(app, 0.03)
    return _stats_ms(times)


def _stats_ms(times) -> dict:
    ms = sorted(1000 * t for t in times)
    return {"median_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))], "max_ms": ms[-1],
            "n": len(ms)}


class Heartbeat:
    def __init__(self, period_ms: int = 5):
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[tuple[float, str]] = []
        self.phase = ""
        self.last = time.perf_counter()

    # --watchdog MS: when the UI thread misses a tick by MS, dump every thread's stack to stderr (how the stalls
    # documented in docs/BENCHMARKS.md were found). Off by default: the dumps themselves take time.
    watchdog_s: float = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last, self.phase))
        self.last = now
        if self.watchdog_s:
            faulthandler.dump_traceback_later(self.watchdog_s, repeat=False)

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        if self.watchdog_s:
            faulthandler.cancel_dump_traceback_later()

    def worst(self, phase: str | None = None) -> float:
        g = [x for x, p in self.gaps if phase is None or p == phase]
        return 1000 * max(g) if g else float("nan")


def bench_torch_import(app) -> float:
    """Longest UI gap while torch and the scoring modules are imported in another thread: a one-time cost per
    process (the app pays it at start-up, when it asks torch for the device name)."""
    import threading

    hb = Heartbeat()
    hb.start()
    def imports():  # what the app's start-up probe imports, then freezes (see main_window._DeviceProbe)
        import gc

        import faceqc_gui.engine.detect  # noqa: F401
        import faceqc_gui.engine.pipeline  # noqa: F401
        gc.freeze()

    t = threading.Thread(target=imports, daemon=True)
    t.start()
    while t.is_alive():
        app.processEvents()
        time.sleep(0.0005)
    hb.stop()
    return hb.worst()


def bench_stall(app, work: Path, folder: Path, thumbs: Path, n_score: int, rate: float) -> dict:
    """Drop the folder on a new project; the worker plans (walks all files), hands over the snapshot, then streams
    fake results at ``rate`` images/s; stops after ``n_score`` results."""
    from faceqc_gui.engine.store import Project

    proj = work / "stall.faceqc"
    for p in (proj, Path(str(proj) + "-wal"), Path(str(proj) + "-shm")):
        if p.exists():
            p.unlink()
    win = new_window(work, thumbs, "gui-stall.json")
    win.controller.load_models = fake_load_models
    win.controller.pipeline_factory = lambda loaded, bs: FakePipeline(loaded, bs, delay=1.0 / rate)
    pump(app, 0.3)
    win.open_project(proj, create=True)
    hb = Heartbeat()
    hb.phase = "planning"
    win.controller.planned.connect(lambda *a: setattr(hb, "phase", "handover"))
    win.controller.resultsStored.connect(lambda *a: setattr(hb, "phase", "streaming"))
    hb.start()
    t0 = time.perf_counter()
    win.add_paths([str(folder)])
    scored = lambda: int((win.session.snapshot.n_faces >= 0).sum())  # noqa: E731
    while scored() < n_score and time.perf_counter() - t0 < 600 and win.controller.busy:
        app.processEvents()
        time.sleep(0.0005)
    t_run = time.perf_counter() - t0
    win.controller.cancel()
    while win.controller.busy:
        app.processEvents()
        time.sleep(0.001)
    hb.stop()
    out = {"images": scored(), "seconds": t_run, "rate_target": rate, "max_ms": hb.worst(),
           "planning_max_ms": hb.worst("planning"), "handover_max_ms": hb.worst("handover"),
           "streaming_max_ms": hb.worst("streaming"),
           "streaming_p99_ms": 1000 * float(np.percentile([g for g, p in hb.gaps if p == "streaming"] or [0], 99))}
    win.close()
    with Project.open(proj, readonly=True):
        pass
    return out


def bench_real_detector(app, work: Path, thumbs: Path, copies: int) -> dict | None:
    weights = TESTDATA / "weights" / "retinaface_mobilenet0.25.pth"
    faces = sorted(p for p in (TESTDATA / "faces").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not weights.is_file() or not faces:
        return None
    models = work / "models-detector"
    models.mkdir(exist_ok=True)
    link = models / "mobilenet0.25_Final.pth"
    if not link.exists():
        os.symlink(weights, link)
    folder = work / "real-faces"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for i in range(copies):
        src = faces[i % len(faces)]
        (folder / f"{i:04d}_{src.name}").write_bytes(src.read_bytes() + i.to_bytes(4, "little"))
    proj = work / "real.faceqc"
    for p in (proj, Path(str(proj) + "-wal"), Path(str(proj) + "-shm")):
        if p.exists():
            p.unlink()
    os.environ["FACEQC_MODELS"] = str(models)
    win = new_window(work, thumbs, "gui-real.json")
    pump(app, 0.3)
    win.open_project(proj, create=True)
    hb = Heartbeat()
    hb.phase = "loading"
    win.controller.resultsStored.connect(lambda *a: setattr(hb, "phase", "streaming"))
    hb.start()
    t0 = time.perf_counter()
    win.add_paths([str(folder)])
    while win.controller.busy and time.perf_counter() - t0 < 900:
        app.processEvents()
        time.sleep(0.0005)
    hb.stop()
    out = {"images": int((win.session.snapshot.n_faces >= 0).sum()), "seconds": time.perf_counter() - t0,
           "loading_max_ms": hb.worst("loading"), "streaming_max_ms": hb.worst("streaming"),
           "device": win.status.device.text()}
    win.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "faceqc-bench-gui"))
    ap.add_argument("--score-images", type=int, default=20_000, help="results streamed in the stall test")
    ap.add_argument("--rate", type=float, default=1000.0, help="fake scoring rate (images/s) in the stall test")
    ap.add_argument("--real-detector", action="store_true", help="also score the shared test faces for real")
    ap.add_argument("--real-copies", type=int, default=120)
    ap.add_argument("--watchdog", type=float, default=0.0, metavar="MS",
                    help="dump all threads' stacks when the UI thread is late by MS (diagnosis only)")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for the run (default: what the app sets)")
    ap.add_argument("--skip-open", action="store_true", help="only the stall measurements")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "gui.json"))
    args = ap.parse_args(argv)
    Heartbeat.watchdog_s = args.watchdog / 1000

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # Everything the app writes (settings, recent list, model lookups) stays in the work dir.
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        os.environ[var] = str(work / sub)
    empty_models = work / "no-models"
    empty_models.mkdir(exist_ok=True)
    os.environ["FACEQC_MODELS"] = str(empty_models)
    os.chdir(work)
    folder, project = make_dataset(work, args.images)

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    thumbs = work / "thumbs"
    res: dict = {"images": args.images, "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                                     "cpus": os.cpu_count(),
                                                     "qpa": os.environ.get("QT_QPA_PLATFORM", "")}}
    from faceqc_gui.app import UI_SWITCH_INTERVAL

    res["switch_interval_s"] = args.switch_interval if args.switch_interval is not None else UI_SWITCH_INTERVAL
    sys.setswitchinterval(res["switch_interval_s"])
    res["rss_before_mb"] = rss_mb()
    if not args.skip_open:
        res["open_cold"], win = bench_open(app, work, project, thumbs, cold=True)
        res["threshold"] = bench_threshold(app, win)
        win.filters.status_boxes["accepted"].setChecked(True)
        res["threshold_accepted_filter"] = bench_threshold(app, win)
        win.filters.clear()
        win.act_demographics.trigger()  # the Demographics dock recounts the accepted set on every move
        pump(app, 0.3)
        res["threshold_demographics"] = bench_threshold(app, win, also_repaint=[win.demographics])
        win.act_demographics.trigger()
        res["scroll"] = bench_scroll(app, win)
        res["rss_after_scroll_mb"] = rss_mb()
        win.close()
        pump(app, 0.2)
        res["open_warm"], win = bench_open(app, work, project, thumbs, cold=False)
        win.close()
        pump(app, 0.2)
    res["torch_import_stall_ms"] = bench_torch_import(app)
    res["stall"] = bench_stall(app, work, folder, thumbs, min(args.score_images, args.images), args.rate)
    if args.real_detector:
        res["real_detector"] = bench_real_detector(app, work, thumbs, args.real_copies)
    if args.skip_open:
        print(json.dumps({k: res[k] for k in ("switch_interval_s", "torch_import_stall_ms", "stall")
                          + (("real_detector",) if args.real_detector else ())}, indent=1))
        return 0

    print(f"\nFaceQC GUI benchmark: {args.images} images ({res['machine']['cpus']} CPUs, "
          f"QPA {res['machine']['qpa']})")
    rows = [
        ("open: grid model populated (cold)", f"{res['open_cold']['model_s'] * 1000:.0f} ms", ""),
        ("open: first thumbnails (cold cache)", f"{res['open_cold']['first_thumbs_s'] * 1000:.0f} ms",
         "goal < 1000 ms"),
        ("open: grid model populated (warm)", f"{res['open_warm']['model_s'] * 1000:.0f} ms", ""),
        ("open: first thumbnails (warm cache)", f"{res['open_warm']['first_thumbs_s'] * 1000:.0f} ms", ""),
        ("threshold move + repaint (median / max)",
         f"{res['threshold']['median_ms']:.1f} / {res['threshold']['max_ms']:.1f} ms", "goal < 16 ms"),
        ("  with an 'accepted' filter (median / max)",
         f"{res['threshold_accepted_filter']['median_ms']:.1f} / {res['threshold_accepted_filter']['max_ms']:.1f} ms",
         "goal < 16 ms"),
        ("  with the Demographics dock open (median / max)",
         f"{res['threshold_demographics']['median_ms']:.1f} / {res['threshold_demographics']['max_ms']:.1f} ms",
         "goal < 16 ms"),
        ("page scroll + repaint (median / max)", f"{res['scroll']['median_ms']:.1f} / {res['scroll']['max_ms']:.1f} ms",
         ""),
        ("UI stall while scoring: streaming (max / p99)",
         f"{res['stall']['streaming_max_ms']:.0f} / {res['stall']['streaming_p99_ms']:.0f} ms", "goal < 50 ms"),
        ("UI stall: torch import in a thread (once)", f"{res['torch_import_stall_ms']:.0f} ms", "at start-up"),
        ("UI stall: folder walk / snapshot handover (max)",
         f"{res['stall']['planning_max_ms']:.0f} / {res['stall']['handover_max_ms']:.0f} ms", ""),
        ("memory (RSS) after open + scroll", f"{res['rss_after_scroll_mb']:.0f} MB",
         f"before open {res['rss_before_mb']:.0f} MB"),
    ]
    rd = res.get("real_detector")
    if rd:
        rows.append(("UI stall, real RetinaFace in worker (max)", f"{rd['streaming_max_ms']:.0f} ms",
                     f"{rd['images']} images in {rd['seconds']:.0f} s; {rd['device']}"))
    w = max(len(r[0]) for r in rows)
    for name, val, note in rows:
        print(f"  {name:<{w}}  {val:>16}  {note}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
