"""Finding image files under the paths a user gives, and fingerprinting them for incremental rescoring.

Walks never raise for what they find: an unreadable folder or a symlink loop becomes an entry with an error, so it
shows up in the results instead of silently shrinking the dataset. Only a path the user typed that does not exist
is an immediate error (FileNotFoundError), because that is almost always a typo.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class FileEntry:
    path: str
    error: str | None = None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, seen_dirs: set[str], seen_files: set[str]) -> Iterator[FileEntry]:
    try:
        real = os.path.realpath(root)
    except OSError as e:
        yield FileEntry(str(root), f"cannot read folder: {e.strerror or e}")
        return
    if real in seen_dirs:
        # Reached again through a symlink: either a loop or a second link to the same folder. Report loops only.
        if root.is_symlink():
            yield FileEntry(str(root), "symbolic link loop (folder already visited), skipped")
        return
    seen_dirs.add(real)
    try:
        with os.scandir(root) as it:
            children = sorted(it, key=lambda d: d.name)
    except PermissionError:
        yield FileEntry(str(root), "cannot read folder: permission denied")
        return
    except OSError as e:
        yield FileEntry(str(root), f"cannot read folder: {e.strerror or e}")
        return
    for d in children:
        if _is_hidden(d.name):
            continue
        p = Path(d.path)
        try:
            is_dir = d.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(p, seen_dirs, seen_files)
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            key = os.path.realpath(p)
        except OSError:
            key = str(p)
        if not os.path.exists(p):
            if os.path.islink(p):
                yield FileEntry(str(p), "broken symbolic link")
            continue
        if key in seen_files:
            continue
        seen_files.add(key)
        yield FileEntry(str(p))


def iter_image_files(paths: Iterable[str | os.PathLike]) -> Iterator[FileEntry]:
    """Image files under `paths` (folders recursively, sorted; explicit files always included), each once."""
    roots = [Path(p).expanduser() for p in paths]
    for r in roots:
        if not os.path.lexists(r):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(r))
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for r in roots:
        if r.is_dir():
            yield from _walk(r, seen_dirs, seen_files)
            continue
        key = os.path.realpath(r)
        if key in seen_files:
            continue
        seen_files.add(key)
        if not r.exists():
            yield FileEntry(str(r), "broken symbolic link")
        else:
            yield FileEntry(str(r))


def file_fingerprint(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime_ns): the cheap test for 'unchanged since last scored'."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def content_hash(path: str | os.PathLike) -> str:
    """blake2b-128 of the bytes, hex: recognises a renamed or moved file (fast, and collisions are not a concern)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
