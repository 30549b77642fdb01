"""File hashing shared by the model registry (sha256 of weights) and the store (content hash of images)."""

from __future__ import annotations

import hashlib
import os

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike, progress=None) -> str:
    """Hex sha256 of a file; ``progress(nbytes)`` is called per chunk when given."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()
