"""Qt widgets of the FaceQC app (they show state from ``faceqc_gui.gui``; no project logic here)."""

from ..gui import qtfix

qtfix.make_singletons_immortal()  # before any Qt call: see gui/qtfix.py
