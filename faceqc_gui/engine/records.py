"""What one scoring run produces per image and per face, and its flat (JSONL/CSV) form.

The flat form is a contract: later tools (the store, the GUI, users' scripts) read it. One row per face, plus one row
per image that has no face or failed to load. Column names of the CSV are stable: see ``flatten_row``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from .quality import DEFAULT_THRESHOLD, quality_0_100


@dataclass
class Detection:
    """One face from the detector, in original-image pixel coordinates."""

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 (not clipped to the image)
    landmarks: np.ndarray  # (5, 2) float32: image-left eye, image-right eye, nose, mouth left, mouth right
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


@dataclass
class FaceResult:
    face_index: int
    detection: Detection
    magface_norm: float | None = None
    embedding: np.ndarray | None = None  # (512,) float32, raw (not L2-normalised) MagFace output
    celeba: dict[str, float] | None = None  # CelebA attribute -> probability, in CELEBA_ATTRIBUTES order
    # {"race7": {label: p}, "race4": {label: p} | None, "gender": {...}, "age": {...},
    #  "race7_top": str, "race4_top": str | None, "gender_top": str, "age_top": str}
    fairface: dict[str, Any] | None = None

    @property
    def quality_0_100(self) -> int | None:
        return quality_0_100(self.magface_norm)


@dataclass
class ImageResult:
    path: str
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    # model key -> {"file": file name, "sha256": hex or None, "official": true | false | null (unverified: no hash to
    # compare with), "hash_source": "official" | "recorded" | null}; which files produced the numbers
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def primary_face(self) -> FaceResult | None:
        """The largest face: it decides the image by default."""
        if not self.faces:
            return None
        return max(self.faces, key=lambda f: f.detection.area)


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def face_row(image: ImageResult, face: FaceResult | None, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """The JSONL object for one face (or for an image without a face / with an error when ``face`` is None)."""
    row: dict[str, Any] = {
        "path": image.path,
        "face_index": None,
        "box": None,
        "landmarks": None,
        "det_score": None,
        "magface_norm": None,
        "quality_0_100": None,
        "accepted": False,
        "error": image.error,
    }
    if face is not None:
        d = face.detection
        row.update(
            face_index=face.face_index,
            box=[_round(v, 2) for v in d.box.tolist()],
            landmarks=[[_round(x, 2), _round(y, 2)] for x, y in d.landmarks.tolist()],
            det_score=_round(d.score),
            magface_norm=_round(face.magface_norm),
            quality_0_100=face.quality_0_100,
            accepted=bool(face.magface_norm is not None and face.magface_norm >= threshold),
        )
        if face.celeba is not None:
            row["celeba"] = {k: _round(v) for k, v in face.celeba.items()}
        if face.fairface is not None:
            row["fairface"] = face.fairface
    row["width"] = image.width
    row["height"] = image.height
    row["models"] = image.models
    return row


def image_rows(image: ImageResult, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    if image.error is not None or not image.faces:
        return [face_row(image, None, threshold)]
    return [face_row(image, f, threshold) for f in image.faces]


CSV_BASE_COLUMNS = (
    ["path", "face_index", "box_x1", "box_y1", "box_x2", "box_y2"]
    + [f"lm{i}_{c}" for i in range(5) for c in ("x", "y")]
    + ["det_score", "magface_norm", "quality_0_100", "accepted", "error", "width", "height"]
)
CSV_CELEBA_COLUMNS = [f"celeba_{a}" for a in CELEBA_ATTRIBUTES]
CSV_FAIRFACE_COLUMNS = [
    col
    for head, labels in FAIRFACE_HEADS.items()
    for col in ([f"fairface_{head}_top"] + [f"fairface_{head}_{label.replace(' ', '_')}" for label in labels])
]
CSV_MODEL_COLUMNS = [f"model_{k}_{c}" for k in ("magface", "celeba", "fairface", "fairface4", "detector") for c in ("file", "sha256", "official")]
CSV_COLUMNS = CSV_BASE_COLUMNS + CSV_CELEBA_COLUMNS + CSV_FAIRFACE_COLUMNS + CSV_MODEL_COLUMNS


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """JSONL row -> CSV row with the stable ``CSV_COLUMNS`` (missing values are empty)."""
    flat: dict[str, Any] = {c: "" for c in CSV_COLUMNS}
    for k in ("path", "face_index", "det_score", "magface_norm", "quality_0_100", "accepted", "error", "width", "height"):
        v = row.get(k)
        flat[k] = "" if v is None else v
    if row.get("box"):
        for name, v in zip(("box_x1", "box_y1", "box_x2", "box_y2"), row["box"]):
            flat[name] = v
    if row.get("landmarks"):
        for i, (x, y) in enumerate(row["landmarks"]):
            flat[f"lm{i}_x"], flat[f"lm{i}_y"] = x, y
    for name, p in (row.get("celeba") or {}).items():
        flat[f"celeba_{name}"] = p
    ff = row.get("fairface") or {}
    for head in FAIRFACE_HEADS:
        probs = ff.get(head)
        if probs:
            flat[f"fairface_{head}_top"] = ff.get(f"{head}_top", "")
            for label, p in probs.items():
                flat[f"fairface_{head}_{label.replace(' ', '_')}"] = p
    for key, info in (row.get("models") or {}).items():
        if f"model_{key}_file" in flat:
            flat[f"model_{key}_file"] = info.get("file") or ""
            flat[f"model_{key}_sha256"] = info.get("sha256") or ""
            off = info.get("official")
            flat[f"model_{key}_official"] = "" if off is None else str(bool(off)).lower()  # "" = unverified
    return flat
