"""Folder walks find every image once, in a stable order, and never hang or crash (engine/scan.py)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from faceqc_gui.engine.scan import (
    CONTENT_HASH_ALGORITHM,
    FileEntry,
    content_hash,
    file_fingerprint,
    iter_image_files,
)

needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="creating symlinks needs extra privileges on Windows")


def _touch(root, *rels, data=b"x"):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _rel(entries, root):
    return [(os.path.relpath(e.path, root), e.error) for e in entries]


def test_walk_is_recursive_sorted_and_keeps_only_visible_images(tmp_path):
    _touch(tmp_path, "b/2.jpg", "a/1.png", "a/sub/3.webp", "a/sub/deeper/4.TIFF", "c.JPG", "a/10.gif",
           ".hidden/5.jpg", "a/.6.jpg", "a/.cache/7.png", "a/readme.txt", "a/raw.cr2", "a/noext", "d.jpeg.txt")
    got = _rel(iter_image_files([tmp_path]), tmp_path)
    assert got == [("a/1.png", None), ("a/10.gif", None), ("a/sub/3.webp", None), ("a/sub/deeper/4.TIFF", None),
                   ("b/2.jpg", None), ("c.JPG", None)]
    assert list(iter_image_files([tmp_path])) == list(iter_image_files([tmp_path]))  # stable


def test_every_listed_extension_is_found_in_any_case(tmp_path):
    names = [f"f{i}.{ext}" for i, ext in enumerate(
        ["jpg", "JPEG", "png", "Webp", "bmp", "tif", "TIFF", "gif"])]
    _touch(tmp_path, *names)
    assert sorted(os.path.basename(e.path) for e in iter_image_files([tmp_path])) == sorted(names)


def test_roots_keep_the_order_given_and_a_single_path_is_accepted(tmp_path):
    _touch(tmp_path, "z/1.jpg", "a/2.jpg")
    assert _rel(iter_image_files([tmp_path / "z", tmp_path / "a"]), tmp_path) == [("z/1.jpg", None),
                                                                                    ("a/2.jpg", None)]
    assert _rel(iter_image_files(tmp_path / "a"), tmp_path) == [("a/2.jpg", None)]  # not iterated per character
    assert _rel(iter_image_files(str(tmp_path / "a")), tmp_path) == [("a/2.jpg", None)]


def test_explicit_files_are_always_included(tmp_path):
    _touch(tmp_path, "data.bin", ".hidden.jpg", "photo.png")
    got = list(iter_image_files([tmp_path / "data.bin", tmp_path / ".hidden.jpg", tmp_path / "photo.png"]))
    assert got == [FileEntry(str(tmp_path / "data.bin")), FileEntry(str(tmp_path / ".hidden.jpg")),
                   FileEntry(str(tmp_path / "photo.png"))]


def test_a_hidden_folder_given_explicitly_is_walked(tmp_path):
    _touch(tmp_path, ".faces/1.jpg")
    assert _rel(iter_image_files([tmp_path / ".faces"]), tmp_path) == [(".faces/1.jpg", None)]


def test_missing_path_raises_at_call_time_before_anything_is_yielded(tmp_path):
    _touch(tmp_path, "ok/1.jpg")
    with pytest.raises(FileNotFoundError) as e:
        iter_image_files([tmp_path / "ok", tmp_path / "typo"])  # no iteration needed
    assert str(tmp_path / "typo") in str(e.value)


def test_duplicates_are_yielded_once(tmp_path):
    _touch(tmp_path, "a/1.jpg", "a/2.jpg")
    os.link(tmp_path / "a" / "2.jpg", tmp_path / "a" / "3.jpg")  # hard link: the same file under another name
    got = _rel(iter_image_files([tmp_path / "a", tmp_path, tmp_path / "a" / "1.jpg", tmp_path / "a"]), tmp_path)
    assert got == [("a/1.jpg", None), ("a/2.jpg", None)]


@needs_symlinks
def test_symlinked_files_and_folders_are_followed(tmp_path):
    outside = tmp_path / "outside"
    _touch(outside, "far.jpg", "lib/deep.png")
    tree = tmp_path / "tree"
    _touch(tree, "own.jpg")
    os.symlink(outside / "far.jpg", tree / "link.jpg")
    os.symlink(outside / "lib", tree / "linked_dir")
    assert _rel(iter_image_files([tree]), tree) == [("link.jpg", None), ("linked_dir/deep.png", None),
                                                    ("own.jpg", None)]


@needs_symlinks
def test_same_file_through_a_symlink_is_yielded_once(tmp_path):
    _touch(tmp_path, "b_real.jpg")
    os.symlink(tmp_path / "b_real.jpg", tmp_path / "a_alias.jpg")
    got = list(iter_image_files([tmp_path, tmp_path / "b_real.jpg"]))
    assert len(got) == 1 and got[0].error is None


@needs_symlinks
def test_symlink_loops_end_and_are_reported_once(tmp_path):
    _touch(tmp_path, "d/a.png", "x/in_x.jpg", "y/in_y.jpg")
    os.symlink(tmp_path, tmp_path / "d" / "up")  # to an ancestor
    os.symlink(".", tmp_path / "d" / "self")  # to itself
    os.symlink(tmp_path / "y", tmp_path / "x" / "to_y")  # x -> y -> x
    os.symlink(tmp_path / "x", tmp_path / "y" / "to_x")
    box = {}
    t = threading.Thread(target=lambda: box.update(entries=list(iter_image_files([tmp_path]))), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "walk did not end"
    got = _rel(box["entries"], tmp_path)
    assert [p for p, err in got if err is None] == ["d/a.png", "x/in_x.jpg", "x/to_y/in_y.jpg"]
    loops = [p for p, err in got if err and "loop" in err]
    assert sorted(loops) == ["d/self", "d/up", "x/to_y/to_x"]
    assert len(got) == 6


@needs_symlinks
def test_broken_links_are_entries_with_an_error(tmp_path):
    _touch(tmp_path, "ok.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "gone_dir", tmp_path / "broken_dir")  # no image extension, no entry: nothing to report
    os.symlink(tmp_path / "gone.png", tmp_path / "explicit.png")
    got = _rel(iter_image_files([tmp_path, tmp_path / "explicit.png"]), tmp_path)  # found twice, reported once
    assert got == [("broken.jpg", "broken symbolic link"), ("explicit.png", "broken symbolic link"),
                   ("ok.jpg", None)]
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "gone.bin", tmp_path / "elsewhere" / "explicit.bin")
    assert _rel(iter_image_files([tmp_path / "elsewhere" / "explicit.bin"]), tmp_path) == [
        ("elsewhere/explicit.bin", "broken symbolic link")]


def test_unreadable_folder_is_an_entry_and_the_walk_goes_on(tmp_path, monkeypatch):
    _touch(tmp_path, "a.png", "locked/inside.jpg", "z.png")
    real_scandir = os.scandir

    def scandir(path="."):  # as the OS does for a chmod 000 folder when not root
        if os.fspath(path) == os.fspath(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert _rel(iter_image_files([tmp_path]), tmp_path) == [
        ("a.png", None), ("locked", "cannot read folder: permission denied"), ("z.png", None)]
    assert _rel(iter_image_files([tmp_path / "locked"]), tmp_path) == [
        ("locked", "cannot read folder: permission denied")]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root lists chmod-000 folders anyway; the simulated test above covers the message")
def test_chmod_000_folder_is_an_entry(tmp_path):
    _touch(tmp_path, "locked/inside.jpg", "ok.png")
    (tmp_path / "locked").chmod(0)
    try:
        assert _rel(iter_image_files([tmp_path]), tmp_path) == [
            ("locked", "cannot read folder: permission denied"), ("ok.png", None)]
    finally:
        (tmp_path / "locked").chmod(0o755)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX-only")
def test_a_named_pipe_with_an_image_name_is_reported_not_opened(tmp_path):
    _touch(tmp_path, "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    assert _rel(iter_image_files([tmp_path]), tmp_path) == [
        ("a.jpg", None), ("b.jpg", "not a regular file (device, pipe or socket)")]


def test_very_deep_folders_do_not_hit_the_recursion_limit(tmp_path):
    depth = 1100  # beyond Python's default recursion limit of 1000
    levels = [str(tmp_path)]
    try:
        for _ in range(depth):  # os.makedirs itself recurses per level
            levels.append(os.path.join(levels[-1], "d"))
            os.mkdir(levels[-1])
        _touch(tmp_path, os.path.relpath(os.path.join(levels[-1], "deep.jpg"), tmp_path))
        got = list(iter_image_files([tmp_path]))
        assert len(got) == 1 and got[0].error is None and got[0].path.endswith(os.path.join("d", "deep.jpg"))
    finally:
        # pytest's own clean-up (shutil.rmtree) recurses per level and would fail on this tree in later runs.
        deep_file = os.path.join(levels[-1], "deep.jpg")
        if os.path.exists(deep_file):
            os.remove(deep_file)
        for level in reversed(levels[1:]):
            os.rmdir(level)


def test_unicode_names(tmp_path):
    _touch(tmp_path, "données 顔/visage_é 📷.jpg", "Ünïcode.png")
    assert _rel(iter_image_files([tmp_path]), tmp_path) == [("données 顔/visage_é 📷.jpg", None),
                                                           ("Ünïcode.png", None)]


def test_file_fingerprint_tracks_size_and_mtime(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(b"0123456789")
    os.utime(p, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    size, mtime = file_fingerprint(p)
    assert size == 10 and mtime == os.stat(p).st_mtime_ns
    p.write_bytes(b"01234567890")
    assert file_fingerprint(p) != (size, mtime)
    with pytest.raises(FileNotFoundError):
        file_fingerprint(tmp_path / "gone.jpg")


def test_content_hash_recognises_renamed_files_and_any_change(tmp_path):
    assert CONTENT_HASH_ALGORITHM == "blake2b-128"
    data = os.urandom(3 * (1 << 20) + 7)  # several read chunks, the last one partial
    a = tmp_path / "a.jpg"
    a.write_bytes(data)
    digest = content_hash(a)
    assert digest == hashlib.blake2b(data, digest_size=16).hexdigest()
    moved = tmp_path / "sub" / "renamed.png"
    moved.parent.mkdir()
    a.rename(moved)
    assert content_hash(moved) == digest
    changed = bytearray(data)
    changed[2 * (1 << 20)] ^= 1
    moved.write_bytes(bytes(changed))
    assert content_hash(moved) != digest
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert content_hash(tmp_path / "empty.jpg") == hashlib.blake2b(b"", digest_size=16).hexdigest()
