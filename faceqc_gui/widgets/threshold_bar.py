"""The threshold bar: a histogram of quality for the current view with a draggable threshold line, a slider and a
numeric field, all showing one threshold, on the raw MagFace norm or OFIQ's 0-100 scale.

The threshold is always held as a MagFace norm (that is what the project stores); the 0-100 scale only changes what
is displayed and typed. ``thresholdChanged(norm, final)``: final is False while dragging (live re-decision) and True
when the user lets go or finishes typing (the window then commits one undo step).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSizePolicy, QSlider, QVBoxLayout, \
    QWidget

from ..engine.quality import norm_from_0_100, quality_0_100
from ..gui.colors import ACCEPT, REJECT, quality_array

NORM_RANGE = (0.0, 45.0)  # MagFace norms of real faces sit in ~10-35; the bar's range widens to fit the data
SLIDER_STEPS = 1000
BINS = 60


def to_scale(norm: float, scale: str) -> float:
    return float(quality_array(np.array([norm]))[0]) if scale == "q100" else float(norm)


def from_scale(v: float, scale: str) -> float:
    return float(norm_from_0_100(v)) if scale == "q100" else float(v)


class ThresholdBar(QWidget):
    thresholdChanged = Signal(float, bool)  # norm, final
    scaleChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scale = "norm"
        self._norm = 20.0
        self._scores = np.zeros(0, np.float32)
        self._range = NORM_RANGE
        self._dragging = False

        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(background=None)
        self.plot.setMinimumHeight(90)
        self.plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.getPlotItem().getAxis("left").setWidth(36)
        self.plot.getPlotItem().setLabel("bottom", "MagFace norm")
        self.bars = pg.BarGraphItem(x=[], height=[], width=1.0)
        self.plot.addItem(self.bars)
        self.line = pg.InfiniteLine(pos=self._norm, angle=90, movable=True,
                                    pen=pg.mkPen((20, 20, 20), width=2), hoverPen=pg.mkPen((0, 114, 178), width=3))
        self.line.setZValue(10)
        self.line.setToolTip("Drag to set the threshold")
        self.plot.addItem(self.line)
        self.line.sigPositionChanged.connect(self._line_moved)
        self.line.sigPositionChangeFinished.connect(self._line_released)

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setToolTip("Threshold")
        self.slider.valueChanged.connect(self._slider_moved)
        self.slider.sliderReleased.connect(lambda: self._emit(True))
        self.spin = QDoubleSpinBox()
        self.spin.setKeyboardTracking(False)
        self.spin.setDecimals(2)
        self.spin.setSingleStep(0.5)
        self.spin.setToolTip("Threshold (Enter to apply)")
        self.spin.valueChanged.connect(self._spin_changed)
        self.scale_box = QComboBox()
        self.scale_box.addItem("MagFace norm", "norm")
        self.scale_box.addItem("Quality 0–100", "q100")
        self.scale_box.currentIndexChanged.connect(lambda _i: self.set_scale(self.scale_box.currentData()))
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.RichText)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Threshold"))
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.spin)
        controls.addWidget(self.scale_box)
        controls.addWidget(self.summary)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(2)
        self.top_row = QHBoxLayout()
        self.top_row.addWidget(self.plot, 1)
        lay.addLayout(self.top_row, 1)
        lay.addLayout(controls)
        self._sync_ranges()
        self._sync_widgets()

    # ---- public ----------------------------------------------------------------------------------------------------
    def add_side_widget(self, w: QWidget) -> None:
        """A widget to the right of the histogram (the window puts the colour legend there)."""
        self.top_row.addWidget(w, 0, Qt.AlignmentFlag.AlignVCenter)

    @property
    def threshold(self) -> float:
        return self._norm

    def set_threshold(self, norm: float) -> None:
        """From the model (no signal back)."""
        if not np.isfinite(norm):
            return
        self._norm = float(norm)
        self._sync_widgets()
        self._recolour()

    def set_scale(self, scale: str) -> None:
        if scale not in ("norm", "q100") or scale == self.scale:
            if scale in ("norm", "q100"):
                self._sync_scale_box()
            return
        self.scale = scale
        self._sync_scale_box()
        self.plot.getPlotItem().setLabel("bottom", "MagFace norm" if scale == "norm" else "Quality (OFIQ 0–100)")
        self._sync_ranges()
        self._redraw_hist()
        self._sync_widgets()
        self.scaleChanged.emit(scale)

    def set_scores(self, scores: np.ndarray) -> None:
        """Scores (norms) of the images the histogram covers."""
        self._scores = np.asarray(scores, np.float32)
        if len(self._scores) >= 2:
            # The data's range (robust to a few outliers) plus the threshold, with a margin: the bins then
            # resolve the scores instead of spreading them over an empty 0-45 axis.
            p1, p99 = np.percentile(self._scores, [0.5, 99.5])
            lo = float(np.floor(min(p1, self._norm) - 2.0))
            hi = float(np.ceil(max(p99, self._norm) + 2.0))
            self._range = (lo, max(hi, lo + 5.0))
        else:
            self._range = NORM_RANGE
        self._sync_ranges()
        self._redraw_hist()
        self._sync_widgets()

    def set_summary(self, accepted: int, total: int) -> None:
        self.summary.setText(f"<b>{accepted}</b> accepted / {total}")

    # ---- internals -------------------------------------------------------------------------------------------------
    def _sync_scale_box(self) -> None:
        i = self.scale_box.findData(self.scale)
        if i != self.scale_box.currentIndex():
            self.scale_box.blockSignals(True)
            self.scale_box.setCurrentIndex(i)
            self.scale_box.blockSignals(False)

    def _display_range(self) -> tuple[float, float]:
        return (0.0, 100.0) if self.scale == "q100" else self._range

    def _sync_ranges(self) -> None:
        lo, hi = self._display_range()
        self.spin.blockSignals(True)
        self.spin.setRange(-1000.0, 1000.0) if self.scale == "norm" else self.spin.setRange(0.0, 100.0)
        self.spin.setDecimals(2 if self.scale == "norm" else 1)
        self.spin.blockSignals(False)
        self.plot.setXRange(lo, hi, padding=0.01)
        self.line.setBounds((lo, hi))

    def _sync_widgets(self) -> None:
        v = to_scale(self._norm, self.scale)
        lo, hi = self._display_range()
        for w in (self.slider, self.spin, self.line):
            w.blockSignals(True)
        self.slider.setValue(int(round((min(max(v, lo), hi) - lo) / (hi - lo) * SLIDER_STEPS)))
        self.spin.setValue(v)
        self.line.setValue(v)
        for w in (self.slider, self.spin, self.line):
            w.blockSignals(False)
        q = quality_0_100(self._norm)
        self.line.setToolTip(f"Threshold: norm {self._norm:.2f} (quality {q}/100)")

    def _redraw_hist(self) -> None:
        s = self._scores
        lo, hi = self._display_range()
        vals = quality_array(s) if self.scale == "q100" else s
        counts, edges = np.histogram(vals, bins=BINS, range=(lo, hi))
        self._centres = (edges[:-1] + edges[1:]) / 2
        self.bars.setOpts(x=self._centres, height=counts, width=(hi - lo) / BINS * 0.9)
        self.plot.setYRange(0, max(1, counts.max() if len(counts) else 1) * 1.05, padding=0)
        self._recolour()

    def _recolour(self) -> None:
        if not hasattr(self, "_centres") or not len(self._centres):
            return
        t = to_scale(self._norm, self.scale)
        acc, rej = pg.mkBrush(ACCEPT), pg.mkBrush(REJECT.lighter(130))
        self.bars.setOpts(brushes=[acc if c >= t else rej for c in self._centres], pen=pg.mkPen(None))

    def _set_from_display(self, v: float, final: bool) -> None:
        self._norm = from_scale(v, self.scale)
        self._sync_widgets()
        self._recolour()
        self._emit(final)

    def _emit(self, final: bool) -> None:
        self.thresholdChanged.emit(self._norm, final)

    def _line_moved(self) -> None:
        self._set_from_display(float(self.line.value()), False)

    def _line_released(self) -> None:
        self._emit(True)

    def _slider_moved(self, value: int) -> None:
        lo, hi = self._display_range()
        final = not self.slider.isSliderDown()  # keyboard/page steps are final at once; drags end on release
        self._set_from_display(lo + (hi - lo) * value / SLIDER_STEPS, final)

    def _spin_changed(self, value: float) -> None:
        self._set_from_display(float(value), True)
