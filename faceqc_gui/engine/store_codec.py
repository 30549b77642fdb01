"""Records <-> project rows: faces as compact float32 blobs (so a snapshot can np.frombuffer a whole column)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .decisions import OVERRIDE_NAMES, REASON_KEY, REASON_TEXT, decide_one
from .labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from .quality import quality_0_100
from .records import FaceResult, ImageResult

HEAD_SIZES = {h: len(labels) for h, labels in FAIRFACE_HEADS.items()}
N_CELEBA = len(CELEBA_ATTRIBUTES)
EMBEDDING_DTYPE = "float16"  # halves the file; the norm (the score) is stored separately at full precision
NAN_BLOBS = {n: np.full(n, np.nan, np.float32).tobytes() for n in {N_CELEBA, *HEAD_SIZES.values()}}


def _f32(values, n: int) -> bytes:
    a = np.asarray(values, np.float32).reshape(-1)
    if a.size != n:
        raise ValueError(f"expected {n} values, got {a.size}")
    return a.tobytes()


def _finite_or_none(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def celeba_blob(celeba: dict[str, float] | None) -> bytes | None:
    if not celeba:
        return None
    return _f32([celeba.get(a, float("nan")) for a in CELEBA_ATTRIBUTES], N_CELEBA)


def fairface_blobs(ff: dict[str, Any] | None) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {h: None for h in FAIRFACE_HEADS}
    if not ff:
        return out
    for head, labels in FAIRFACE_HEADS.items():
        probs = ff.get(head)
        if probs:
            out[head] = _f32([probs.get(lab, float("nan")) for lab in labels], len(labels))
    return out


def model_ids_of(result: ImageResult) -> dict[str, str]:
    return {k: str((v or {}).get("sha256") or "") for k, v in (result.models or {}).items()}


def canonical_ids(ids: dict[str, str]) -> str:
    return json.dumps(ids, sort_keys=True, separators=(",", ":"))


def primary_index(faces: list[FaceResult]) -> int | None:
    """Position of the largest face (first on ties), as ImageResult.primary_face chooses it."""
    if not faces:
        return None
    return max(range(len(faces)), key=lambda i: faces[i].detection.area)


def face_row(face: FaceResult) -> tuple:
    d = face.detection
    ff = fairface_blobs(face.fairface)
    return (int(face.face_index), _f32(d.box, 4), _f32(d.landmarks, 10), _finite_or_none(d.score),
            _finite_or_none(face.magface_norm), celeba_blob(face.celeba), ff["race7"], ff["race4"], ff["gender"],
            ff["age"])


def embedding_blob(face: FaceResult) -> bytes | None:
    if face.embedding is None:
        return None
    return np.asarray(face.embedding, np.float32).reshape(-1).astype(EMBEDDING_DTYPE).tobytes()


def image_scores(faces: list[FaceResult]) -> tuple[float | None, float | None, int | None]:
    """(primary face's norm, lowest norm over the faces, index of the primary face)."""
    p = primary_index(faces)
    if p is None:
        return None, None, None
    norms = [n for n in (_finite_or_none(f.magface_norm) for f in faces) if n is not None]
    return _finite_or_none(faces[p].magface_norm), (min(norms) if norms else None), p


def blob_array(blob, n: int) -> np.ndarray | None:
    if blob is None or len(blob) != 4 * n:
        return None
    return np.frombuffer(blob, np.float32)


def stack_blobs(col, n: int) -> np.ndarray:
    """(N, n) float32 from a column of blobs (None -> NaN row), in one join + frombuffer."""
    nan = NAN_BLOBS.get(n) or np.full(n, np.nan, np.float32).tobytes()
    size = 4 * n
    joined = b"".join(b if (b is not None and len(b) == size) else nan for b in col)
    return np.frombuffer(joined, np.float32).reshape(-1, n).copy()


def _floats(blob, n: int, decimals: int | None = None) -> list[float] | None:
    if blob is None or len(blob) != 4 * n:
        return None
    a = np.frombuffer(blob, np.float32).astype(np.float64)
    # Probabilities are float32 (about 7 digits): 6 decimals keep all of it and print short (manifests).
    return (a if decimals is None else a.round(decimals)).tolist()


def _probs_dict(values: list[float] | None, labels) -> dict[str, float | None] | None:
    """label -> p (None where not stored); None when nothing is stored."""
    if values is None:
        return None
    out = {lab: (v if v == v else None) for lab, v in zip(labels, values)}  # v != v: NaN
    return out if any(v is not None for v in out.values()) else None


def _top(probs: dict[str, float | None]) -> str:
    return max(probs, key=lambda k: -1.0 if probs[k] is None else probs[k])


def face_dict(row: dict[str, Any], primary_id: int | None) -> dict[str, Any]:
    """The public form of one stored face (Project.image_detail, manifest.json)."""
    box = _floats(row["box"], 4)
    lms = _floats(row["landmarks"], 10)
    ff: dict[str, Any] = {}
    for head, labels in FAIRFACE_HEADS.items():
        probs = _probs_dict(_floats(row[head], len(labels), 6), labels)
        ff[head] = probs
        ff[f"{head}_top"] = _top(probs) if probs else None
    norm = row["magface_norm"]
    return {
        "face_index": row["face_index"],
        "primary": row["id"] == primary_id,
        "box": box,
        "landmarks": None if lms is None else [lms[i:i + 2] for i in range(0, 10, 2)],
        "det_score": row["det_score"],
        "magface_norm": norm,
        "quality_0_100": quality_0_100(norm),
        "celeba": _probs_dict(_floats(row["celeba"], N_CELEBA, 6), CELEBA_ATTRIBUTES),
        "fairface": ff if any(ff[h] for h in FAIRFACE_HEADS) else None,
    }


def image_dict(r, faces, threshold: float, mode: str) -> dict[str, Any]:
    """The public form of one stored image (Project.image_detail): ``r`` an images row with its override."""
    score = r["score_primary"] if mode == "primary" else r["score_lowest"]
    ov = r["override"] or 0
    accepted, reason = decide_one(score, r["n_faces"], r["error"] is not None, ov, threshold)
    try:
        models = json.loads(r["models"]) if r["models"] else {}
    except ValueError:
        models = {}
    return {
        "id": r["id"], "path": r["path"], "size": r["size"], "mtime_ns": r["mtime_ns"],
        "mtime": None if r["mtime_ns"] is None else r["mtime_ns"] / 1e9, "hash": r["hash"],
        "width": r["width"], "height": r["height"], "error": r["error"], "missing": bool(r["missing"]),
        "n_faces": r["n_faces"], "scored": r["n_faces"] >= 0, "score": score, "score_mode": mode,
        "override": OVERRIDE_NAMES[ov], "decision": "accepted" if accepted else "rejected",
        "reason": REASON_TEXT[reason], "reason_code": reason, "reason_key": REASON_KEY[reason],
        "faces": [face_dict(f, r["primary_face"]) for f in faces], "models": models,
    }
