"""Every kind of bad or unusual image file gives RGB uint8 or a one-line reason; walks never hang or crash."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from faceqc_gui.engine.errors import ImageLoadError
from faceqc_gui.engine.imageio import load_rgb, read_image_size
from faceqc_gui.engine.scan import content_hash, file_fingerprint, iter_image_files


def _reason(path) -> str:
    with pytest.raises(ImageLoadError) as e:
        load_rgb(path)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_real_shared_images_all_load_as_rgb(testdata):
    for p in sorted((testdata / "faces").rglob("*.*")) + sorted((testdata / "nonfaces").iterdir()):
        arr = load_rgb(p)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.flags.c_contiguous, p
        with Image.open(p) as im:
            assert arr.shape[:2] == (im.height, im.width)


def test_zero_byte_text_and_corrupt_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty file" in _reason(tmp_path / "empty.jpg")
    (tmp_path / "notes.jpg").write_text("hello, not an image")
    assert "not an image" in _reason(tmp_path / "notes.jpg")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    _reason(tmp_path / "garbage.png")
    assert "file not found" in _reason(tmp_path / "missing.png")
    assert "directory" in _reason(tmp_path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_errors_even_if_pillow_is_set_to_tolerate_them(tmp_path, fmt, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # another library may have set this globally
    assert "truncated" in _reason(p) or "corrupt" in _reason(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and we left it as we found it


def test_decompression_bomb_is_rejected_from_the_header(tmp_path):
    # A valid PNG header claiming 30000 x 30000 pixels, with almost no data behind it.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(png)
    assert "too large: 900 MP" in _reason(p)


def test_modes_become_rgb_with_sensible_values(tmp_path):
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg")
    r, g, b = load_rgb(tmp_path / "cmyk.jpg")[5, 5].astype(int)
    assert r > 200 and g < 60 and b < 60

    a16 = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "gray16.png")[0, :, 0], [0, 128, 255])

    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F").save(tmp_path / "float.tif")
    np.testing.assert_array_equal(load_rgb(tmp_path / "float.tif")[0, :, 1], [0, 128, 255])

    Image.new("L", (4, 4), 77).save(tmp_path / "gray.png")
    assert (load_rgb(tmp_path / "gray.png") == 77).all()

    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: composited on white
    rgba.save(tmp_path / "rgba.png")
    assert (load_rgb(tmp_path / "rgba.png") == 255).all()

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert tuple(load_rgb(tmp_path / "pal.png")[0, 0]) == (200, 10, 10)

    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_rgb(tmp_path / "anim.gif")[0, 0, 0] > 200  # first frame

    Image.new("RGB", (5, 7), (0, 200, 0)).save(tmp_path / "x.webp", lossless=True)
    Image.new("RGB", (5, 7), (0, 200, 0)).save(tmp_path / "x.bmp")
    assert load_rgb(tmp_path / "x.webp").shape == (7, 5, 3) and load_rgb(tmp_path / "x.bmp").shape == (7, 5, 3)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:5, :5] = (255, 0, 0)  # red top-left corner as stored
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:5, -5:, 0].mean() > 200  # the stored top-left now shows at the top-right
    assert read_image_size(tmp_path / "rot.jpg") == (20, 40)


def test_unicode_paths(tmp_path):
    d = tmp_path / "données 顔 📷"
    d.mkdir()
    Image.new("RGB", (3, 3), (1, 2, 3)).save(d / "visage_é.png")
    assert [e.path for e in iter_image_files([tmp_path])] == [str(d / "visage_é.png")]
    assert tuple(load_rgb(d / "visage_é.png")[0, 0]) == (1, 2, 3)


def test_walk_is_sorted_recursive_skips_hidden_and_non_images(tmp_path):
    for rel in ["b/2.jpg", "a/1.png", "a/sub/3.webp", ".hidden/4.jpg", "a/.5.jpg", "a/readme.txt", "c.JPG"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [os.path.relpath(e.path, tmp_path) for e in iter_image_files([tmp_path])]
    assert got == ["a/1.png", "a/sub/3.webp", "b/2.jpg", "c.JPG"]


def test_symlink_loops_and_duplicates_end(tmp_path):
    (tmp_path / "d").mkdir()
    Image.new("RGB", (3, 3)).save(tmp_path / "d" / "a.png")
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    os.symlink(tmp_path / "d" / "a.png", tmp_path / "d" / "same.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "d" / "broken.png")
    entries = list(iter_image_files([tmp_path, tmp_path / "d" / "a.png"]))
    ok = [e for e in entries if e.error is None]
    assert len(ok) == 1 and ok[0].path.endswith("a.png")
    errors = {os.path.basename(e.path): e.error for e in entries if e.error}
    assert "loop" in errors["loop"] and "broken" in errors["broken.png"]


def test_unreadable_folder_is_an_entry_not_a_crash(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    Image.new("RGB", (3, 3)).save(tmp_path / "ok.png")
    real_scandir = os.scandir

    def scandir(path):  # tests run as root, where chmod 000 does not deny reads: simulate the OS refusing
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = list(iter_image_files([tmp_path]))
    assert [(os.path.basename(e.path), e.error) for e in entries] == [
        ("locked", "cannot read folder: permission denied"), ("ok.png", None)]


def test_unreadable_file_gives_a_reason(tmp_path, monkeypatch):
    p = tmp_path / "secret.png"
    Image.new("RGB", (3, 3)).save(p)
    real_open = Image.open

    def deny(fp, *a, **k):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(Image, "open", deny)
    assert _reason(p) == "permission denied"
    monkeypatch.setattr(Image, "open", real_open)


def test_explicit_files_are_kept_and_missing_paths_raise(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"123")
    assert [e.path for e in iter_image_files([tmp_path / "data.bin"])] == [str(tmp_path / "data.bin")]
    with pytest.raises(FileNotFoundError):
        list(iter_image_files([tmp_path / "nope"]))


def test_fingerprint_and_content_hash(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    assert content_hash(a) == content_hash(b) and len(content_hash(a)) == 32
    b.write_bytes(b"other bytes")
    assert content_hash(a) != content_hash(b)
    size, mtime = file_fingerprint(a)
    assert size == 10 and mtime > 0
