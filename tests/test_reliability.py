"""Decisions survive anything: SIGKILL mid-write, a second process, wrong files, failing export targets.

Kill tests run short-lived child processes (`python -c`) that write to a project in many small transactions and
print each commit after it returns; the parent kills them with SIGKILL at random moments (after a random number of
commits plus a random delay, so some kills land inside a transaction) and then checks that every printed commit is
in the project, that at most the one unprinted action in flight is extra, and that the file passes integrity_check.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_store_helpers import MODEL_IDS, expected_score, fake_result, make_files

from faceqc_gui.cli import main
from faceqc_gui.engine.export import ExportError, export_project
from faceqc_gui.engine.store import Project, ProjectError, ProjectLockedError

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
ROUNDS = 20

pytestmark = pytest.mark.skipif(os.name == "nt", reason="uses SIGKILL and POSIX mounts")

PRELUDE = f"import sys, json, random, time\nsys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]\n"


def _child(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _kill_after(proc: subprocess.Popen, n_lines: int, rng: random.Random) -> list[str]:
    """Read n_lines commits, SIGKILL after a random delay, return every line the child printed."""
    lines = []
    for _ in range(n_lines):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    time.sleep(rng.uniform(0, 0.02))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Read through the same buffered reader as readline (communicate() would skip what it buffered ahead).
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode in (-signal.SIGKILL, 0), err
    return [ln for ln in lines + rest.splitlines(keepends=True) if ln.endswith("\n")]


def _integrity_ok(path: Path) -> None:
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def _overrides(p: Project) -> dict[int, int]:
    snap = p.snapshot()
    return {int(i): int(v) for i, v in zip(snap.ids, snap.override) if v}


OVERRIDE_CHILD = """
from faceqc_gui.engine.store import Project
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
p = Project.open(path)
ids = p.snapshot().ids.tolist()
while True:
    sel = sorted(rng.sample(ids, rng.choice([1, 1, 3, 50, 400])))
    v = rng.choice(["accept", "reject", None])
    p.set_override(sel, v)
    print(json.dumps([sel, v]), flush=True)
"""


def _next_action(rng: random.Random, ids: list[int]):
    sel = sorted(rng.sample(ids, rng.choice([1, 1, 3, 50, 400])))
    return sel, rng.choice(["accept", "reject", None])


def _apply(state: dict[int, int], sel, v) -> dict[int, int]:
    out = dict(state)
    for i in sel:
        if v is None:
            out.pop(i, None)
        else:
            out[i] = 1 if v == "accept" else -1
    return out


@pytest.fixture
def scored_project(tmp_path):
    files = make_files(tmp_path / "imgs", 500, size=32)
    path = tmp_path / "r.faceqc"
    with Project.create(path) as p:
        p.add_folder(tmp_path / "imgs")
        p.plan_scoring(MODEL_IDS)
        p.store_results([fake_result(f) for f in files])
    return path


def test_sigkill_while_applying_overrides_loses_no_committed_override(scored_project):
    path = scored_project
    with Project.open(path) as p:
        ids = p.snapshot().ids.tolist()
    state: dict[int, int] = {}
    rng = random.Random(1234)
    extra_seen = 0
    for round_ in range(ROUNDS):
        seed = rng.randrange(1 << 30)
        proc = _child(OVERRIDE_CHILD, path, seed)
        printed = _kill_after(proc, rng.randint(1, 12), rng)
        replay = random.Random(seed)
        for line in printed:
            sel, v = json.loads(line)
            assert (sel, v) == _next_action(replay, ids)
            state = _apply(state, sel, v)
        in_flight = _apply(state, *_next_action(replay, ids))
        with Project.open(path) as p:
            got = _overrides(p)
            assert got in (state, in_flight), f"round {round_}: overrides differ from every committed state"
            if got != state:
                extra_seen += 1
                state = got
            if round_ % 5 == 4:  # the undo history is intact: undo the last step, then redo it
                before = dict(state)
                p.undo()
                p.redo()
                assert _overrides(p) == before
        _integrity_ok(path)
    assert state, "the children never committed anything"


SCORE_CHILD = """
import os
from faceqc_gui.engine.store import Project
from test_store_helpers import MODEL_IDS, fake_result
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
p = Project.open(path)
plan = p.plan_scoring(MODEL_IDS)
print(json.dumps(["plan", len(plan.to_score)]), flush=True)
todo = list(plan.to_score)
while todo:
    k = rng.randint(1, 5)
    batch, todo = todo[:k], todo[k:]
    p.store_results([fake_result(f, salt=os.path.getsize(f)) for f in batch])
    print(json.dumps(["stored", [[f, os.path.getsize(f)] for f in batch]]), flush=True)
print(json.dumps(["done", 0]), flush=True)
"""


def test_sigkill_while_scoring_keeps_overrides_and_stored_results(tmp_path):
    folder = tmp_path / "imgs"
    files = make_files(folder, 120, size=32)
    path = tmp_path / "s.faceqc"
    with Project.create(path) as p:
        p.add_folder(folder)
    rng = random.Random(99)
    overrides: dict[str, int] = {}
    stored: dict[str, int] = {}  # path -> file size when its printed results were stored
    n_new = 0
    for round_ in range(ROUNDS):
        # the user's decisions, committed by another (earlier) process before this run
        with Project.open(path) as p:
            known = p.snapshot()
            if len(known):
                pick = [int(i) for i in rng.sample(known.ids.tolist(), min(3, len(known)))]
                v = rng.choice(["accept", "reject"])
                p.set_override(pick, v)
                for i in pick:
                    overrides[known.paths[known.rows([i])[0]]] = 1 if v == "accept" else -1
        for f in rng.sample(files, 6):  # changed files: must be rescored
            with open(f, "ab") as fh:
                fh.write(os.urandom(3))
            stored.pop(f, None)
        files += make_files(folder, 4, prefix=f"n{n_new:03d}_", size=32)
        n_new += 1
        proc = _child(SCORE_CHILD, path, rng.randrange(1 << 30))
        for line in _kill_after(proc, rng.randint(1, 8), rng):
            kind, data = json.loads(line)
            if kind == "stored":
                for f, size in data:
                    stored[f] = size
        _integrity_ok(path)
        with Project.open(path) as p:
            snap = p.snapshot()
            row = {pp: i for i, pp in enumerate(snap.paths)}
            got = {pp: int(snap.override[i]) for pp, i in row.items() if snap.override[i]}
            assert got == overrides, f"round {round_}: an override was lost or changed by a killed scoring run"
            for f, size in stored.items():
                if os.path.getsize(f) != size:
                    continue
                i = row[f]
                assert snap.n_faces[i] >= 0, f"round {round_}: committed results of {f} are gone"
                np.testing.assert_allclose(snap.score[i], expected_score(fake_result(f, salt=size)), rtol=1e-6,
                                           equal_nan=True)
    proc = _child(SCORE_CHILD, path, 7)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with Project.open(path) as p:
        snap = p.snapshot()
        assert sorted(snap.paths) == sorted(files) and not snap.missing.any()
        assert p.counts()["unscored"] == 0 and p.plan_scoring(MODEL_IDS).to_score == []
        for f, i in zip(snap.paths, range(len(snap.paths))):
            np.testing.assert_allclose(snap.score[i], expected_score(fake_result(f, salt=os.path.getsize(f))),
                                       rtol=1e-6, equal_nan=True)


HOLDER = """
from faceqc_gui.engine.store import Project
p = Project.open(sys.argv[1])
p.set_threshold(21.0)
print("holding", flush=True)
sys.stdin.readline()
p.close()
print("closed", flush=True)
"""


def test_second_process_gets_a_clear_message_and_can_write_after(scored_project, capsys):
    path = scored_project
    holder = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(HOLDER), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with Project.open(path) as p:
            assert p.threshold == 21.0 and p.counts()["total"] == 500  # reading works meanwhile
            with pytest.raises(ProjectLockedError, match=f"another FaceQC process \\(pid {holder.pid}"):
                p.set_override([1], "accept")
            assert _overrides(p) == {}
        assert main(["project", "set", str(path), str(Path(path).parent / "imgs"), "--reject"]) == 2
        err = capsys.readouterr().err
        assert "open for changes in another FaceQC process" in err and "Traceback" not in err
        assert main(["project", "status", str(path)]) == 0
        capsys.readouterr()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        holder.wait(timeout=30)
        with Project.open(path) as p:
            p.set_override([1], "accept")  # released on close
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # a holder killed with SIGKILL releases the lock too (the kernel drops it with the process)
    holder = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(HOLDER), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO)
    assert holder.stdout.readline().strip() == "holding"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with Project.open(path) as p:
        p.set_override([2], "reject")
        assert _overrides(p) == {1: 1, 2: -1}


DISK_FULL_CHILD = """
import os, resource, signal
from faceqc_gui.engine.store import Project, ProjectError
from test_store_helpers import fake_result
path = sys.argv[1]
p = Project.open(path)
p.set_override([1, 2, 3], "accept")
print("committed", flush=True)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = os.path.getsize(path + "-wal") + 2 * 4096  # room for one more page: like a disk that just filled up
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
snap = p.snapshot()
try:
    p.store_results([fake_result(x, salt=5) for x in snap.paths[:300]])
    print("stored", flush=True)
except ProjectError as e:
    print("error", str(e), flush=True)
try:
    p.set_override(snap.ids.tolist(), "reject")
    print("stored", flush=True)
except ProjectError as e:
    print("error", str(e), flush=True)
"""


def test_a_full_disk_while_writing_keeps_what_was_committed(scored_project):
    r = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(DISK_FULL_CHILD), str(scored_project)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr
    assert lines[0] == "committed" and lines[1].startswith("error") and lines[2].startswith("error"), lines
    assert "cannot write" in lines[1] and str(scored_project) in lines[1]
    _integrity_ok(scored_project)
    with Project.open(scored_project) as p:
        assert _overrides(p) == {1: 1, 2: 1, 3: 1}
        p.set_override([4], "reject")  # and it works again once there is space
        assert p.counts()["overridden"] == 4


def test_two_projects_in_one_process_follow_the_same_rule(scored_project):
    with Project.open(scored_project) as a, Project.open(scored_project) as b:
        a.set_threshold(19)
        with pytest.raises(ProjectLockedError):
            b.set_threshold(18)
        assert b.threshold == 19  # b still reads a's committed change


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    out = {}
    out["random"] = tmp_path / "random.faceqc"
    out["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    out["empty"] = tmp_path / "empty.faceqc"
    out["empty"].write_bytes(b"")
    out["text"] = tmp_path / "notes.faceqc"
    out["text"].write_text("these are my notes\n")
    out["folder"] = tmp_path / "folder.faceqc"
    out["folder"].mkdir()
    out["foreign"] = tmp_path / "other.sqlite"
    con = sqlite3.connect(out["foreign"])
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('application', 'something else')")
    con.commit()
    con.close()
    out["foreign2"] = tmp_path / "other2.sqlite"
    con = sqlite3.connect(out["foreign2"])
    con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    out["truncated"] = tmp_path / "truncated.faceqc"
    out["truncated"].write_bytes(good.read_bytes()[:3000])
    out["newer"] = tmp_path / "newer.faceqc"
    shutil.copy(good, out["newer"])
    con = sqlite3.connect(out["newer"])
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    return out


def test_corrupt_or_foreign_files_give_a_clear_error_and_are_not_modified(scored_project, tmp_path, capsys):
    with Project.open(scored_project) as p:
        p.set_override([3], "accept")  # closing checkpoints the WAL into the main file
    for name, path in _bad_files(tmp_path, scored_project).items():
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(ProjectError) as e:
            with Project.open(path) as p:
                p.counts()
                p.snapshot()
        msg = str(e.value)
        assert str(path) in msg, name
        if name == "newer":
            assert "newer FaceQC" in msg
        elif name != "truncated":
            assert "is not a FaceQC project" in msg, (name, msg)
        if before is not None:
            assert path.read_bytes() == before, f"{name} was modified by opening it"
            assert not Path(str(path) + "-wal").exists()
        assert main(["project", "status", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("faceqc: error:") and "Traceback" not in err


def test_damaged_pages_raise_project_error_not_sqlite_errors(scored_project, tmp_path):
    with Project.open(scored_project) as p:
        p.set_override([5], "reject")
    data = bytearray(scored_project.read_bytes())
    page = 4096
    rng = np.random.default_rng(1)
    for start in range(2 * page, len(data) - page, 7 * page):  # damage every 7th page, keep the header
        data[start:start + page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
    bad = tmp_path / "damaged.faceqc"
    bad.write_bytes(bytes(data))
    reported = 0
    try:
        p = Project.open(bad)  # the header pages are intact, so this usually opens
    except ProjectError:
        return
    with p:
        for action in (p.counts, p.snapshot, lambda: p.image_detail(5), lambda: p.set_override([1], "accept"),
                       lambda: list(p.details(range(1, 500))), lambda: p.plan_scoring(MODEL_IDS)):
            try:
                action()
            except ProjectError as e:
                assert str(bad) in str(e)
                reported += 1
    assert reported, "reading every image of a file with damaged pages never noticed the damage"


# -- export into failing targets ----------------------------------------------------------------------------------

EXPORT_CHILD = """
import resource, signal
from faceqc_gui.engine.store import Project
from faceqc_gui.engine.export import export_project, ExportError
project, target, fsize = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Project.open(project, readonly=True) as p:
    p.counts()  # SQLite's shared-memory file exists before the limit applies
    if fsize:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    try:
        s = export_project(p, target, mode="copy", allow_nonempty=True)
        print(json.dumps({"ok": s.exported}))
    except ExportError as e:
        print(json.dumps({"error": str(e)}))
"""


@pytest.fixture
def export_project_file(tmp_path):
    folder = tmp_path / "src"
    files = make_files(folder, 30, size=8192)
    path = tmp_path / "x.faceqc"
    with Project.create(path) as p:
        p.add_folder(folder)
        p.plan_scoring(MODEL_IDS)
        p.store_results([fake_result(f, norms=[30.0]) for f in files])
    return path, folder


def _run_export(args: list[str], prefix: list[str] | None = None) -> dict:
    r = subprocess.run((prefix or []) + [sys.executable, "-c", PRELUDE + textwrap.dedent(EXPORT_CHILD), *args],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _unshare_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def _assert_nothing_final(target: Path, preexisting: set[str]) -> None:
    assert set(os.listdir(target)) == preexisting, "files left under the target after a failed export"


def test_export_to_a_read_only_target_fails_cleanly(export_project_file, tmp_path):
    path, src = export_project_file
    target = tmp_path / "ro"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    if os.geteuid() != 0:
        target.chmod(0o555)
        try:
            res = _run_export([str(path), str(target), "0"])
        finally:
            target.chmod(0o755)
    elif _unshare_available():
        # root ignores permission bits: make the folder a read-only bind mount in a private mount namespace
        script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"')
        res = _run_export([str(path), str(target), "0"], ["unshare", "-m", "sh", "-c", script, "sh", str(target)])
    else:
        pytest.skip("running as root without mount namespaces: no way to make a folder read-only for this test")
    assert "error" in res and "not writable" in res["error"], res
    _assert_nothing_final(target, {"keep.txt"})


def test_export_to_a_full_target_fails_cleanly(export_project_file, tmp_path):
    path, src = export_project_file
    before = {f: (src / f).read_bytes() for f in os.listdir(src)}
    # 1. files may not grow past 20 kB (RLIMIT_FSIZE, any user): the manifests hit it after the images are placed
    target = tmp_path / "limited"
    target.mkdir()
    res = _run_export([str(path), str(target), "20000"])
    assert "error" in res and "not enough space" in res["error"], res
    _assert_nothing_final(target, set())
    # 2. a really full file system: a 128 kB tmpfs in a private mount namespace (root only), images don't fit
    if _unshare_available():
        target2 = tmp_path / "tiny"
        target2.mkdir()
        script = 'mount -t tmpfs -o size=128k none "$1" && shift && exec "$@"'
        res = _run_export([str(path), str(target2), "0"], ["unshare", "-m", "sh", "-c", script, "sh", str(target2)])
        assert "error" in res and "not enough space" in res["error"], res
    assert {f: (src / f).read_bytes() for f in os.listdir(src)} == before


def test_failure_while_moving_into_place_rolls_back(export_project_file, tmp_path, monkeypatch):
    path, _ = export_project_file
    import faceqc_gui.engine.export as export_mod

    real_rename = os.rename
    calls = []

    def flaky_rename(a, b):
        calls.append(b)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_rename(a, b)

    monkeypatch.setattr(export_mod.os, "rename", flaky_rename)
    target = tmp_path / "t"
    with Project.open(path, readonly=True) as p:
        with pytest.raises(ExportError, match="not enough space"):
            export_project(p, target)
    monkeypatch.undo()
    assert not target.exists() or os.listdir(target) == []
    with Project.open(path, readonly=True) as p:  # and a retry works
        assert export_project(p, target).exported == 30
