"""Export of a project's accepted images in formats trainers read directly.

Layout of TARGET after an export:
    images/                  the accepted files (copies, hard links or symlinks), unique names
    crops/                   optional: 112x112 ArcFace-aligned PNG of each image's primary face (same stem)
    manifest.csv             one row per exported image: decision and reason, every score, attribute, model ids
    manifest.json            the same with every face of every image, plus the export's settings and summary
    list_attr_celeba.txt     CelebA's attribute list format (+1/-1 at p >= celeba_threshold), names as in images/
    fairface_labels.csv      file,race,race4,gender,age (top labels, FairFace's label CSV style; labels as FairFace's
                             predict.py writes them: age '70+', where the dataset's own CSV writes 'more than 70')
    summary.txt              counts, in words
    balance_report.csv/.png  race x gender of the exported set next to all scored images (engine/balance.py)

Safety: source files are only ever read (or linked to). The target must not be, contain or lie inside a source
folder, and must be empty unless ``allow_nonempty`` (then our names must still be free: nothing is overwritten).
Everything is first written into a hidden staging folder inside the target and only moved to the final names when
all of it succeeded, so a read-only or full target, a cancel, or any error leaves nothing half-written under the
final names (a crash can leave the hidden ``.faceqc-export-*`` folder, which the next export ignores).
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
import shutil
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FaceQCError
from .labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from .records import CSV_CELEBA_COLUMNS, CSV_FAIRFACE_COLUMNS, CSV_MODEL_COLUMNS

MODES = ("copy", "hardlink", "symlink")
STAGING_PREFIX = ".faceqc-export-"
OUTPUT_NAMES = ("images", "crops", "manifest.csv", "manifest.json", "list_attr_celeba.txt", "fairface_labels.csv",
                "summary.txt", "balance_report.csv", "balance_report.png")
MANIFEST_BASE_COLUMNS = (
    ["file", "crop", "source", "image_id", "decision", "reason", "override", "score", "score_mode", "threshold",
     "quality_0_100", "n_faces", "face_norms", "width", "height", "error", "face_index",
     "box_x1", "box_y1", "box_x2", "box_y2"]
    + [f"lm{i}_{c}" for i in range(5) for c in ("x", "y")]
    + ["det_score", "magface_norm"]
)
MANIFEST_COLUMNS = MANIFEST_BASE_COLUMNS + CSV_CELEBA_COLUMNS + CSV_FAIRFACE_COLUMNS + CSV_MODEL_COLUMNS


_CELEBA_COL = {a: f"celeba_{a}" for a in CELEBA_ATTRIBUTES}
_FAIRFACE_COL = {h: {lab: f"fairface_{h}_{lab.replace(' ', '_')}" for lab in labels}
                 for h, labels in FAIRFACE_HEADS.items()}


class ExportError(FaceQCError):
    """The export could not be done; nothing was left under the final names."""


class ExportCancelled(ExportError):
    pass


@dataclass
class ExportSummary:
    target: Path
    mode: str
    exported: int = 0
    crops: int = 0
    crop_failures: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    skipped_missing: list[str] = field(default_factory=list)
    skipped_unreadable: list[tuple[str, str]] = field(default_factory=list)  # (source, why): e.g. no permission
    celeba_rows: int = 0
    fairface_rows: int = 0
    threshold: float = float("nan")
    score_mode: str = "primary"
    counts: dict[str, int] = field(default_factory=dict)  # the project's counts at export time
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": str(self.target), "mode": self.mode, "exported": self.exported, "crops": self.crops,
            "crop_failures": [{"source": s, "why": w} for s, w in self.crop_failures],
            "skipped_missing": self.skipped_missing,
            "skipped_unreadable": [{"source": s, "why": w} for s, w in self.skipped_unreadable],
            "celeba_rows": self.celeba_rows,
            "fairface_rows": self.fairface_rows, "threshold": self.threshold, "score_mode": self.score_mode,
            "project_counts": self.counts,
        }

    def text(self) -> str:
        c = self.counts
        lines = [
            f"Exported {self.exported} accepted images ({self.mode}) to {self.target}",
            f"Project: {c.get('total', 0)} images, {c.get('accepted', 0)} accepted, {c.get('rejected', 0)} rejected "
            f"({c.get('overridden', 0)} overridden, {c.get('no_face', 0)} without a face, {c.get('error', 0)} "
            f"errors, {c.get('unscored', 0)} not scored, {c.get('missing', 0)} missing)",
            f"Threshold {self.threshold:g} on the {'largest' if self.score_mode == 'primary' else 'lowest-scoring'} "
            "face",
            f"list_attr_celeba.txt: {self.celeba_rows} images; fairface_labels.csv: {self.fairface_rows} images",
        ]
        if self.crops or self.crop_failures:
            lines.append(f"Aligned crops: {self.crops} ({len(self.crop_failures)} failed)")
        if self.skipped_missing:
            lines.append(f"Skipped {len(self.skipped_missing)} accepted images whose files are missing")
        if self.skipped_unreadable:
            first, why = self.skipped_unreadable[0]
            lines.append(f"Skipped {len(self.skipped_unreadable)} accepted images that cannot be read (e.g. {first}: "
                         f"{why}); listed in summary.txt")
        return "\n".join(lines)


def _real(p) -> str:
    return os.path.normcase(os.path.realpath(p))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_target(target: Path, sources: list[str]) -> None:
    t = _real(target)
    for src in sources:
        s = _real(src)
        if os.path.isdir(src) or not os.path.exists(src):
            if _inside(t, s) or _inside(s, t):
                raise ExportError(f"cannot export into {target}: it is, contains or lies inside the project's source "
                                  f"folder {src}. Choose a folder outside the images.")
        elif t == _real(os.path.dirname(src)):
            raise ExportError(f"cannot export into {target}: it holds the project's source file {src}.")


_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, getattr(errno, "ENOTSUP", errno.EXDEV)}
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_UNSAFE = re.compile(r"[\s\x00-\x1f]+")


def unique_names(paths: list[str]) -> list[str]:
    """Export file names: the source's name with whitespace replaced (CelebA's list is whitespace-separated),
    made unique by stem, case-insensitively and across Unicode normalisation (crops share the stem; macOS and
    Windows file systems treat "A.jpg"/"a.jpg", and "\u00e1" / "a\u0301", as one name)."""
    used: set[str] = set()
    out = []

    def key(s: str) -> str:
        return unicodedata.normalize("NFC", s).casefold()

    for p in paths:
        name = _UNSAFE.sub("_", os.path.basename(p)) or "image"
        stem, ext = os.path.splitext(name)
        stem = stem or "image"
        cand, n = stem, 1
        while key(cand) in used:
            n += 1
            cand = f"{stem}_{n}"
        used.add(key(cand))
        out.append(cand + ext)
    return out


def _clean(x):
    """JSON-safe: non-finite floats become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def _fmt(x) -> Any:
    if x is None:
        return ""
    if isinstance(x, float):
        return "" if not math.isfinite(x) else round(x, 6)
    return x


def _place(src: str, dst: str, mode: str) -> None:
    if mode == "copy":
        shutil.copyfile(src, dst)
        try:
            shutil.copystat(src, dst)
        except OSError:
            pass
    elif mode == "hardlink":
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno in _NO_LINK:
                raise ExportError(f"cannot hard-link {src} into the export folder ({e.strerror}): hard links need the "
                                  "export folder on the same drive as the images. Use copy or symlink.") from e
            raise
    else:
        os.symlink(os.path.abspath(src), dst)


def _crop(src: str, face: dict, dst: str) -> None:
    from PIL import Image

    from .align import align_arcface  # lazily: it imports OpenCV
    from .imageio import load_rgb

    rgb = load_rgb(src)
    crop = align_arcface(rgb, np.asarray(face["landmarks"], np.float32))
    Image.fromarray(np.ascontiguousarray(crop)).save(dst, format="PNG")


def manifest_row(d: dict, file: str, crop: str, threshold: float) -> dict[str, Any]:
    row: dict[str, Any] = {c: "" for c in MANIFEST_COLUMNS}
    faces = d["faces"]
    primary = next((f for f in faces if f["primary"]), None)
    row.update(file=file, crop=crop, source=d["path"], image_id=d["id"], decision=d["decision"],
               reason=d["reason_key"], override=d["override"] or "", score=_fmt(d["score"]),
               score_mode=d["score_mode"], threshold=threshold, n_faces=d["n_faces"],
               face_norms=";".join("" if f["magface_norm"] is None else f"{f['magface_norm']:.4f}" for f in faces),
               width=_fmt(d["width"]), height=_fmt(d["height"]), error=d["error"] or "")
    if d["score"] is not None:
        from .quality import quality_0_100

        row["quality_0_100"] = _fmt(quality_0_100(d["score"]))
    if primary is not None:
        row.update(face_index=primary["face_index"], det_score=_fmt(primary["det_score"]),
                   magface_norm=_fmt(primary["magface_norm"]))
        for name, v in zip(("box_x1", "box_y1", "box_x2", "box_y2"), primary["box"] or []):
            row[name] = _fmt(v)
        for i, (x, y) in enumerate(primary["landmarks"] or []):
            row[f"lm{i}_x"], row[f"lm{i}_y"] = _fmt(x), _fmt(y)
        for name, p in (primary["celeba"] or {}).items():
            row[_CELEBA_COL[name]] = "" if p is None else p
        ff = primary["fairface"] or {}
        for head in FAIRFACE_HEADS:
            probs = ff.get(head)
            if probs:
                row[f"fairface_{head}_top"] = ff.get(f"{head}_top") or ""
                cols = _FAIRFACE_COL[head]
                for label, p in probs.items():
                    row[cols[label]] = "" if p is None else p
    for key, info in (d["models"] or {}).items():
        if f"model_{key}_file" in row and isinstance(info, dict):
            row[f"model_{key}_file"] = info.get("file") or ""
            row[f"model_{key}_sha256"] = info.get("sha256") or ""
    return row


def _celeba_line(name: str, probs: dict | None, t: float) -> str | None:
    if not probs or any(probs.get(a) is None for a in CELEBA_ATTRIBUTES):
        return None
    return name + " " + " ".join(f"{1 if probs[a] >= t else -1:2d}" for a in CELEBA_ATTRIBUTES)


class _Writers:
    """The manifest files, written row by row into the staging folder (100k images never sit in memory)."""

    def __init__(self, staging: Path, header: dict, celeba_threshold: float):
        self.t = celeba_threshold
        self.csv_f = open(staging / "manifest.csv", "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.csv_f)
        self.csv.writerow(MANIFEST_COLUMNS)
        self.json_f = open(staging / "manifest.json", "w", encoding="utf-8")
        head = json.dumps(_clean(header), ensure_ascii=False)
        self.json_f.write(head[:-1] + ',\n "images": [\n')
        self.first = True
        self.celeba_body = open(staging / ".celeba_body", "w", encoding="utf-8")
        self.ff_f = open(staging / "fairface_labels.csv", "w", newline="", encoding="utf-8")
        self.ff = csv.writer(self.ff_f)
        self.ff.writerow(["file", "race", "race4", "gender", "age"])
        self.celeba_rows = self.ff_rows = 0

    def add(self, d: dict, file: str, crop: str, threshold: float) -> None:
        self.csv.writerow(list(manifest_row(d, file, crop, threshold).values()))  # dict in column order
        entry = {"file": file, "crop": crop or None, **{k: d[k] for k in (
            "path", "id", "decision", "reason", "reason_key", "override", "score", "score_mode", "n_faces", "width",
            "height", "error", "hash", "faces", "models")}}
        entry["source"] = entry.pop("path")
        entry["image_id"] = entry.pop("id")
        try:
            text = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        except ValueError:  # a non-finite number somewhere: null it
            text = json.dumps(_clean(entry), ensure_ascii=False, allow_nan=False)
        self.json_f.write(("  " if self.first else ",\n  ") + text)
        self.first = False
        primary = next((f for f in d["faces"] if f["primary"]), None)
        if primary is None:
            return
        line = _celeba_line(os.path.basename(file), primary["celeba"], self.t)
        if line is not None:
            self.celeba_body.write(line + "\n")
            self.celeba_rows += 1
        ff = primary["fairface"]
        if ff and ff.get("race7_top"):
            self.ff.writerow([file, ff.get("race7_top") or "", ff.get("race4_top") or "", ff.get("gender_top") or "",
                              ff.get("age_top") or ""])
            self.ff_rows += 1

    def finish(self, staging: Path, summary: ExportSummary) -> None:
        self.json_f.write('\n ],\n "summary": ' + json.dumps(_clean(summary.as_dict()), ensure_ascii=False) + "\n}\n")
        for f in (self.csv_f, self.json_f, self.celeba_body, self.ff_f):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        with open(staging / "list_attr_celeba.txt", "w", encoding="utf-8") as out, \
                open(staging / ".celeba_body", encoding="utf-8") as body:
            out.write(f"{self.celeba_rows}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n")
            shutil.copyfileobj(body, out)
            out.flush()
            os.fsync(out.fileno())
        os.unlink(staging / ".celeba_body")
        with open(staging / "summary.txt", "w", encoding="utf-8") as f:
            f.write(summary.text() + "\n")
            for src, why in summary.skipped_unreadable:
                f.write(f"not exported (cannot be read: {why}): {src}\n")

    def close(self) -> None:
        for f in (self.csv_f, self.json_f, self.celeba_body, self.ff_f):
            try:
                f.close()
            except OSError:
                pass


def _prepare_target(target: Path, allow_nonempty: bool) -> bool:
    """Validate (and create) the target; returns whether we created it."""
    if os.path.lexists(target) and not target.is_dir():
        raise ExportError(f"cannot export into {target}: it is a file, not a folder.")
    if target.is_dir():
        try:
            present = [n for n in os.listdir(target) if not n.startswith(STAGING_PREFIX)]
        except OSError as e:
            raise ExportError(f"cannot read the export folder {target}: {e.strerror or e}.") from e
        if present and not allow_nonempty:
            raise ExportError(f"the export folder {target} is not empty. Choose an empty folder, or allow a "
                              "non-empty one (existing files are never overwritten).")
        clash = sorted(set(present) & set(OUTPUT_NAMES))
        if clash:
            raise ExportError(f"the export folder {target} already has {', '.join(clash)}; choose another folder "
                              "(an export never overwrites files).")
        return False
    try:
        target.mkdir(parents=True)
    except OSError as e:
        raise ExportError(f"cannot create the export folder {target}: {e.strerror or e}.") from e
    return True


def _os_message(e: OSError, target: Path) -> str:
    names = [str(f) for f in (e.filename, getattr(e, "filename2", None)) if f]
    if names and not any(_inside(os.path.abspath(n), str(target)) for n in names):  # reading a source failed
        return f"export to {target} failed: cannot read {names[0]} ({e.strerror or e}). Nothing was written."
    if e.errno in _NO_SPACE:
        return f"export to {target} failed: not enough space ({e.strerror}). Nothing was written."
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"export to {target} failed: the folder is not writable ({e.strerror}). Nothing was written."
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return f"export to {target} failed: {e.strerror or e}{where}. Nothing was written."


def _write_balance_report(staging: Path, snap, exported_rows: np.ndarray) -> None:
    """balance_report.csv/.png: race x gender of the exported images next to all scored images (docs/BALANCE.md)."""
    from .balance import write_balance_report
    from .balance_stats import snapshot_stats

    exported = np.zeros(len(snap.ids), bool)
    exported[np.asarray(exported_rows, dtype=np.int64)] = True
    write_balance_report(staging, snapshot_stats(snap, snap.threshold, by=("race7", "gender"), accepted=exported))


def export_project(project, target, mode: str = "copy", crops: bool = False, allow_nonempty: bool = False,
                   celeba_threshold: float = 0.5, progress=None, stop_event=None) -> ExportSummary:
    """Export the accepted images of ``project`` into ``target``; raises ExportError (nothing left) on failure.
    ``progress(done, total)`` is called as files are placed; setting ``stop_event`` cancels."""
    t0 = time.perf_counter()
    if mode not in MODES:
        raise ExportError(f"export mode must be one of {', '.join(MODES)}, not {mode!r}.")
    try:
        celeba_threshold = float(celeba_threshold)
    except (TypeError, ValueError):
        raise ExportError(f"the CelebA threshold must be a number, not {celeba_threshold!r}.") from None
    if not 0.0 <= celeba_threshold <= 1.0:
        raise ExportError("the CelebA threshold must be between 0 and 1.")
    target = Path(os.path.abspath(os.path.expanduser(str(target))))
    check_target(target, project.folders())
    snap = project.snapshot()
    accepted, _ = snap.decide(snap.threshold)
    summary = ExportSummary(target=target, mode=mode, threshold=snap.threshold, score_mode=snap.score_mode)
    summary.counts = {"total": len(snap.ids), "accepted": int(accepted.sum())}
    from .decisions import status_masks

    summary.counts.update({k: int(m.sum()) for k, m in status_masks(snap, snap.threshold).items()})
    rows = np.flatnonzero(accepted)
    present = rows[~snap.missing[rows]]
    exists = [os.path.lexists(snap.paths[r]) for r in present]  # a file gone since the last scan counts as missing
    summary.skipped_missing = [snap.paths[r] for r in rows[snap.missing[rows]]] + \
        [snap.paths[r] for r, ok in zip(present, exists) if not ok]
    rows = present[np.asarray(exists, bool)] if len(present) else present
    ids = snap.ids[rows].tolist()
    names = unique_names([snap.paths[r] for r in rows])

    created = _prepare_target(target, allow_nonempty)
    staging = target / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    writers = None
    moved: list[str] = []
    try:
        try:
            staging.mkdir()
            (staging / "images").mkdir()
            if crops:
                (staging / "crops").mkdir()
            header = {"format": "faceqc-export", "version": 1, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "project": str(project.path), "mode": mode, "crops": bool(crops),
                      "threshold": snap.threshold, "score_mode": snap.score_mode,
                      "celeba_threshold": celeba_threshold, "celeba_attributes": list(CELEBA_ATTRIBUTES),
                      "fairface_labels": {h: list(v) for h, v in FAIRFACE_HEADS.items()}}
            writers = _Writers(staging, header, celeba_threshold)
            for n, (d, name) in enumerate(zip(project.details(ids), names)):
                if stop_event is not None and stop_event.is_set():
                    raise ExportCancelled("export cancelled; nothing was written.")
                try:
                    if mode != "symlink":  # a source that cannot be read is that file's problem, not the export's
                        with open(d["path"], "rb"):
                            pass
                except FileNotFoundError:
                    pass  # handled below, with the other ways a file can vanish
                except OSError as e:
                    summary.skipped_unreadable.append((d["path"], e.strerror or str(e)))
                    continue
                try:
                    _place(d["path"], str(staging / "images" / name), mode)
                except FileNotFoundError:
                    if os.path.lexists(d["path"]):
                        raise
                    summary.skipped_missing.append(d["path"])  # removed since the export started
                    continue
                crop_name = ""
                primary = next((f for f in d["faces"] if f["primary"]), None)
                if crops and primary is not None and primary["landmarks"] is not None:
                    crop_name = f"crops/{os.path.splitext(name)[0]}.png"
                    try:
                        _crop(d["path"], primary, str(staging / crop_name))
                        summary.crops += 1
                    except OSError:
                        raise  # writing the crop failed: the target's problem, fail the export
                    except Exception as e:  # an undecodable image: export it, note why it has no crop
                        summary.crop_failures.append((d["path"], str(e) or type(e).__name__))
                        crop_name = ""
                writers.add(d, f"images/{name}", crop_name, snap.threshold)
                summary.exported += 1
                if progress is not None:
                    progress(n + 1, len(ids))
            summary.celeba_rows, summary.fairface_rows = writers.celeba_rows, writers.ff_rows
            summary.seconds = time.perf_counter() - t0
            writers.finish(staging, summary)
            writers = None
            _write_balance_report(staging, snap, rows)
            for name in OUTPUT_NAMES:
                if (staging / name).exists():
                    if os.path.lexists(target / name):
                        raise ExportError(f"{target / name} appeared during the export; nothing was written.")
                    os.rename(staging / name, target / name)
                    moved.append(name)
        except OSError as e:
            raise ExportError(_os_message(e, target)) from e
    except BaseException:
        if writers is not None:
            writers.close()
        for name in reversed(moved):  # put back what already reached its final name
            try:
                os.rename(target / name, staging / name)
            except OSError:
                pass
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            try:
                os.rmdir(target)
            except OSError:
                pass
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return summary
