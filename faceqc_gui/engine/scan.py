"""Finding image files under the paths a user gives, and fingerprinting them for incremental rescoring.

Walks never raise for what they find: an unreadable folder, a broken link or a symlink loop becomes an entry with an
error, so it shows up in the results instead of silently shrinking the dataset. Only a path the user typed that does
not exist is an immediate error (FileNotFoundError, raised by the call itself, before anything is yielded), because
that is almost always a typo.

Files and folders are identified by (st_dev, st_ino) of their target, which is what realpath comparison would give
and also catches hard links and bind mounts; a folder whose identity is already on the current path is a loop, one
already walked elsewhere is a duplicate and is skipped quietly. The walk is iterative, so depth is not limited by
Python's recursion limit.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .imageio import has_image_extension

CONTENT_HASH_ALGORITHM = "blake2b-128"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str
    error: str | None = None


def _reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    return (e.strerror or str(e) or type(e).__name__).lower()


def _identity(path: str, st: os.stat_result) -> tuple:
    if st.st_ino or st.st_dev:
        return (st.st_dev, st.st_ino)
    try:  # Windows: DirEntry.stat() leaves st_ino/st_dev at 0, os.stat() fills them
        st = os.stat(path)
    except OSError:
        pass
    if st.st_ino or st.st_dev:
        return (st.st_dev, st.st_ino)
    return ("path", os.path.normcase(os.path.realpath(path)))


def _file_entry(path: str, st: os.stat_result, seen_files: set) -> FileEntry | None:
    if not stat.S_ISREG(st.st_mode):
        return FileEntry(path, "not a regular file (device, pipe or socket)")
    key = _identity(path, st)
    if key in seen_files:
        return None
    seen_files.add(key)
    return FileEntry(path)


def _walk(root: str, root_st: os.stat_result, seen_dirs: set, seen_files: set) -> Iterator[FileEntry]:
    root_key = _identity(root, root_st)
    if root_key in seen_dirs:
        return  # the same folder was given twice, or lies inside one already walked
    seen_dirs.add(root_key)
    ancestors = {root_key: root}  # identities on the current path -> the path they were reached by
    # Each frame: (folder key, iterator over its children), children listed and sorted when the folder is entered.
    stack: list[tuple[tuple, Iterator[os.DirEntry]]] = []

    def enter(path: str, key: tuple) -> FileEntry | None:
        try:
            with os.scandir(path) as it:
                children = sorted((d for d in it if not d.name.startswith(".")), key=lambda d: d.name)
        except OSError as e:
            return FileEntry(path, f"cannot read folder: {_reason(e)}")
        ancestors[key] = path
        stack.append((key, iter(children)))
        return None

    if (err := enter(root, root_key)) is not None:
        yield err
        return
    while stack:
        key, children = stack[-1]
        d = next(children, None)
        if d is None:
            stack.pop()
            del ancestors[key]
            continue
        try:
            is_dir = d.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if not is_dir and not has_image_extension(d.name):
            continue
        try:
            st = d.stat()  # follows symlinks: a linked file or folder counts as its target
        except OSError as e:
            if d.is_symlink() and isinstance(e, FileNotFoundError):
                yield FileEntry(d.path, "broken symbolic link")
            else:
                yield FileEntry(d.path, f"cannot read: {_reason(e)}")
            continue
        if not is_dir:
            if (entry := _file_entry(d.path, st, seen_files)) is not None:
                yield entry
            continue
        child_key = _identity(d.path, st)
        if child_key in ancestors:
            yield FileEntry(d.path, f"symbolic link loop: leads back to {ancestors[child_key]}, not followed")
            continue
        if child_key in seen_dirs:
            continue
        seen_dirs.add(child_key)
        if (err := enter(d.path, child_key)) is not None:
            yield err


def iter_image_files(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> Iterator[FileEntry]:
    """Image files under `paths`, in the order given; folders walked recursively in sorted order, hidden (dot) names
    skipped, only image extensions kept. Explicit file arguments are always included (even hidden or without an image
    extension: the loader then says why it is not an image). Every file is yielded once however it is reached.

    Raises FileNotFoundError (naming the path) at call time if any path does not exist."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    roots = [str(Path(os.fsdecode(p)).expanduser()) for p in paths]
    for r in roots:
        if not os.path.lexists(r):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", r)
    return _iter(roots)


def _iter(roots: list[str]) -> Iterator[FileEntry]:
    reported: set[str] = set()
    for entry in _entries(roots):
        if entry.error is not None:  # errors have no file identity: the same broken path is reported once by name
            key = os.path.abspath(entry.path)
            if key in reported:
                continue
            reported.add(key)
        yield entry


def _entries(roots: list[str]) -> Iterator[FileEntry]:
    seen_dirs: set[tuple] = set()
    seen_files: set[tuple] = set()
    for r in roots:
        try:
            st = os.stat(r)
        except OSError as e:
            broken = isinstance(e, FileNotFoundError) and os.path.islink(r)
            yield FileEntry(r, "broken symbolic link" if broken else f"cannot read: {_reason(e)}")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(r, st, seen_dirs, seen_files)
        elif (entry := _file_entry(r, st, seen_files)) is not None:
            yield entry


def file_fingerprint(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime_ns) of the file (links followed): the cheap test for 'unchanged since last scored'.
    OSError propagates: the caller decides what a vanished file means."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def content_hash(path: str | os.PathLike) -> str:
    """blake2b-128 of the file's bytes as 32 hex characters (CONTENT_HASH_ALGORITHM), read in 1 MiB chunks: recognises
    a renamed or moved file. blake2b is fast in pure software on every CPU; 128 bits is ample to tell files apart."""
    h = hashlib.blake2b(digest_size=16)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
