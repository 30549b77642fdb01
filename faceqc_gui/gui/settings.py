"""App-wide settings that do not belong to one project: recent projects, window geometry, where a folder's project
lives. A small JSON file in the user config dir (platformdirs), written atomically; unreadable content is ignored."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import platformdirs

from ..engine.registry import APP_NAME

MAX_RECENT = 10


def config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "gui.json"


def projects_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "projects"


def project_for_folder(folder: str | os.PathLike) -> Path:
    """Where the project started by opening a bare folder lives: in the user data dir, never inside the dataset
    (it may be read-only or shared), named after the folder plus a hash of its full path so reopening the same
    folder reopens the same project."""
    real = os.path.realpath(os.path.expanduser(str(folder)))
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(real.rstrip(os.sep)) or "root")
    digest = hashlib.sha1(real.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return projects_dir() / f"{name}-{digest}.faceqc"


class AppSettings:
    def __init__(self, path: Path | None = None):
        self.path = path or config_path()
        self.data: dict[str, Any] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                d = json.load(f)
            if isinstance(d, dict):
                self.data = d
        except (OSError, ValueError):
            pass

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.data, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:
            pass  # settings are a convenience; never an error for the user

    def recent(self) -> list[str]:
        r = self.data.get("recent")
        return [p for p in r if isinstance(p, str)] if isinstance(r, list) else []

    def add_recent(self, path: str | os.PathLike) -> None:
        p = os.path.abspath(str(path))
        self.data["recent"] = [p] + [x for x in self.recent() if x != p][: MAX_RECENT - 1]
        self.save()

    def remove_recent(self, path: str) -> None:
        self.data["recent"] = [x for x in self.recent() if x != path]
        self.save()

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.save()
