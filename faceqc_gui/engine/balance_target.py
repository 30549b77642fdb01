"""Demographic targets for balanced selection: group shares or caps, CelebA attribute shares inside groups, and
the CLI's text forms of both.

Groups are opaque hashable keys (for FaceQC: tuples of FairFace top labels, e.g. ("Black", "Female")).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import FaceQCError
from .labels import CELEBA_ATTRIBUTES

SHARE_EPS = 1e-9  # shares x counts are compared with this slack, so 0.4 x 5 counts as exactly 2


@dataclass(frozen=True)
class AttributeConstraint:
    """A CelebA attribute's share inside every group: at least ``min_share``, at most ``max_share``, or ``share``
    (exact, i.e. the count is share x group size rounded down or up). An image has the attribute when its
    probability is >= ``threshold``."""

    attribute: str
    min_share: float | None = None
    max_share: float | None = None
    share: float | None = None
    threshold: float = 0.5

    def __post_init__(self):
        if self.attribute not in CELEBA_ATTRIBUTES:
            raise FaceQCError(f"{self.attribute!r} is not a CelebA attribute.")
        given = [v for v in (self.min_share, self.max_share, self.share) if v is not None]
        if not given:
            raise FaceQCError(f"the constraint on {self.attribute} gives no share.")
        if any(not (0.0 <= v <= 1.0) for v in given):
            raise FaceQCError(f"shares for {self.attribute} must be between 0 and 1.")
        if self.share is not None and (self.min_share is not None or self.max_share is not None):
            raise FaceQCError(f"give {self.attribute} either an exact share or a range, not both.")
        if self.min_share is not None and self.max_share is not None and self.min_share > self.max_share:
            raise FaceQCError(f"the minimum share of {self.attribute} is above its maximum.")
        if not 0.0 < self.threshold < 1.0:
            raise FaceQCError(f"the probability threshold for {self.attribute} must be between 0 and 1.")

    @property
    def index(self) -> int:
        return CELEBA_ATTRIBUTES.index(self.attribute)

    def bounds(self, c):
        """Allowed numbers of images with the attribute among ``c`` images (vectorised over c)."""
        c = np.asarray(c, dtype=np.int64)
        if self.share is not None:
            lo = np.floor(self.share * c + SHARE_EPS)
            hi = np.ceil(self.share * c - SHARE_EPS)
        else:
            lo = np.ceil(self.min_share * c - SHARE_EPS) if self.min_share is not None else np.zeros(c.shape)
            hi = np.floor(self.max_share * c + SHARE_EPS) if self.max_share is not None else c.astype(float)
        return np.clip(lo, 0, c).astype(np.int64), np.clip(hi, 0, c).astype(np.int64)

    def describe(self) -> str:
        if self.share is not None:
            return f"{self.attribute} = {self.share:.0%}"
        parts = []
        if self.min_share is not None:
            parts.append(f">= {self.min_share:.0%}")
        if self.max_share is not None:
            parts.append(f"<= {self.max_share:.0%}")
        return f"{self.attribute} {' and '.join(parts)}"


@dataclass(frozen=True)
class Target:
    """What a balanced set looks like.

    kind "uniform": the same number of images in every group; "shares": group -> relative weight (normalised; groups
    not named get 0); "caps": group -> maximum number of images (groups not named get ``default_cap``, None = no cap).
    ``constraints`` apply inside every group.
    """

    kind: str = "uniform"
    shares: Mapping[Hashable, float] | None = None
    caps: Mapping[Hashable, int] | None = None
    default_cap: int | None = None
    constraints: tuple[AttributeConstraint, ...] = ()

    def __post_init__(self):
        if self.kind not in ("uniform", "shares", "caps"):
            raise FaceQCError(f"unknown target kind {self.kind!r}; use uniform, shares or caps.")
        if self.kind == "shares":
            if not self.shares or any(not math.isfinite(v) or v < 0 for v in self.shares.values()):
                raise FaceQCError("target shares must be non-negative numbers.")
            if sum(self.shares.values()) <= 0:
                raise FaceQCError("target shares must not all be zero.")
        if self.kind == "caps":
            vals = list((self.caps or {}).values()) + ([self.default_cap] if self.default_cap is not None else [])
            if any(int(v) != v or v < 0 for v in vals):
                raise FaceQCError("caps must be whole numbers >= 0.")
        names = [c.attribute for c in self.constraints]
        if len(set(names)) != len(names):
            raise FaceQCError("each CelebA attribute may be constrained only once.")

    def check_groups(self, groups: Sequence[Hashable]) -> None:
        unknown = [g for g in list(self.shares or {}) + list(self.caps or {}) if g not in groups]
        if unknown:
            raise FaceQCError(f"the target names groups that do not exist: {', '.join(map(group_name, unknown))}.")

    def describe(self) -> str:
        text = {"uniform": "uniform over groups", "shares": "custom shares", "caps": "caps per group"}[self.kind]
        if self.constraints:
            text += "; within each group " + ", ".join(c.describe() for c in self.constraints)
        return text


def group_name(g: Hashable) -> str:
    return " / ".join(map(str, g)) if isinstance(g, tuple) else str(g)


def _norm(s: str) -> str:
    return s.strip().lower().replace("_", " ")


def match_group(text: str, groups: Sequence[Hashable]) -> Hashable:
    """'east asian/female' -> ("East Asian", "Female"): labels joined by '/', case, spaces and '_' ignored."""
    want = [_norm(p) for p in text.split("/")]
    for g in groups:
        parts = g if isinstance(g, tuple) else (g,)
        if [_norm(str(p)) for p in parts] == want:
            return g
    raise FaceQCError(f"no group {text!r}; groups are: {', '.join(group_name(g) for g in groups)}.")


def parse_target(text: str | None, groups: Sequence[Hashable],
                 constraints: Sequence[AttributeConstraint] = ()) -> Target:
    """'uniform' | 'shares:G=x,G=y' | 'caps:N' | 'caps:G=N,...' | 'caps:N,G=M' (N = default cap for other groups)."""
    text = (text or "uniform").strip()
    kind, _, body = text.partition(":")
    kind = kind.strip().lower()
    if kind == "uniform" and not body.strip():
        return Target("uniform", constraints=tuple(constraints))
    if kind not in ("shares", "caps") or not body.strip():
        raise FaceQCError(f"cannot read the target {text!r}; use uniform, shares:GROUP=x,... or caps:GROUP=N,...")
    values: dict[Hashable, float] = {}
    default = None
    for item in body.split(","):
        name, eq, val = item.rpartition("=")
        try:
            num = float(val)
        except ValueError:
            raise FaceQCError(f"cannot read {item.strip()!r} in the target: expected GROUP=number.") from None
        if not eq:
            if kind != "caps":
                raise FaceQCError(f"cannot read {item.strip()!r}: shares need GROUP=x.")
            default = num
            continue
        values[match_group(name, groups)] = num
    if kind == "shares":
        return Target("shares", shares=values, constraints=tuple(constraints))
    for v in list(values.values()) + ([default] if default is not None else []):
        if v != int(v) or v < 0:
            raise FaceQCError(f"caps must be whole numbers >= 0, not {v}.")
    return Target("caps", caps={g: int(v) for g, v in values.items()},
                  default_cap=None if default is None else int(default), constraints=tuple(constraints))


def parse_constraint(text: str) -> AttributeConstraint:
    """'Smiling>=0.4', 'Eyeglasses<=20%', 'Male=0.5' -> an AttributeConstraint (combine two with ',')."""
    lo = hi = exact = None
    name = None
    for part in text.split(","):
        for op in (">=", "<=", "="):
            if op in part:
                attr, _, val = part.partition(op)
                break
        else:
            raise FaceQCError(f"cannot read the constraint {part!r}; use e.g. Smiling>=0.4.")
        attr = attr.strip()
        matches = [a for a in CELEBA_ATTRIBUTES if a.lower() == attr.lower()]
        if not matches:
            raise FaceQCError(f"{attr!r} is not a CelebA attribute.")
        if name is not None and matches[0] != name:
            raise FaceQCError(f"one constraint names two attributes: {text!r}.")
        name = matches[0]
        val = val.strip()
        try:
            v = float(val[:-1]) / 100 if val.endswith("%") else float(val)
        except ValueError:
            raise FaceQCError(f"cannot read the share {val!r} in {text!r}.") from None
        if op == ">=":
            lo = v
        elif op == "<=":
            hi = v
        else:
            exact = v
    return AttributeConstraint(name, min_share=lo, max_share=hi, share=exact)
