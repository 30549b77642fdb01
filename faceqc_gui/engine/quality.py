"""MagFace quality numbers: the raw embedding norm and OFIQ's 0-100 mapping of it."""

from __future__ import annotations

import math

DEFAULT_THRESHOLD = 20.0

# OFIQ maps the MagFace norm to 0-100 with a sigmoid centred at 23 with width 2.6 (MODELS.md / issue 2).
OFIQ_CENTRE = 23.0
OFIQ_WIDTH = 2.6


def quality_0_100(norm: float | None) -> int | None:
    if norm is None or not math.isfinite(norm):
        return None
    z = (norm - OFIQ_CENTRE) / OFIQ_WIDTH
    # Numerically safe logistic for large |z|.
    s = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return int(round(100.0 * s))


def norm_from_0_100(q: float) -> float:
    """Inverse mapping (for a threshold given on the 0-100 scale); q is clamped into (0, 100)."""
    q = min(max(q, 1e-6), 100 - 1e-6) / 100.0
    return OFIQ_CENTRE + OFIQ_WIDTH * math.log(q / (1.0 - q))
