"""Screenshots of the real app for the docs: docs/screenshot.png (main window) and docs/screenshot_balance.png
(Demographics dock with a group filter applied).

    xvfb-run -s "-screen 0 1600x1000x24" python tools/screenshots.py [--out docs]

A project is made in a temporary folder from the shared test images (../shared/testdata or $FACEQC_TESTDATA):
faces/real, faces/synthetic and nonfaces. Faces, boxes and landmarks come from the real RetinaFace weights in the
test data. MagFace, CelebA and FairFace numbers come from the real models when their weight files are found (the
CLI's lookup); where a file is missing (as on the project's build machines) seeded placeholder numbers stand in,
and the docs say so under the picture. Run it under Xvfb (not the offscreen platform) to see what a user sees.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS  # noqa: E402


def testdata() -> Path:
    return Path(os.environ.get("FACEQC_TESTDATA", REPO.parent / "shared" / "testdata"))


def placeholder(result, rng) -> None:
    """Seeded numbers for the models whose weights are missing (plausible ranges, nothing more)."""
    for face in result.faces:
        if face.magface_norm is None:
            w = float(face.detection.box[2] - face.detection.box[0])
            face.magface_norm = float(np.clip(rng.normal(16.0 + 4.0 * np.log10(max(w, 10.0)), 2.5), 8, 34))
            face.embedding = rng.normal(size=512).astype(np.float32)
        if face.celeba is None:
            face.celeba = dict(zip(CELEBA_ATTRIBUTES, rng.beta(0.6, 0.9, len(CELEBA_ATTRIBUTES)).tolist()))
        if face.fairface is None:
            ff: dict = {}
            for head, labels in FAIRFACE_HEADS.items():
                probs = rng.dirichlet(np.full(len(labels), 0.6))
                ff[head] = dict(zip(labels, probs.tolist()))
                ff[f"{head}_top"] = labels[int(np.argmax(probs))]
            face.fairface = ff


def build_project(work: Path) -> tuple[Path, list[str]]:
    from faceqc_gui.engine.pipeline import ScorePipeline, load_models
    from faceqc_gui.engine.store import Project

    td = testdata()
    models = work / "models"
    models.mkdir()
    os.symlink(td / "weights" / "retinaface_mobilenet0.25.pth", models / "mobilenet0.25_Final.pth")
    for env_dir in filter(None, [os.environ.get("FACEQC_MODELS")]):
        for f in Path(env_dir).glob("*"):
            if not (models / f.name).exists():
                os.symlink(f, models / f.name)
    loaded = load_models(("magface", "celeba", "fairface"), models_dir=models, device="cpu", skip_missing=True)
    ppath = work / "testdata.faceqc"
    rng = np.random.default_rng(7)
    with Project.open(ppath, create=True) as p:
        for sub in ("faces/real", "faces/synthetic", "nonfaces"):
            p.add_folder(td / sub)
        plan = p.plan_scoring(loaded.model_ids)
        results = list(ScorePipeline(loaded, batch_size=16).run(plan.to_score))
        for r in results:
            placeholder(r, rng)
        p.store_results(results)
    return ppath, sorted(loaded.skipped)


def pump(app, seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "docs"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ppath, skipped = build_project(work)
        print("placeholder numbers for:", ", ".join(skipped) or "none (all weights found)")

        from faceqc_gui.app import _clean_qt_env

        _clean_qt_env()
        from PySide6.QtWidgets import QApplication

        from faceqc_gui.gui.settings import AppSettings
        from faceqc_gui.widgets.main_window import MainWindow

        app = QApplication.instance() or QApplication(["faceqc-gui"])
        win = MainWindow(settings=AppSettings(work / "gui.json"), thumb_cache_dir=work / "thumbs",
                         models_dir=work / "models")
        win.resize(1600, 1000)
        win.show()
        win.open_project(ppath)
        pump(app, 3.0)
        s = win.session
        # The face panel on the group photo with the most faces: boxes, landmarks, the face selector.
        best = int(np.argmax(np.where(np.isfinite(s.snapshot.score), s.snapshot.n_faces, -1)))
        pos = int(s.pos[best])
        win.grid.setCurrentIndex(win.grid.model().index(pos, 0))
        pump(app, 2.0)
        win.grab().save(str(out / "screenshot.png"))

        win.act_demographics.trigger()
        win.resize(1600, 1000)
        from PySide6.QtCore import Qt

        win.resizeDocks([win.demo_dock], [400], Qt.Orientation.Vertical)
        pump(app, 1.0)
        win.demographics.set_min_conf(0.4)
        labels = [lab for lab in FAIRFACE_HEADS["race7"]]
        counts = win.demographics.stats.marginals["race7"]
        top = max(labels, key=lambda lab: counts.accepted[counts.index((lab,))] if (lab,) in counts.groups else -1)
        win.demographics.groupFilterRequested.emit({"race7": top})
        pump(app, 0.5)
        win.grid.setCurrentIndex(win.grid.model().index(0, 0))
        pump(app, 2.0)
        win.grab().save(str(out / "screenshot_balance.png"))
        print("wrote", out / "screenshot.png", "and", out / "screenshot_balance.png")
        win.close()
        pump(app, 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
