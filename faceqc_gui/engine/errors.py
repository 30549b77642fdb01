"""Exceptions the engine raises for conditions a user must act on (shown verbatim by the CLI and the app)."""

from __future__ import annotations


class FaceQCError(Exception):
    """Base class: the message is a complete, human-readable sentence."""


class ImageLoadError(FaceQCError):
    """A file could not be turned into an RGB image; str(e) is the one-line reason stored in the results."""


class MissingModelError(FaceQCError):
    """A weight file is needed and not found; the message names the file, where it was looked for and where to get it."""

    def __init__(self, message: str, model_key: str = ""):
        super().__init__(message)
        self.model_key = model_key


class ModelLoadError(FaceQCError):
    """A weight file exists but is not a usable checkpoint for the model (wrong keys, corrupt, wrong shapes)."""


class DownloadError(FaceQCError):
    """A weight download failed (network, HTTP status, checksum); nothing is left under the final name."""
