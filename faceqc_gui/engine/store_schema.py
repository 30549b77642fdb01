"""The project file's SQLite schema, how a file is recognised as a FaceQC project, and the single-writer lock.

Recognition never writes: a foreign SQLite database or a random file given as a project is refused before any
PRAGMA that could change it (journal mode), so pointing FaceQC at the wrong file cannot damage that file.

Locking (why a lock file and not only SQLite's own locks): SQLite would let two processes interleave writes safely,
but the user-level state would not be: a GUI and a CLI editing the same project would each show stale decisions and
undo each other's steps. So a project has at most one writer process. The first write takes an exclusive advisory
lock (flock / msvcrt) on ``<project>-lock`` and keeps it until the project is closed; any other process can still
open and read the project, and its first write raises ProjectLockedError naming the holder's pid. The kernel drops
the lock when its process dies, even by SIGKILL, so a crash never leaves a project locked.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

from .errors import FaceQCError

APPLICATION = "faceqc-project"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0


class ProjectError(FaceQCError):
    """The project file is missing, corrupt, foreign, of a newer schema, unreadable or not writable."""


class ProjectLockedError(ProjectError):
    """Another process holds the project for writing."""


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE folders (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, added_at REAL NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER, mtime_ns INTEGER, hash TEXT,
    width INTEGER, height INTEGER,
    error TEXT,
    walk_error INTEGER NOT NULL DEFAULT 0,   -- the entry is a folder-walk error, not a file
    missing INTEGER NOT NULL DEFAULT 0,
    n_faces INTEGER NOT NULL DEFAULT -1,     -- -1: not scored yet
    score_primary REAL, score_lowest REAL,   -- MagFace norm of the largest face / the lowest-scoring face
    primary_face INTEGER,                    -- faces.id of the largest face
    model_set INTEGER REFERENCES model_sets(id),   -- the model files that scored it
    scored_at REAL
);
-- Few distinct sets of model files exist; keeping them apart keeps image rows small (snapshots scan them all).
CREATE TABLE model_sets (id INTEGER PRIMARY KEY, models TEXT NOT NULL UNIQUE,   -- JSON as ImageResult.models
                         model_ids TEXT NOT NULL);                              -- canonical {key: sha256}
CREATE INDEX images_size ON images(size);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box BLOB NOT NULL, landmarks BLOB NOT NULL, det_score REAL,
    magface_norm REAL,
    celeba BLOB, race7 BLOB, race4 BLOB, gender BLOB, age BLOB   -- float32 blobs in labels.py order
);
CREATE UNIQUE INDEX faces_image ON faces(image_id, face_index);
-- Embeddings live apart so that the faces rows scanned by every snapshot stay small.
CREATE TABLE embeddings (face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
                         dtype TEXT NOT NULL, vec BLOB NOT NULL);
CREATE TABLE overrides (image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
                        value INTEGER NOT NULL CHECK (value IN (-1, 1)), set_at REAL NOT NULL);
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, description TEXT NOT NULL,
                      payload TEXT NOT NULL, undone INTEGER NOT NULL DEFAULT 0, at REAL NOT NULL);
"""
REQUIRED_TABLES = {"meta", "folders", "images", "model_sets", "faces", "embeddings", "overrides", "settings",
                   "history"}


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    uri = Path(os.path.abspath(path)).as_uri() + f"?mode={mode}"
    con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    return con


def create_file(path: Path) -> None:
    """Write a new, empty project to ``path`` atomically; never replaces an existing file."""
    if os.path.lexists(path):
        raise ProjectError(f"{path} already exists; choose another name or open it instead.")
    parent = path.parent
    if not parent.is_dir():
        raise ProjectError(f"cannot create {path}: folder {parent} does not exist.")
    tmp = parent / f".{path.name}.creating-{os.getpid()}"
    try:
        for p in (tmp, Path(str(tmp) + "-journal")):
            if os.path.lexists(p):
                os.unlink(p)
        con = _connect(tmp, "rwc")
        try:
            con.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            now = time.time()
            with con:
                con.execute("BEGIN")
                con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                    ("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", json.dumps(now)),
                ])
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
        try:
            os.link(tmp, path)  # fails if the name was taken meanwhile: never overwrite
            os.unlink(tmp)
        except FileExistsError:
            raise ProjectError(f"{path} already exists; choose another name or open it instead.") from None
        except OSError:
            if os.path.lexists(path):
                raise ProjectError(f"{path} already exists; choose another name or open it instead.") from None
            os.replace(tmp, path)  # file systems without hard links
    except OSError as e:
        raise ProjectError(f"cannot create {path}: {e.strerror or e}.") from e
    except sqlite3.Error as e:
        raise ProjectError(f"cannot create {path}: {e}.") from e
    finally:
        for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm"), Path(str(tmp) + "-journal")):
            try:
                os.unlink(p)
            except OSError:
                pass


def not_a_project(path: Path, why: str) -> ProjectError:
    return ProjectError(f"{path} is not a FaceQC project ({why}).")


def open_checked(path: Path, readonly: bool) -> sqlite3.Connection:
    """Connection to a verified FaceQC project; raises ProjectError for anything else, without writing to it."""
    if not os.path.lexists(path):
        raise ProjectError(f"project file not found: {path}")
    if path.is_dir():
        raise not_a_project(path, "it is a folder")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise ProjectError(f"cannot read project {path}: {e.strerror or e}.") from e
    if not head:
        raise not_a_project(path, "empty file")
    if head != SQLITE_MAGIC:
        raise not_a_project(path, "not an SQLite database")
    try:
        con = _connect(path, "ro" if readonly else "rw")
    except sqlite3.Error as e:
        raise ProjectError(f"cannot open project {path}: {e}.") from e
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            raise not_a_project(path, "an SQLite database of another program")
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise not_a_project(path, "an SQLite database of another program")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise ProjectError(f"{path} is damaged: its schema version is unreadable.") from None
        if version > SCHEMA_VERSION:
            raise ProjectError(f"{path} was written by a newer FaceQC (project format {version}; this version reads "
                               f"up to {SCHEMA_VERSION}). Update FaceQC to open it.")
        missing = REQUIRED_TABLES - tables
        if missing:
            raise ProjectError(f"{path} is damaged: tables {', '.join(sorted(missing))} are missing.")
        con.execute("PRAGMA foreign_keys=ON")
        if not readonly:
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed override survives power loss too, not only a killed process.
            con.execute("PRAGMA synchronous=FULL")
    except ProjectError:
        con.close()
        raise
    except sqlite3.OperationalError as e:  # I/O, not content: a full disk, a read-only folder, a lost mount
        con.close()
        raise ProjectError(f"cannot open {path}: {e}. Check that the disk is not full and that its folder is "
                           "writable (SQLite keeps two small files next to the project while it is open).") from e
    except sqlite3.DatabaseError as e:
        con.close()
        raise ProjectError(f"{path} is damaged or not a FaceQC project ({e}).") from e
    return con


class WriterLock:
    """Exclusive advisory lock on ``<project>-lock``, held from the first write until release()."""

    def __init__(self, project_path: Path):
        self.project_path = project_path
        self.path = Path(str(project_path) + "-lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ProjectError(f"cannot write to project {self.project_path}: cannot create {self.path.name} "
                                   f"({e.strerror or e}).") from e
            try:
                locked = _try_lock(fd)
            except ProjectError:
                os.close(fd)
                raise
            if not locked:
                holder = _read_holder(fd)
                os.close(fd)
                raise ProjectLockedError(
                    f"{self.project_path} is open for changes in another FaceQC process{holder}. Close the project "
                    "there (or wait for it to finish), then try again; reading it meanwhile is fine.")
            # The file may have been unlinked by its previous holder between our open and lock: retry on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            except OSError:
                pass  # the lock itself is what counts
            self._fd = fd
            return
        raise ProjectLockedError(f"could not lock {self.project_path} for writing (lock file keeps changing).")

    def release(self) -> None:
        if self._fd is None:
            return
        if os.name != "nt":
            try:
                os.unlink(self.path)  # while still holding it; acquirers re-check the inode
            except OSError:
                pass
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None


def _try_lock(fd: int) -> bool:
    if os.name == "nt":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False  # held by another process
        # ENOLCK (NFS without a lock daemon), EOPNOTSUPP...: nobody holds it, this file system cannot lock at all.
        raise ProjectError(
            f"the project's folder does not support file locks ({os.strerror(e.errno) if e.errno else e}), so "
            f"FaceQC cannot guard it against a second writer; move the project file to a local disk (the images "
            f"can stay where they are).") from e


def _unlock(fd: int) -> None:
    try:
        if os.name == "nt":
            import msvcrt

            os.lseek(fd, 0, 0)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, 0)
        text = os.read(fd, 200).decode("utf-8", "replace").split()
    except OSError:
        return ""
    if len(text) >= 2 and text[0].isdigit():
        return f" (pid {text[0]} on {text[1]})"
    return ""
