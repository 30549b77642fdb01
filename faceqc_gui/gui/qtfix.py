"""A guard against a reference-counting bug of PySide6 6.12 on CPython < 3.12.

PySide6 6.12.0 returns None, True and False from Qt calls without taking a reference to them: every void Qt call
(QPainter.setPen, QWidget.update, ...) and every Signal.emit lowers the refcount of None/True/False by one. From
CPython 3.12 these objects are immortal and nothing happens; on 3.11 the interpreter aborts with "none_dealloc:
deallocating None" after a few hundred thousand calls, i.e. a few minutes of scrolling or a benchmark (measured: -1
per call; PySide6 6.11.3 is not affected). Until the dependency pin excludes it, give these three singletons a
reference count so large that the leak can never bring it to zero, which is what 3.12's immortality does.
"""

from __future__ import annotations

import platform
import sys

_HEADROOM = 1 << 40  # ~10^12 leaked calls before it could matter


def make_singletons_immortal() -> bool:
    """Applies the guard once per process on CPython < 3.12; returns whether it did anything now."""
    if sys.version_info >= (3, 12) or platform.python_implementation() != "CPython":
        return False
    if getattr(sys, "_faceqc_singletons_guarded", False):
        return False
    import ctypes

    for obj in (None, True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += _HEADROOM  # ob_refcnt is the first field of every object
    sys._faceqc_singletons_guarded = True
    return True
