"""File names that are not valid UTF-8.

Linux allows any bytes in a name (old zip archives are full of Latin-1 ones); Python hands them over as str with
lone surrogates (os.fsdecode), which UTF-8 writers and SQLite refuse. These two helpers let the output and the
store say so per file instead of failing a whole run.
"""

from __future__ import annotations


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (False for names with undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(text: str) -> str:
    """``text`` with each undecodable byte written as a ``\\udcXX`` escape: readable, valid UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
