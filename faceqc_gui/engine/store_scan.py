"""Incremental rescoring: which files of a project's folders need scoring, and what became of the others.

Rules (issue 4 §2), applied to every file the folder walk yields:
- known path, same (size, mtime): content unchanged. Different: the content hash decides (a touched but identical
  file is unchanged; its new fingerprint is recorded).
- unchanged content is rescored only when it was never scored or was scored by other model files (a requested
  model key whose sha256 differs from the one stored for the image).
- changed content is rescored; its stored fingerprint is only updated when the new results are stored, so a run
  interrupted in between rescoring it next time too.
- an unknown path whose (size, content hash) equals a vanished image's is that image renamed or moved: the record,
  with its results and override, moves to the new path.
- known paths not found any more are marked missing, never deleted (their decisions stay). Folders that no longer
  exist (an unplugged drive) mark their images missing instead of failing the scan.
Hashes of new files are computed only when a vanished image has the same size, so a first scan reads no file twice;
``Project.store_results`` hashes them when their results arrive (the file is then in the page cache).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .fsnames import escaped, is_utf8
from .scan import FileEntry, content_hash, file_fingerprint, iter_image_files


@dataclass
class ScanPlan:
    to_score: list[str]
    unchanged: int = 0
    renamed: int = 0
    missing: int = 0  # images marked missing after this scan (all of them, not only new ones)
    errors: list[FileEntry] = field(default_factory=list)  # walk errors (also stored as error images)
    # Additions: the breakdown of to_score and folders that were not found.
    new: int = 0
    changed: int = 0
    models_changed: int = 0
    missing_folders: list[str] = field(default_factory=list)
    # (size, mtime_ns) of each file to score as the walk saw it: results are only recorded as describing the file's
    # current content if it has not changed since (a file still being copied is scored again next time).
    fingerprints: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.to_score)} to score ({self.new} new, {self.changed} changed, "
                 f"{self.models_changed} scored by other model files)", f"{self.unchanged} unchanged"]
        if self.renamed:
            parts.append(f"{self.renamed} renamed or moved")
        if self.missing:
            parts.append(f"{self.missing} missing")
        if self.errors:
            parts.append(f"{len(self.errors)} unreadable")
        return ", ".join(parts)


@dataclass
class _Known:
    id: int
    size: int | None
    mtime_ns: int | None
    hash: str | None
    n_faces: int
    model_ids: str | None
    missing: bool
    walk_error: bool
    overridden: bool



def _models_ok(wanted: dict[str, str]) -> Callable[[str | None], bool]:
    cache: dict[str | None, bool] = {}

    def ok(stored: str | None) -> bool:
        if stored not in cache:
            try:
                ids = json.loads(stored) if stored else {}
            except ValueError:
                ids = {}
            cache[stored] = all(ids.get(k) == v for k, v in wanted.items())
        return cache[stored]
    return ok


def load_known(con) -> dict[str, _Known]:
    """What the project knows about its files (one query; the walk then runs without touching the database)."""
    known: dict[str, _Known] = {}
    sets = dict(con.execute("SELECT id, model_ids FROM model_sets").fetchall())
    for row in con.execute("SELECT i.id, i.path, i.size, i.mtime_ns, i.hash, i.n_faces, i.model_set, i.missing, "
                           "i.walk_error, o.value IS NOT NULL FROM images i "
                           "LEFT JOIN overrides o ON o.image_id = i.id"):
        row = row[:6] + (sets.get(row[6]),) + row[7:]
        known[row[1]] = _Known(row[0], row[2], row[3], row[4], row[5], row[6], bool(row[7]), bool(row[8]),
                               bool(row[9]))
    return known


def plan(known: dict[str, _Known], folders: list[str], model_ids: dict[str, str],
         progress=None) -> tuple[ScanPlan, list[tuple[str, list]]]:
    """Compute the plan and the writes that record it (executed by the caller in one transaction)."""
    result = ScanPlan(to_score=[])
    present = [f for f in folders if os.path.lexists(f)]
    result.missing_folders = [f for f in folders if f not in present]
    models_ok = _models_ok(model_ids)
    ops: dict[str, list] = {k: [] for k in ("reappear", "walk_error", "touch", "insert", "rename", "missing",
                                             "delete", "clear_walk_error", "park", "displace")}
    to_score: set[str] = set()
    order: list[str] = []
    seen: set[str] = set()
    new_files: list[tuple[str, tuple[int, int] | None]] = []
    changed: list[tuple[str, tuple[int, int], str, _Known]] = []  # known path, new content (fingerprint, hash)
    fingerprints: dict[str, tuple[int, int]] = {}

    def consider_unchanged(path: str, k: _Known) -> None:
        if k.n_faces < 0:
            to_score.add(path)
            result.new += 1
        elif not models_ok(k.model_ids):
            to_score.add(path)
            result.models_changed += 1
        else:
            result.unchanged += 1

    entries = iter_image_files(present) if present else iter(())
    for n, entry in enumerate(entries):
        if progress is not None and n % 256 == 0:
            progress(n)
        path = entry.path
        if not is_utf8(path):
            # SQLite text is UTF-8: a name with undecodable bytes (legal on Linux, common from old zip archives)
            # cannot be stored as is. It becomes an error row under an escaped name, and the scan goes on.
            path = escaped(path)
            entry = type(entry)(path, "the file name is not valid UTF-8: rename the file to include it")
        seen.add(path)
        order.append(path)
        k = known.get(path)
        if entry.error is not None:
            result.errors.append(entry)
            ops["walk_error"].append((path, entry.error))
            continue
        if k is not None and k.missing:
            ops["reappear"].append((k.id,))
        try:
            fp = file_fingerprint(path)
        except OSError:
            fp = None
        if fp is not None:
            fingerprints[path] = fp
        if k is None:
            new_files.append((path, fp))
            continue
        if k.walk_error:
            ops["clear_walk_error"].append((k.id,))
            to_score.add(path)
            result.changed += 1
            continue
        if fp is None:
            to_score.add(path)  # the pipeline records why it cannot be read
            result.changed += 1
            continue
        if (k.size, k.mtime_ns) == fp:
            consider_unchanged(path, k)
            continue
        try:
            h = content_hash(path)
        except OSError:
            h = None
        if h is not None and h == k.hash:
            ops["touch"].append((fp[0], fp[1], k.id))
            consider_unchanged(path, k)
        elif h is not None:
            changed.append((path, fp, h, k))  # edited in place, or another known picture moved here: see below
        else:
            to_score.add(path)
            result.changed += 1

    vanished = [k for p, k in known.items() if p not in seen]
    candidates: dict[tuple[int, str], list[int]] = {}
    sizes: set[int] = set()
    # Records follow their pictures. A known path with other content may hold another record's picture (two files
    # swapped, a folder renumbered after a delete): like vanished records, the records of changed paths are offered
    # to every path whose content matches theirs, so each decision stays with its picture, never with a file name.
    for path, fp, h, k in changed:
        if k.hash is not None and k.size is not None:
            candidates.setdefault((k.size, k.hash), []).append(k.id)
            sizes.add(k.size)
    for k in sorted(vanished, key=lambda k: k.id):
        if k.walk_error:
            if k.overridden:
                ops["missing"].append((k.id,))
            else:
                ops["delete"].append((k.id,))
            continue
        if k.hash is not None and k.size is not None:
            candidates.setdefault((k.size, k.hash), []).append(k.id)
            sizes.add(k.size)
    by_id = {k.id: k for k in vanished}
    by_id.update({k.id: k for _, _, _, k in changed})
    moved: set[int] = set()
    claims: dict[str, int] = {}  # changed path -> the record whose picture it now holds
    for path, fp, h, k in changed:
        ids = [i for i in candidates.get((fp[0], h), []) if i != k.id]
        if ids:
            image_id = ids[0]
            candidates[(fp[0], h)].remove(image_id)
            claims[path] = image_id
            moved.add(image_id)
    for path, fp in new_files:
        h = None
        if fp is not None and fp[0] in sizes:
            try:
                h = content_hash(path)
            except OSError:
                h = None
        ids = candidates.get((fp[0], h)) if (fp is not None and h is not None) else None
        if ids:
            image_id = ids.pop(0)
            moved.add(image_id)
            ops["rename"].append((path, fp[0], fp[1], image_id))
            result.renamed += 1
            consider_unchanged(path, by_id[image_id])
        else:
            ops["insert"].append((path, fp[0] if fp else None, fp[1] if fp else None, h))
            to_score.add(path)
            result.new += 1
    for k in vanished:
        if not k.walk_error and not k.missing and k.id not in moved:
            ops["missing"].append((k.id,))
    for path, fp, h, k in changed:
        claimed = claims.get(path)
        if claimed is not None:  # this path now holds another record's picture: that record comes here
            ops["park"].append((f"\0moving\0{claimed}", claimed))
            ops["rename"].append((path, fp[0], fp[1], claimed))
            result.renamed += 1
            consider_unchanged(path, by_id[claimed])
        elif k.id in moved:  # its own record followed its picture elsewhere: this content is new to the project
            ops["insert"].append((path, fp[0], fp[1], h))
            to_score.add(path)
            result.new += 1
        else:  # edited in place: same record (and decision), rescored
            to_score.add(path)
            result.changed += 1
        if k.id not in moved and claimed is not None:
            # Its picture is nowhere any more (replaced by another one): a decision made on it is kept, as a
            # missing image under a name that says what happened; without one, its results only describe a
            # picture that is gone.
            ops["park"].append((f"\0moving\0{k.id}", k.id))
            if k.overridden:
                ops["displace"].append((f"{path} (replaced by another picture; image {k.id})", k.id))
            else:
                ops["delete"].append((k.id,))

    result.to_score = [p for p in order if p in to_score]
    result.fingerprints = {p: fingerprints[p] for p in result.to_score if p in fingerprints}
    sql = {
        "park": "UPDATE images SET path = ? WHERE id = ?",
        "displace": "UPDATE images SET path = ?, missing = 1 WHERE id = ?",
        "delete": "DELETE FROM images WHERE id = ?",
        "missing": "UPDATE images SET missing = 1 WHERE id = ?",
        "rename": "UPDATE images SET path = ?, size = ?, mtime_ns = ?, missing = 0 WHERE id = ?",
        "reappear": "UPDATE images SET missing = 0 WHERE id = ?",
        "touch": "UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?",
        "clear_walk_error": "UPDATE images SET walk_error = 0, error = NULL, n_faces = -1 WHERE id = ?",
        "insert": "INSERT OR IGNORE INTO images(path, size, mtime_ns, hash) VALUES (?, ?, ?, ?)",
        "walk_error": "INSERT INTO images(path, error, walk_error, n_faces, missing) VALUES (?, ?, 1, 0, 0) "
                      "ON CONFLICT(path) DO UPDATE SET error = excluded.error, walk_error = 1, n_faces = 0, "
                      "missing = 0, score_primary = NULL, score_lowest = NULL, primary_face = NULL",
    }
    # Order matters: rows whose path goes to another row are parked on a unique placeholder first, vanished rows
    # give up their paths, and only then do renames and inserts take them.
    ops["park"] = list(dict.fromkeys(ops["park"]))
    writes = [(sql[k], ops[k]) for k in ("park", "displace", "delete", "missing", "rename", "reappear", "touch",
                                          "clear_walk_error", "insert", "walk_error") if ops[k]]
    return result, writes
