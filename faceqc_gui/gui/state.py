"""The app's view state as a plain object: what is shown, how it is sorted and filtered, what is selected.

Widgets bind to it through the main window; it is saved in the project (``gui.view`` setting) so that closing and
reopening a project restores the view. ``from_dict`` accepts anything (old, hand-edited or foreign settings) and keeps
only values it understands: a bad saved view must never stop a project from opening.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS

STATUSES = ("accepted", "rejected", "overridden", "no_face", "error", "missing", "unscored")
STATUS_TEXT = {
    "accepted": "Accepted", "rejected": "Rejected", "overridden": "Overridden", "no_face": "No face",
    "error": "Errors", "missing": "Missing files", "unscored": "Not scored",
}
SCALES = ("norm", "q100")  # raw MagFace norm, OFIQ 0-100
TILE_MIN, TILE_MAX, TILE_DEFAULT = 64, 256, 128


def sort_keys() -> list[tuple[str, str]]:
    """(key, label) of every sort the grid offers: score, name, faces, each CelebA attribute, each FairFace label."""
    keys = [("score", "MagFace score"), ("name", "File name"), ("path", "Path"), ("faces", "Number of faces")]
    keys += [(f"celeba:{a}", f"CelebA: {a.replace('_', ' ')}") for a in CELEBA_ATTRIBUTES]
    for head, labels in FAIRFACE_HEADS.items():
        keys += [(f"{head}:{lab}", f"FairFace {head}: P({lab})") for lab in labels]
    return keys


_SORT_KEYS = {k for k, _ in sort_keys()}


@dataclass
class ViewState:
    scale: str = "norm"
    status: set[str] = field(default_factory=set)  # empty: every status
    score_min: float | None = None  # MagFace norm units, whatever the displayed scale
    score_max: float | None = None
    celeba: dict[str, tuple[float, float]] = field(default_factory=dict)
    fairface: dict[str, str] = field(default_factory=dict)  # head -> top label, "uncertain" or "unknown"
    fairface_min_conf: float = 0.0  # below this top probability a prediction is "uncertain" (as in Demographics)
    path_contains: str = ""
    sort: str = "score"
    descending: bool = True
    tile_size: int = TILE_DEFAULT
    auto_advance: bool = False
    selection: list[int] = field(default_factory=list)  # image ids
    current: int | None = None  # image id shown in the face panel
    demographics: dict = field(default_factory=dict)  # the Demographics panel's options (DemographicsPanel.state())

    # ---- filter --------------------------------------------------------------------------------------------------
    def has_filter(self) -> bool:
        return bool(self.status or self.score_min is not None or self.score_max is not None or self.celeba
                    or self.fairface or self.path_contains)

    def to_filter(self):
        """The engine's Filter for this view (None when nothing filters)."""
        if not self.has_filter():
            return None
        from ..engine.store import Filter

        return Filter(
            status=set(self.status) or None,
            score_min=self.score_min,
            score_max=self.score_max,
            celeba=dict(self.celeba) or None,
            fairface=dict(self.fairface) or None,
            fairface_min_conf=self.fairface_min_conf,
            path_contains=self.path_contains or None,
        )

    def decision_dependent(self) -> bool:
        """True when the visible set changes with the threshold (then a threshold move refilters, not just repaints)."""
        return bool(self.status & {"accepted", "rejected"})

    def clear_filter(self) -> None:
        self.status = set()
        self.score_min = self.score_max = None
        self.celeba = {}
        self.fairface = {}
        self.fairface_min_conf = 0.0
        self.path_contains = ""

    # ---- persistence ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "status": sorted(self.status),
            "score_min": self.score_min,
            "score_max": self.score_max,
            "celeba": {k: [lo, hi] for k, (lo, hi) in self.celeba.items()},
            "fairface": dict(self.fairface),
            "fairface_min_conf": self.fairface_min_conf,
            "path_contains": self.path_contains,
            "sort": self.sort,
            "descending": self.descending,
            "tile_size": self.tile_size,
            "auto_advance": self.auto_advance,
            "selection": list(self.selection),
            "current": self.current,
            "demographics": dict(self.demographics),
        }

    @classmethod
    def from_dict(cls, d: Any) -> "ViewState":
        v = cls()
        if not isinstance(d, dict):
            return v
        if d.get("scale") in SCALES:
            v.scale = d["scale"]
        if isinstance(d.get("status"), (list, tuple)):
            v.status = {s for s in d["status"] if s in STATUSES}
        v.score_min = _finite_or_none(d.get("score_min"))
        v.score_max = _finite_or_none(d.get("score_max"))
        if isinstance(d.get("celeba"), dict):
            for name, rng in d["celeba"].items():
                if name in CELEBA_ATTRIBUTES and isinstance(rng, (list, tuple)) and len(rng) == 2:
                    lo, hi = _finite_or_none(rng[0]), _finite_or_none(rng[1])
                    if lo is not None and hi is not None:
                        v.celeba[name] = (min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0))
        if isinstance(d.get("fairface"), dict):
            v.fairface = {h: lab for h, lab in d["fairface"].items()
                          if h in FAIRFACE_HEADS and lab in FAIRFACE_HEADS[h] + ("uncertain", "unknown")}
        mc = _finite_or_none(d.get("fairface_min_conf"))
        if mc is not None:
            v.fairface_min_conf = min(max(mc, 0.0), 1.0)
        if isinstance(d.get("path_contains"), str):
            v.path_contains = d["path_contains"]
        if d.get("sort") in _SORT_KEYS:
            v.sort = d["sort"]
        if isinstance(d.get("descending"), bool):
            v.descending = d["descending"]
        ts = d.get("tile_size")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
            v.tile_size = int(min(max(ts, TILE_MIN), TILE_MAX))
        if isinstance(d.get("auto_advance"), bool):
            v.auto_advance = d["auto_advance"]
        if isinstance(d.get("selection"), (list, tuple)):
            v.selection = [int(i) for i in d["selection"] if isinstance(i, int) and not isinstance(i, bool)]
        cur = d.get("current")
        if isinstance(cur, int) and not isinstance(cur, bool):
            v.current = cur
        if isinstance(d.get("demographics"), dict):
            v.demographics = dict(d["demographics"])  # checked by DemographicsPanel.restore_state
        return v


def _finite_or_none(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None
