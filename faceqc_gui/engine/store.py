"""Curation projects: one SQLite file (WAL) holding images, faces, overrides, settings and undo history.

Users' decisions are the valuable part, results are a cache. Every user action is one transaction (and one undo
step); results arrive in small transactions as the pipeline produces them, so a killed process loses at most the
batch in flight and never a committed override. Decisions are derived, never stored (see ``decisions.py``).
Locking: one writer process per project, any number of readers (see ``store_schema.py``).

The API contract (the CLI, the GUI and the balance code are written against it; names are stable):

    class ProjectError(FaceQCError)            # corrupt/foreign file, newer schema, unreadable: clear message
    class ProjectLockedError(ProjectError)     # another process holds the project for writing

    class Project:
        @classmethod create(path) -> Project   # new SQLite file (WAL); refuses to overwrite an existing file
        @classmethod open(path, create=False, readonly=False) -> Project
        path: Path ; close() ; __enter__/__exit__
        folders() -> list[str] ; add_folder(path)            # idempotent; folder or single file
        plan_scoring(model_ids: dict[str, str], progress=None) -> ScanPlan
            # new/changed files (size+mtime, then content hash), files scored by other model files, renamed or
            # moved files (same content hash as a vanished image: record and override move), removed files
            # (marked missing, kept with their decisions). ScanPlan: to_score, unchanged, renamed, missing, errors
            # (+ new, changed, models_changed, missing_folders). Walk errors are stored as error images.
        store_results(results: list[ImageResult]) -> None    # one transaction; faces replaced
        threshold (property) ; set_threshold(t)              # undoable
        score_mode (property: "primary" | "lowest") ; set_score_mode(m)   # undoable
        set_override(image_ids, value: "accept" | "reject" | None)        # undoable, one transaction
        apply_overrides(changes: dict[int, "accept"|"reject"|None], description=None)  # mixed values, one step
        undo() -> str | None ; redo() -> str | None ; can_undo() ; can_redo() ; history() -> list[dict]
        get_setting(name, default=None) ; set_setting(name, value)        # JSON values, not undoable
        snapshot() -> Snapshot           # columnar numpy view of all images (decisions.Snapshot)
        image_detail(image_id) -> dict ; details(image_ids) -> Iterator[dict]   # bulk form of image_detail
        query(flt: Filter | None = None, sort="score", descending=True) -> list[int]
        counts() -> dict                 # total, accepted, rejected, overridden, no_face, error, missing, unscored
        ids_for_paths(paths) -> dict[str, list[int]] ; face_embeddings(image_id) -> list[np.ndarray | None]
        data_version() -> int            # changes when another connection commits (GUI refresh)
        acquire_write_lock() ; holds_write_lock (property)

    @dataclass Snapshot                 # arrays aligned by row; row order = image_id ascending
        ids int64 ; paths list[str] ; score float32 (deciding face's norm under score_mode, NaN if none)
        n_faces int16 (0 no face, -1 not scored) ; error bool ; missing bool ; override int8 (1, -1, 0)
        celeba float32 (N, 40) ; race7 (N, 7) ; race4 (N, 4) ; gender (N, 2) ; age (N, 9)   primary face, NaN if none
        (+ score_primary, score_lowest, score_mode, threshold, width, height)
        decide(threshold=None) -> (accepted bool, reason int8)  ; rows(ids) ; apply_override(ids, value)
    @dataclass Filter                   # all optional, AND-combined; status matches ANY of its members
        status: set[str] (accepted, rejected, overridden, no_face, error, missing, unscored) ; score_min ; score_max
        celeba: {attribute: (min p, max p)} ; fairface: {head: top label} ; path_contains (case-insensitive)
    filter_mask(snapshot, flt, threshold) -> bool array    # pure numpy, what the GUI runs on every slider move
    REASON_OVERRIDE_ACCEPT, REASON_OVERRIDE_REJECT, REASON_SCORE_ABOVE, REASON_SCORE_BELOW, REASON_NO_FACE,
    REASON_ERROR, REASON_UNSCORED (+ REASON_NO_SCORE: faces but no MagFace norm) ; REASON_TEXT ; REASON_KEY

Threads: one Project may be shared by threads (an internal lock serialises its use of the connection); use one
Project per process, since a second one in the same process is a second writer and gets ProjectLockedError.
Decisions of missing files are kept as they are (an unplugged drive must not flip them); the export skips them.
An edited file (same path, new content) keeps its override and is rescored.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import store_codec as codec
from . import undo as history
from .decisions import (  # noqa: F401  (re-exported: the contract lives in this module)
    OVERRIDE_NAMES, OVERRIDE_VALUES, REASON_ERROR, REASON_KEY, REASON_NO_FACE, REASON_NO_SCORE,
    REASON_OVERRIDE_ACCEPT, REASON_OVERRIDE_REJECT, REASON_SCORE_ABOVE, REASON_SCORE_BELOW, REASON_TEXT,
    REASON_UNSCORED, SCORE_MODES, Filter, Snapshot, decide_arrays, filter_mask, sort_rows, status_masks,
)
from .labels import FAIRFACE_HEADS
from .quality import DEFAULT_THRESHOLD
from .records import ImageResult
from .scan import content_hash
from .fsnames import escaped, is_utf8
from .store_scan import ScanPlan, load_known, plan
from .store_schema import (  # noqa: F401
    ProjectError, ProjectLockedError, WriterLock, create_file, open_checked,
)

PROJECT_SUFFIX = ".faceqc"


def _guard(method):
    """SQLite errors become ProjectError with the project's name (a damaged file must not crash the app)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "locked" in msg or "busy" in msg:
                raise ProjectLockedError(f"{self.path} is busy in another process ({msg}); try again.") from e
            if "full" in msg:
                raise ProjectError(f"cannot write {self.path}: the disk is full.") from e
            if "I/O" in msg:
                raise ProjectError(f"cannot write {self.path}: disk I/O error (is the disk full or gone?). "
                                   "Changes saved before this one are kept.") from e
            if "readonly" in msg or "read-only" in msg:
                raise ProjectError(f"cannot write {self.path}: the file or its folder is read-only.") from e
            raise ProjectError(f"{self.path}: {msg}.") from e
        except sqlite3.DatabaseError as e:
            raise ProjectError(f"{self.path} is damaged ({e}).") from e
    return wrapper



BALANCE_MADE = "overrides_from_balance"  # setting: {image id: override code} set by applied balanced selections


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

class Project:
    def __init__(self, path: Path, con: sqlite3.Connection, readonly: bool):
        self.path = path
        self._con = con
        self.readonly = readonly
        self._lock = WriterLock(path)
        self._mutex = threading.RLock()  # one connection, possibly used from a worker thread and the UI thread
        self._planned: dict[str, tuple[int, int]] = {}  # ScanPlan.fingerprints of files still to be stored

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path) -> Project:
        path = Path(os.path.abspath(os.path.expanduser(path)))
        create_file(path)
        return cls.open(path)

    @classmethod
    def open(cls, path, create: bool = False, readonly: bool = False) -> Project:
        path = Path(os.path.abspath(os.path.expanduser(path)))
        if create and not os.path.lexists(path):
            return cls.create(path)
        return cls(path, open_checked(path, readonly), readonly)

    def close(self) -> None:
        with self._mutex:
            if self._con is not None:
                try:
                    self._con.close()
                finally:
                    self._con = None
                    self._lock.release()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def holds_write_lock(self) -> bool:
        return self._lock.held

    def acquire_write_lock(self) -> None:
        """Take the single-writer lock now (the GUI does this on open to say at once if another process has it)."""
        if self.readonly:
            raise ProjectError(f"{self.path} was opened read-only.")
        self._lock.acquire()

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            raise ProjectError(f"{self.path} is closed.")
        return self._con

    @contextmanager
    def _write(self):
        with self._mutex:
            con = self.con
            self.acquire_write_lock()
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:  # also when COMMIT itself failed (disk full): leave no open transaction
                    try:
                        con.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    @_guard
    def data_version(self) -> int:
        with self._mutex:
            return int(self.con.execute("PRAGMA data_version").fetchone()[0])

    # -- folders and scanning --------------------------------------------------------------------------------------
    @_guard
    def folders(self) -> list[str]:
        with self._mutex:
            return [r[0] for r in self.con.execute("SELECT path FROM folders ORDER BY id")]

    @_guard
    def add_folder(self, path) -> None:
        p = os.path.abspath(os.path.expanduser(str(path)))
        if not os.path.exists(p):
            raise ProjectError(f"cannot add {escaped(p)}: no such file or folder.")
        if not is_utf8(p):
            raise ProjectError(f"cannot add {escaped(p)}: its name is not valid UTF-8; rename the folder.")
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO folders(path, added_at) VALUES (?, ?)", (p, time.time()))

    @_guard
    def plan_scoring(self, model_ids: dict[str, str], progress=None) -> ScanPlan:
        self.acquire_write_lock()  # before the walk: its result is only valid if nobody else writes meanwhile
        with self._mutex:
            known, folders = load_known(self.con), self.folders()
        # The walk and hashing run without the mutex: another thread (the GUI) can read meanwhile.
        result, writes = plan(known, folders, dict(model_ids or {}), progress)
        with self._write() as con:
            for sql, params in writes:
                con.executemany(sql, params)
            result.missing = con.execute("SELECT COUNT(*) FROM images WHERE missing = 1").fetchone()[0]
        self._planned.update(result.fingerprints)
        return result

    @_guard
    def store_results(self, results: Iterable[ImageResult]) -> None:
        results = list(results)
        if not results:
            return
        # File facts first, outside the transaction (hashing reads the file).
        facts = []
        with self._mutex:
            stored = {r[0]: r[1:] for r in self.con.execute(
                "SELECT path, id, size, mtime_ns, hash FROM images WHERE path IN (SELECT value FROM json_each(?))",
                (json.dumps([r.path for r in results]),))}
        for r in results:
            old = stored.get(r.path)
            try:
                fp = os.stat(r.path)
                size, mtime = fp.st_size, fp.st_mtime_ns
            except OSError:
                size = mtime = None
            h = old[3] if old else None
            planned = self._planned.pop(r.path, None)
            if planned is not None and size is not None and planned != (size, mtime):
                # Changed since the walk saw it (still being copied, edited meanwhile): these results may describe
                # the old bytes. They are stored, but under an impossible fingerprint and without the new content's
                # hash, so the next scan sees a changed file and scores it again.
                facts.append((-1, -1, None))
                continue
            if size is not None and (old is None or h is None or (old[1], old[2]) != (size, mtime)):
                try:
                    h = content_hash(r.path)
                except OSError:
                    h = None
            facts.append((size, mtime, h))
        now = time.time()
        with self._write() as con:
            sets: dict[str, int] = {}
            for r, (size, mtime, h) in zip(results, facts):
                self._store_one(con, r, size, mtime, h, now, sets)

    @staticmethod
    def _model_set(con, r: ImageResult, cache: dict[str, int]) -> int:
        models = json.dumps(r.models or {}, sort_keys=True, default=str)
        if models not in cache:
            row = con.execute("SELECT id FROM model_sets WHERE models = ?", (models,)).fetchone()
            cache[models] = row[0] if row else con.execute(
                "INSERT INTO model_sets(models, model_ids) VALUES (?, ?)",
                (models, codec.canonical_ids(codec.model_ids_of(r)))).lastrowid
        return cache[models]

    @classmethod
    def _store_one(cls, con, r: ImageResult, size, mtime, h, now, sets: dict[str, int]) -> None:
        row = con.execute("SELECT id FROM images WHERE path = ?", (r.path,)).fetchone()
        if row is None:
            image_id = con.execute("INSERT INTO images(path) VALUES (?)", (r.path,)).lastrowid
        else:
            image_id = row[0]
            con.execute("DELETE FROM faces WHERE image_id = ?", (image_id,))
        faces = [] if r.error is not None else list(r.faces)
        primary_norm, lowest, p = codec.image_scores(faces)
        primary_id = None
        for i, face in enumerate(faces):
            fid = con.execute("INSERT INTO faces(image_id, face_index, box, landmarks, det_score, magface_norm, "
                              "celeba, race7, race4, gender, age) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (image_id, *codec.face_row(face))).lastrowid
            emb = codec.embedding_blob(face)
            if emb is not None:
                con.execute("INSERT INTO embeddings(face_id, dtype, vec) VALUES (?, ?, ?)",
                            (fid, codec.EMBEDDING_DTYPE, emb))
            if i == p:
                primary_id = fid
        con.execute(
            "UPDATE images SET size = COALESCE(?, size), mtime_ns = COALESCE(?, mtime_ns), hash = COALESCE(?, hash), "
            "width = ?, height = ?, error = ?, walk_error = 0, missing = 0, n_faces = ?, score_primary = ?, "
            "score_lowest = ?, primary_face = ?, model_set = ?, scored_at = ? WHERE id = ?",
            (size, mtime, h, r.width, r.height, r.error, len(faces), primary_norm, lowest, primary_id,
             cls._model_set(con, r, sets), now, image_id))

    # -- settings and decisions ------------------------------------------------------------------------------------
    @_guard
    def get_setting(self, name: str, default: Any = None) -> Any:
        with self._mutex:
            row = self.con.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError:
            return default

    @_guard
    def set_setting(self, name: str, value: Any) -> None:
        if name == "threshold":
            return self.set_threshold(value)
        if name == "score_mode":
            return self.set_score_mode(value)
        json.dumps(value)  # fail before writing anything if it is not JSON
        with self._write() as con:
            history.write_setting(con, name, value)

    @property
    def threshold(self) -> float:
        t = self.get_setting("threshold", DEFAULT_THRESHOLD)
        return float(t) if isinstance(t, (int, float)) and math.isfinite(t) else DEFAULT_THRESHOLD

    @property
    def score_mode(self) -> str:
        m = self.get_setting("score_mode", "primary")
        return m if m in SCORE_MODES else "primary"

    def _set_undoable(self, name: str, value, description: str) -> None:
        before = self.get_setting(name)
        if before == value:
            return
        with self._write() as con:
            history.write_setting(con, name, value)
            history.record(con, "setting", description, {"name": name, "before": before, "after": value})

    @_guard
    def set_threshold(self, t: float) -> None:
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise ProjectError(f"the threshold must be a number, not {t!r}.") from None
        if not math.isfinite(t):
            raise ProjectError("the threshold must be a finite number.")
        self._set_undoable("threshold", t, f"Threshold {self.threshold:g} → {t:g}")

    @_guard
    def set_score_mode(self, m: str) -> None:
        if m not in SCORE_MODES:
            raise ProjectError(f"score mode must be one of {', '.join(SCORE_MODES)}, not {m!r}.")
        what = "its largest face" if m == "primary" else "its lowest-scoring face"
        self._set_undoable("score_mode", m, f"Score each image by {what}")

    @_guard
    def set_override(self, image_ids: Sequence[int], value: str | None) -> None:
        if value not in OVERRIDE_VALUES:
            raise ProjectError(f"an override is 'accept', 'reject' or None, not {value!r}.")
        ids = sorted({int(i) for i in np.asarray(list(image_ids), dtype=np.int64).ravel()})
        self.apply_overrides({i: value for i in ids}, history.describe_overrides(len(ids), value))

    @_guard
    def apply_overrides(self, changes: dict[int, str | None], description: str | None = None,
                        source: str = "hand") -> None:
        """Set different overrides on different images as one transaction and one undo step. ``source="balance"``
        marks them as made by an applied balanced selection (see ``balance_made_overrides``); a later change by hand
        makes an override the user's own again."""
        if source not in ("hand", "balance"):
            raise ProjectError(f"an override's source is 'hand' or 'balance', not {source!r}.")
        for v in set(changes.values()):
            if v not in OVERRIDE_VALUES:
                raise ProjectError(f"an override is 'accept', 'reject' or None, not {v!r}.")
        want = {int(i): OVERRIDE_VALUES[v] for i, v in changes.items()}
        if not want:
            return
        ids = sorted(want)
        with self._write() as con:
            known = con.execute("SELECT COUNT(*) FROM images WHERE id IN (SELECT value FROM json_each(?))",
                                (json.dumps(ids),)).fetchone()[0]
            if known != len(ids):
                raise ProjectError(f"{len(ids) - known} of the {len(ids)} image ids are not in this project.")
            before = history.read_overrides(con, ids)
            changed = [i for i in ids if before.get(i, 0) != want[i]]
            if not changed:
                return
            after = [want[i] for i in changed]
            history.write_overrides(con, changed, after)
            if description is None:
                vals = set(after)
                description = history.describe_overrides(len(changed), OVERRIDE_NAMES[vals.pop()]) if len(vals) == 1 \
                    else f"Change the overrides of {len(changed)} images"
            history.record(con, "overrides", description,
                           {"ids": changed, "before": [before.get(i, 0) for i in changed], "after": after})
            row = con.execute("SELECT value FROM settings WHERE name = ?", (BALANCE_MADE,)).fetchone()
            made = _json_dict(row[0]) if row else {}
            if source == "balance" or made:
                for i, v in zip(changed, after):
                    if source == "balance" and v != 0:
                        made[str(i)] = v
                    else:
                        made.pop(str(i), None)
                history.write_setting(con, BALANCE_MADE, made)

    @_guard
    def balance_made_overrides(self) -> set[int]:
        """Ids whose override is still the one an applied balanced selection set (not changed by hand since; an
        undone selection no longer counts). A new proposal may change these even when it keeps manual decisions."""
        made = self.get_setting(BALANCE_MADE, {})
        if not isinstance(made, dict) or not made:
            return set()
        with self._mutex:
            current = history.read_overrides(self.con, [int(k) for k in made if str(k).lstrip("-").isdigit()])
        return {int(k) for k, v in made.items() if str(k).lstrip("-").isdigit() and current.get(int(k), 0) == v}

    @_guard
    def undo(self) -> str | None:
        with self._write() as con:
            return history.undo(con)

    @_guard
    def redo(self) -> str | None:
        with self._write() as con:
            return history.redo(con)

    @_guard
    def can_undo(self) -> bool:
        with self._mutex:
            return history.can_undo(self.con)

    @_guard
    def can_redo(self) -> bool:
        with self._mutex:
            return history.can_redo(self.con)

    @_guard
    def history(self) -> list[dict]:
        with self._mutex:
            return history.steps(self.con)

    # -- reading ---------------------------------------------------------------------------------------------------
    @_guard
    def snapshot(self, probs: bool = True) -> Snapshot:
        """All images as arrays (one query). ``probs=False`` skips the attribute columns (left empty, 0 columns)."""
        with self._mutex:
            threshold, mode = self.threshold, self.score_mode
            face_cols = "f.celeba, f.race7, f.race4, f.gender, f.age" if probs else "NULL, NULL, NULL, NULL, NULL"
            join = "LEFT JOIN faces f ON f.id = i.primary_face " if probs else ""
            rows = self.con.execute(
                "SELECT i.id, i.path, i.n_faces, i.error IS NOT NULL, i.missing, COALESCE(o.value, 0), "
                f"i.score_primary, i.score_lowest, i.width, i.height, {face_cols} "
                f"FROM images i LEFT JOIN overrides o ON o.image_id = i.id {join}ORDER BY i.id").fetchall()
        cols = list(zip(*rows)) if rows else [()] * 15
        primary = np.array(cols[6], np.float64).astype(np.float32) if rows else np.zeros(0, np.float32)
        lowest = np.array(cols[7], np.float64).astype(np.float32) if rows else np.zeros(0, np.float32)
        sizes = {"celeba": codec.N_CELEBA, **codec.HEAD_SIZES}
        arrays = {h: codec.stack_blobs(cols[10 + j], n) if probs else np.zeros((len(rows), 0), np.float32)
                  for j, (h, n) in enumerate(sizes.items())}

        def ints(c, dtype):
            return np.array([-1 if v is None else v for v in c], dtype) if rows else np.zeros(0, dtype)
        return Snapshot(
            ids=np.array(cols[0], np.int64), paths=list(cols[1]), score=primary if mode == "primary" else lowest,
            n_faces=np.array(cols[2], np.int16), error=np.array(cols[3], bool), missing=np.array(cols[4], bool),
            override=np.array(cols[5], np.int8), **arrays,
            score_primary=primary, score_lowest=lowest, score_mode=mode, threshold=threshold,
            width=ints(cols[8], np.int32), height=ints(cols[9], np.int32))

    def details(self, image_ids: Iterable[int]) -> Iterator[dict]:
        """image_detail for many images (two queries per 5000), in the order given; unknown ids are skipped."""
        ids = [int(i) for i in image_ids]
        try:
            yield from self._details(ids)
        except sqlite3.DatabaseError as e:
            raise ProjectError(f"{self.path} is damaged ({e}).") from e

    def _details(self, ids: list[int]) -> Iterator[dict]:
        threshold, mode = self.threshold, self.score_mode
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            arg = (json.dumps(chunk),)
            with self._mutex:
                con = self.con
                con.row_factory = sqlite3.Row
                try:
                    images = {r["id"]: r for r in con.execute(
                        "SELECT i.*, o.value AS override, m.models AS models FROM images i "
                        "LEFT JOIN overrides o ON o.image_id = i.id LEFT JOIN model_sets m ON m.id = i.model_set "
                        "WHERE i.id IN (SELECT value FROM json_each(?))", arg)}
                    faces: dict[int, list] = {}
                    for f in con.execute("SELECT * FROM faces WHERE image_id IN (SELECT value FROM json_each(?)) "
                                         "ORDER BY image_id, face_index", arg):
                        faces.setdefault(f["image_id"], []).append(f)
                finally:
                    con.row_factory = None
            for i in chunk:
                r = images.get(i)
                if r is not None:
                    yield codec.image_dict(r, faces.get(i, []), threshold, mode)

    def image_detail(self, image_id: int) -> dict:
        for d in self.details([image_id]):
            return d
        raise ProjectError(f"image {image_id} is not in {self.path.name}.")

    @_guard
    def face_embeddings(self, image_id: int) -> list[np.ndarray | None]:
        """Raw MagFace embeddings (float32) of an image's faces, by face_index."""
        with self._mutex:
            rows = self.con.execute("SELECT e.dtype, e.vec FROM faces f LEFT JOIN embeddings e ON e.face_id = f.id "
                                    "WHERE f.image_id = ? ORDER BY f.face_index", (int(image_id),)).fetchall()
        return [None if vec is None else np.frombuffer(vec, np.dtype(dt)).astype(np.float32) for dt, vec in rows]

    @_guard
    def ids_for_paths(self, paths: Iterable[str]) -> dict[str, list[int]]:
        """Each given path -> ids of the project's images at that path or, for a folder, under it."""
        out: dict[str, list[int]] = {}
        with self._mutex:
            for p in paths:
                ap = escaped(os.path.abspath(os.path.expanduser(str(p))))
                row = self.con.execute("SELECT id FROM images WHERE path = ?", (ap,)).fetchone()
                if row is not None:
                    out[str(p)] = [row[0]]
                    continue
                prefix = ap.rstrip(os.sep) + os.sep  # exact prefix (LIKE would ignore case)
                out[str(p)] = [r[0] for r in self.con.execute(
                    "SELECT id FROM images WHERE substr(path, 1, ?) = ? AND walk_error = 0 ORDER BY id",
                    (len(prefix), prefix))]
        return out

    @_guard
    def models_used(self) -> list[dict]:
        """The model files that produced the stored results, with how many images each scored."""
        totals: dict[tuple, int] = {}
        with self._mutex:
            rows = self.con.execute("SELECT m.models, COUNT(*) FROM images i JOIN model_sets m ON m.id = i.model_set "
                                    "GROUP BY m.id")
            for text, n in rows:
                try:
                    models = json.loads(text)
                except ValueError:
                    continue
                for key, info in (models or {}).items():
                    info = info if isinstance(info, dict) else {}
                    off = info.get("official", True)
                    k = (key, info.get("file") or "", info.get("sha256") or "", None if off is None else bool(off))
                    totals[k] = totals.get(k, 0) + n
        return [{"key": k[0], "file": k[1], "sha256": k[2], "official": k[3], "images": n}
                for k, n in sorted(totals.items())]

    def query(self, flt: Filter | None = None, sort: str = "score", descending: bool = True) -> list[int]:
        needs_probs = bool(flt is not None and (flt.celeba or flt.fairface)) or ":" in sort
        snap = self.snapshot(probs=needs_probs)
        rows = np.flatnonzero(filter_mask(snap, flt, snap.threshold))
        return snap.ids[sort_rows(snap, rows, sort, descending, snap.threshold)].tolist()

    def counts(self) -> dict:
        snap = self.snapshot(probs=False)
        masks = status_masks(snap, snap.threshold)
        out = {"total": len(snap.ids)}
        out.update({k: int(m.sum()) for k, m in masks.items()})
        return out


__all__ = [
    "Filter", "PROJECT_SUFFIX", "Project", "ProjectError", "ProjectLockedError", "REASON_ERROR", "REASON_KEY",
    "REASON_NO_FACE", "REASON_NO_SCORE", "REASON_OVERRIDE_ACCEPT", "REASON_OVERRIDE_REJECT", "REASON_SCORE_ABOVE",
    "REASON_SCORE_BELOW", "REASON_TEXT", "REASON_UNSCORED", "ScanPlan", "Snapshot", "filter_mask", "FAIRFACE_HEADS",
]
