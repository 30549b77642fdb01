"""Importing OpenCV and facer without breaking Qt.

`import cv2` (pyfacer imports it eagerly) points QT_QPA_PLATFORM_PLUGIN_PATH at OpenCV's own bundled Qt plugins; a
PySide6 app started afterwards under a real X display then loads the wrong plugins and dies. Every engine import of
cv2 or facer goes through here, which restores the Qt variables right after the import. facer also imports
`timm.models.layers`, whose deprecation warning is noise for our users.
"""

from __future__ import annotations

import importlib
import os
import warnings

_QT_VARS = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "QT_PLUGIN_PATH")


def import_preserving_qt_env(name: str):
    saved = {k: os.environ.get(k) for k in _QT_VARS}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"timm\..*")
            warnings.filterwarnings("ignore", message=r".*timm\.models\.layers.*")
            return importlib.import_module(name)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
