"""`faceqc-gui [PROJECT|FOLDER|IMAGE...]` (and `python main.py`): start the FaceQC desktop app.

A project file opens it; folders and images start a new project on them (kept in the user data dir, reopened the
next time the same folder is given) and start scoring. Without arguments the last project is reopened. Weight files
are looked up exactly as the CLI does (--models-dir, $FACEQC_MODELS, ./models, the user data dir).
"""

from __future__ import annotations

import argparse
import os
import sys

# The UI thread gets the GIL back within this time when worker threads run Python (CPython's default is 5 ms, and
# the UI needs the GIL for every Python slot and paint; bench/gui.py measures the effect on UI stalls).
UI_SWITCH_INTERVAL = 0.001


def _clean_qt_env() -> None:
    # OpenCV's wheels point QT_QPA_PLATFORM_PLUGIN_PATH at their own Qt plugins when cv2 is imported; PySide6 would
    # then load those and fail under a real display. The engine restores the variable after importing cv2, but a
    # value inherited from a parent process that imported cv2 must not leak in either.
    for var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH"):
        v = os.environ.get(var, "")
        if v and ("cv2" in v.split(os.sep) or "opencv" in v.lower()):
            os.environ.pop(var, None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceqc-gui", description="FaceQC: curate face-image datasets.")
    p.add_argument("paths", nargs="*", help="a project file (.faceqc), or folders/images to start a project on")
    p.add_argument("--models-dir", default=None, help="folder with the weight files (searched first)")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda or mps")
    p.add_argument("--no-reopen", action="store_true", help="do not reopen the last project")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _clean_qt_env()
    sys.setswitchinterval(UI_SWITCH_INTERVAL)
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("FaceQC")
    app.setOrganizationName("faceqc")
    app.setAttribute(Qt.ApplicationAttribute.AA_DontShowIconsInMenus, False)

    from .widgets.main_window import MainWindow

    win = MainWindow(models_dir=args.models_dir, device=args.device)
    win.show()
    if args.paths:
        win.open_paths(args.paths)
    elif not args.no_reopen:
        last = win.settings.get("last_project")
        if isinstance(last, str) and os.path.isfile(last):
            win.open_project(last)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
