"""Colours of the app: quality on cividis (a sequential map readable with every common colour-vision deficiency),
and Okabe-Ito colours for accept/reject marks, which are always paired with a shape, never colour alone."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor

from ..engine.quality import OFIQ_CENTRE, OFIQ_WIDTH

ACCEPT = QColor(0, 158, 115)  # Okabe-Ito bluish green
REJECT = QColor(213, 94, 0)  # Okabe-Ito vermillion
OVERRIDE = QColor(204, 121, 167)  # Okabe-Ito reddish purple
UNSCORED = QColor(120, 120, 120)
PENDING = QColor(170, 170, 170)  # frame of a tile not scored yet (no decision to show)
ERROR = QColor(90, 90, 90)

# Sampled once from pyqtgraph's copy of matplotlib's cividis (256 steps), so painting never calls into pyqtgraph.
def _cividis_lut() -> np.ndarray:
    import pyqtgraph as pg

    return np.asarray(pg.colormap.get("cividis").getLookupTable(nPts=256, alpha=False), dtype=np.uint8)


LUT = _cividis_lut()
_QCOLORS = [QColor(int(r), int(g), int(b)) for r, g, b in LUT]
_TEXT = [QColor(0, 0, 0) if (0.2126 * r + 0.7152 * g + 0.0722 * b) > 140 else QColor(255, 255, 255)
         for r, g, b in LUT]


def quality_array(norms: np.ndarray) -> np.ndarray:
    """OFIQ 0-100 quality of MagFace norms, vectorised (NaN stays NaN); same formula as engine.quality."""
    z = (np.asarray(norms, dtype=np.float64) - OFIQ_CENTRE) / OFIQ_WIDTH
    with np.errstate(over="ignore", invalid="ignore"):
        return 100.0 / (1.0 + np.exp(-z))


def lut_index(q: float) -> int:
    return int(min(max(q, 0.0), 100.0) * 2.55)


def quality_color(q: float) -> QColor:
    """Tile colour of a 0-100 quality."""
    return _QCOLORS[lut_index(q)]


def text_color_on(q: float) -> QColor:
    """Black or white, whichever reads better on quality_color(q)."""
    return _TEXT[lut_index(q)]
