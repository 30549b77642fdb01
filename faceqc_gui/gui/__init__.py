"""Qt glue of the FaceQC app: view state, the project session, the scoring worker thread, thumbnails, settings.

Widgets (``faceqc_gui.widgets``) only show what these objects hold; nothing here is drawn. The engine stays Qt-free.
"""

from .qtfix import make_singletons_immortal

make_singletons_immortal()  # before any Qt call: see qtfix.py
