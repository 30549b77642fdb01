"""Writing scoring results as JSONL or CSV, one row at a time and flushed, so an interrupted run keeps its rows."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .errors import FaceQCError
from .fsnames import is_utf8
from .quality import DEFAULT_THRESHOLD
from .records import CSV_COLUMNS, ImageResult, flatten_row, image_rows


def _json_default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(v: Any) -> Any:
    # JSON has no NaN: a NaN score would make the file unreadable for strict parsers.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


class ResultWriter:
    """Context manager: `with ResultWriter(path) as w: w.write(result)`; the format comes from the extension."""

    def __init__(self, path: str | Path, threshold: float = DEFAULT_THRESHOLD):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise FaceQCError(f"output {self.path} must end in .jsonl or .csv")
        self.format = suffix[1:]
        self.threshold = threshold
        self.rows = 0
        self._f = None
        self._csv = None

    def __enter__(self) -> ResultWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A file name that is not valid UTF-8 (legal on Linux, common from old zip archives) reaches here as a str
            # with lone surrogates: the CSV writes it with backslash escapes instead of failing the whole run.
            self._f = open(self.path, "w", encoding="utf-8", newline="", errors="backslashreplace")
        except OSError as e:
            raise FaceQCError(f"cannot write {self.path}: {e.strerror or e}") from e
        if self.format == "csv":
            self._csv = csv.DictWriter(self._f, fieldnames=CSV_COLUMNS)
            self._csv.writeheader()
        return self

    def write(self, result: ImageResult) -> None:
        for row in image_rows(result, self.threshold):
            row = _clean(row)
            if self._csv is not None:
                self._csv.writerow(flatten_row(row))
            else:
                line = json.dumps(row, ensure_ascii=False, default=_json_default)
                if not line.isascii() and not is_utf8(line):
                    # Not-UTF-8 file name: JSON's \udcXX escapes keep it exact (json.loads + os.fsencode give the
                    # original bytes back) where a raw write would fail.
                    line = json.dumps(row, ensure_ascii=True, default=_json_default)
                self._f.write(line + "\n")
            self.rows += 1
        self._f.flush()

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            self._f.close()
