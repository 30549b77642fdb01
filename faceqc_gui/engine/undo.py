"""Persisted undo/redo of user actions, and the low-level writes of the user data they change.

History is a table of steps (seq, kind, description, payload JSON, undone flag). A step stores what it changed
before and after, so undoing writes "before" back and redoing writes "after" again: steps stay correct however
the cache (scoring results) changes in between. A new action drops the redo steps, as every editor does. Every
function here runs inside the caller's transaction, so a step and its effect commit together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

MAX_STEPS = 200  # older steps are dropped; a bulk step over 100k images is ~1 MB of JSON


def write_overrides(con: sqlite3.Connection, ids: list[int], values: list[int]) -> None:
    now = time.time()
    sets = [(i, v, now) for i, v in zip(ids, values) if v != 0]
    clears = [(i,) for i, v in zip(ids, values) if v == 0]
    if sets:
        con.executemany("INSERT OR REPLACE INTO overrides(image_id, value, set_at) VALUES (?, ?, ?)", sets)
    if clears:
        con.executemany("DELETE FROM overrides WHERE image_id = ?", clears)


def read_overrides(con: sqlite3.Connection, ids: list[int]) -> dict[int, int]:
    rows = con.execute("SELECT image_id, value FROM overrides WHERE image_id IN (SELECT value FROM json_each(?))",
                       (json.dumps(ids),))
    return dict(rows.fetchall())


def write_setting(con: sqlite3.Connection, name: str, value: Any) -> None:
    con.execute("INSERT OR REPLACE INTO settings(name, value) VALUES (?, ?)", (name, json.dumps(value)))


def record(con: sqlite3.Connection, kind: str, description: str, payload: dict) -> None:
    con.execute("DELETE FROM history WHERE undone = 1")
    con.execute("INSERT INTO history(kind, description, payload, at) VALUES (?, ?, ?, ?)",
                (kind, description, json.dumps(payload, separators=(",", ":")), time.time()))
    con.execute("DELETE FROM history WHERE seq NOT IN (SELECT seq FROM history ORDER BY seq DESC LIMIT ?)",
                (MAX_STEPS,))


def _apply(con: sqlite3.Connection, kind: str, payload: dict, side: str) -> None:
    if kind == "overrides":
        ids = payload["ids"]
        # Images removed from the project since (not possible today, but cheap to respect) are skipped.
        present = {r[0] for r in con.execute(
            "SELECT id FROM images WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))}
        pairs = [(i, v) for i, v in zip(ids, payload[side]) if i in present]
        write_overrides(con, [p[0] for p in pairs], [p[1] for p in pairs])
    elif kind == "setting":
        write_setting(con, payload["name"], payload[side])
    else:
        raise ValueError(f"unknown history step kind {kind!r}")


def undo(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT seq, kind, description, payload FROM history WHERE undone = 0 "
                      "ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return None
    seq, kind, description, payload = row
    _apply(con, kind, json.loads(payload), "before")
    con.execute("UPDATE history SET undone = 1 WHERE seq = ?", (seq,))
    return description


def redo(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT seq, kind, description, payload FROM history WHERE undone = 1 "
                      "ORDER BY seq ASC LIMIT 1").fetchone()
    if row is None:
        return None
    seq, kind, description, payload = row
    _apply(con, kind, json.loads(payload), "after")
    con.execute("UPDATE history SET undone = 0 WHERE seq = ?", (seq,))
    return description


def can_undo(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM history WHERE undone = 0 LIMIT 1").fetchone() is not None


def can_redo(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM history WHERE undone = 1 LIMIT 1").fetchone() is not None


def steps(con: sqlite3.Connection) -> list[dict]:
    """History for display: oldest first, with whether each step is currently undone."""
    return [{"seq": s, "kind": k, "description": d, "undone": bool(u), "at": a}
            for s, k, d, u, a in con.execute("SELECT seq, kind, description, undone, at FROM history ORDER BY seq")]


def describe_overrides(n: int, value: str | None) -> str:
    what = {"accept": "Accept", "reject": "Reject", None: "Clear the override of"}[value]
    return f"{what} {n} image{'' if n == 1 else 's'}"
