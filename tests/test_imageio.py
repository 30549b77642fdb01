"""Every kind of bad or unusual image file gives RGB uint8 or a one-line reason (engine/imageio.py)."""

from __future__ import annotations

import builtins
import io
import os
import struct
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from faceqc_gui.engine import imageio
from faceqc_gui.engine.errors import FaceQCError, ImageLoadError
from faceqc_gui.engine.imageio import IMAGE_EXTENSIONS, load_rgb, read_image_size

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _reason(path) -> str:
    with pytest.raises(ImageLoadError) as e:
        load_rgb(path)
    msg = str(e.value)
    assert msg and "\n" not in msg and len(msg) < 200, msg
    return msg


def _noise(h=96, w=128, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand, so headers can claim anything and 16-bit colour can be made exactly."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw_rows))
            + _png_chunk(b"IEND", b""))


@pytest.fixture
def no_decode(monkeypatch):
    """Fails the test if any pixel data is decoded: the size check must come before load()."""

    def refuse(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# ---- the real photographs ----


def test_every_shared_image_loads_as_rgb_uint8(testdata):
    paths = sorted((testdata / "faces").rglob("*.*")) + sorted((testdata / "nonfaces").glob("*.*"))
    paths = [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS]
    assert len(paths) >= 40
    modes = set()
    for p in paths:
        arr = load_rgb(p)
        with Image.open(p) as src:
            modes.add(src.mode)
            shown = ImageOps.exif_transpose(src)
            assert arr.shape == (shown.height, shown.width, 3), p
            assert read_image_size(p) == (shown.width, shown.height), p
            assert arr.dtype == np.uint8 and arr.flags.c_contiguous and arr.flags.writeable, p
            if src.mode == "L":  # grey stays grey, values untouched
                gray = np.asarray(shown)
                assert all(np.array_equal(arr[:, :, c], gray) for c in range(3)), p
            elif src.mode == "RGBA":  # composited on white: c * a + 255 * (1 - a)
                rgba = np.asarray(shown).astype(np.float64)
                a = rgba[:, :, 3:] / 255.0
                expected = rgba[:, :, :3] * a + 255.0 * (1.0 - a)
                assert np.abs(arr - expected).max() <= 1.0, p
            else:
                assert np.array_equal(arr, np.asarray(shown.convert("RGB"))), p  # channel order is RGB
    assert {"L", "RGBA", "RGB"} <= modes  # the shared set really exercises the conversions


# ---- files that are not images ----


def test_empty_text_and_garbage_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty file (0 bytes)"
    (tmp_path / "notes.jpg").write_text("hello, this is not an image\n")
    assert _reason(tmp_path / "notes.jpg") == "not an image (unrecognised format)"
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(4000))
    assert _reason(tmp_path / "noise.png") == "not an image (unrecognised format)"
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(300))
    msg = _reason(tmp_path / "fake.png")
    assert "corrupt" in msg and "PNG" in msg


def test_corrupt_png_data_is_an_error(tmp_path):
    data = bytearray(_encode(Image.fromarray(_noise()), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40: idat + 80] = b"\x00" * 40  # inside the compressed stream: checksum and inflate both break
    (tmp_path / "bad.png").write_bytes(bytes(data))
    msg = _reason(tmp_path / "bad.png")
    assert "corrupt" in msg and "PNG" in msg


def test_paths_that_are_not_readable_files(tmp_path):
    assert _reason(tmp_path / "missing.png") == "file not found"
    assert _reason(tmp_path) == "is a directory"


@pytest.mark.skipif(os.name == "nt", reason="creating symlinks needs extra privileges on Windows")
def test_broken_and_looping_links(tmp_path):
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    assert _reason(tmp_path / "dangling.png") == "file not found"
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")
    assert _reason(tmp_path / "self.jpg") == "symbolic link loop"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX-only")
def test_a_named_pipe_is_refused_instead_of_blocking_forever(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    box = {}
    t = threading.Thread(target=lambda: box.update(msg=_reason(fifo)), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
        pytest.fail("load_rgb blocked on a named pipe")
    assert box["msg"].startswith("not a regular file")


def test_permission_denied_is_a_reason(tmp_path, monkeypatch):
    p = tmp_path / "secret.png"
    Image.new("RGB", (3, 3)).save(p)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # as the OS does for a chmod 000 file when not root
        if os.fspath(file) == os.fspath(p):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    assert _reason(p) == "permission denied"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads chmod-000 files anyway; the simulated test above covers the message")
def test_chmod_000_file_is_permission_denied(tmp_path):
    p = tmp_path / "locked.png"
    Image.new("RGB", (3, 3)).save(p)
    p.chmod(0)
    try:
        assert _reason(p) == "permission denied"
    finally:
        p.chmod(0o644)


# ---- truncation ----


@pytest.mark.parametrize("tolerant_global", [False, True], ids=["pillow-default", "LOAD_TRUNCATED_IMAGES=True"])
@pytest.mark.parametrize("fmt,kw", [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}),
                                    ("WEBP", {"lossless": True})])
def test_truncated_files_are_errors(tmp_path, monkeypatch, fmt, kw, tolerant_global):
    data = _encode(Image.fromarray(_noise()), fmt, **kw)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    # Another library in the process may have told Pillow to accept truncated files; we must not.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", tolerant_global)
    msg = _reason(p)
    assert "truncated or corrupt" in msg and fmt in msg
    assert ImageFile.LOAD_TRUNCATED_IMAGES is tolerant_global  # left as we found it


def test_truncation_check_holds_while_threads_load_concurrently(tmp_path, monkeypatch):
    # The pipeline decodes in several threads; a save/restore of Pillow's global per call lets one thread's
    # restore re-enable tolerance while another is decoding. Truncated files must fail every time.
    full = _encode(Image.fromarray(_noise(768, 768)), "JPEG", quality=95)
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    good.write_bytes(full)
    cut.write_bytes(full[: len(full) * 2 // 3])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    def attempt(i):
        path = cut if i % 2 else good
        try:
            load_rgb(path)
            return path, True
        except ImageLoadError:
            return path, False

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, range(160)))
    assert all(ok for path, ok in results if path == good)
    assert not any(ok for path, ok in results if path == cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


# ---- decompression bombs ----


def test_decompression_bomb_is_rejected_from_the_header(tmp_path, no_decode):
    # A valid PNG header claiming 30000 x 30000 RGB (2.7 GB decoded), with almost no data behind it.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png(30000, 30000, 8, 2, b"\x00" * 100))
    msg = _reason(p)
    assert msg.startswith("image too large") and "900 MP" in msg and "limit 179 MP" in msg
    with pytest.raises(ImageLoadError):
        read_image_size(p)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_our_limit_holds_when_pillows_global_limit_is_disabled(tmp_path, monkeypatch, no_decode, fmt):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what some other library might do
    if fmt == "PNG":
        data = _png(30000, 30000, 8, 2, b"\x00" * 100)
    else:  # patch the frame header (SOF0: ff c0, length, precision, height, width) of a real tiny JPEG
        data = bytearray(_encode(Image.new("RGB", (8, 8)), "JPEG"))
        sof = data.index(b"\xff\xc0")
        data[sof + 5: sof + 9] = struct.pack(">HH", 30000, 30000)
        data = bytes(data)
    p = tmp_path / f"bomb.{fmt.lower()}"
    p.write_bytes(data)
    t0 = time.perf_counter()
    assert _reason(p) == "image too large: 30000x30000 = 900 MP (limit 179 MP)"
    assert time.perf_counter() - t0 < 2.0


def test_pixel_limit_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "MAX_PIXELS", 99)
    Image.new("RGB", (9, 11), RED).save(tmp_path / "ok.png")  # 99 pixels
    Image.new("RGB", (10, 10), RED).save(tmp_path / "big.png")  # 100 pixels
    assert load_rgb(tmp_path / "ok.png").shape == (11, 9, 3)
    assert _reason(tmp_path / "big.png").startswith("image too large: 10x10")


def test_a_lowered_pillow_limit_is_reported_not_crashed(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # hard limit 2000 px
    assert _reason(tmp_path / "x.png") == "image too large: 0.01 MP (limit 0.002 MP)"


def test_big_but_allowed_header_reads_without_warnings(tmp_path):
    # 100 MP is over Pillow's warning threshold (89 MP) and under ours: no warning may reach the user's console.
    p = tmp_path / "big.png"
    p.write_bytes(_png(10000, 10000, 8, 0, b"\x00" * 100))
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image_size(p) == (10000, 10000)
    assert caught == []
    assert list(warnings.filters) == filters_before


# ---- pixel modes ----


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    r, g, b = load_rgb(tmp_path / "cmyk.jpg")[8, 8].astype(int)
    assert r > 230 and g < 30 and b < 30


def test_16_bit_grey_keeps_the_top_8_bits(tmp_path):
    values = np.array([[0, 255, 256, 32768, 65280, 65535]], dtype=np.uint16)
    expected = [0, 0, 1, 128, 255, 255]
    Image.fromarray(values).save(tmp_path / "gray16.png")
    Image.fromarray(values.astype(">u2")).save(tmp_path / "gray16be.tif")  # big-endian I;16B
    for name in ("gray16.png", "gray16be.tif"):
        out = load_rgb(tmp_path / name)
        assert out.shape == (1, 6, 3)
        for c in range(3):
            assert out[0, :, c].tolist() == expected, name


def test_16_bit_colour_png(tmp_path):
    pixels = np.array([[[65535, 32768, 0], [257, 0, 65535]]], dtype=">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    (tmp_path / "rgb16.png").write_bytes(_png(2, 1, 16, 2, rows))
    assert load_rgb(tmp_path / "rgb16.png").tolist() == [[[255, 128, 0], [1, 0, 255]]]


def test_32_bit_integer_images(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], np.int32)).save(tmp_path / "small.tif")
    assert load_rgb(tmp_path / "small.tif")[0, :, 0].tolist() == [0, 100, 255]  # already 8-bit levels
    Image.fromarray(np.array([[0, 512, 65535]], np.int32)).save(tmp_path / "wide16.tif")
    assert load_rgb(tmp_path / "wide16.tif")[0, :, 0].tolist() == [0, 2, 255]  # 16-bit data in 32-bit storage
    Image.fromarray(np.array([[-100, 50, 200]], np.int32)).save(tmp_path / "signed.tif")
    assert load_rgb(tmp_path / "signed.tif")[0, :, 0].tolist() == [0, 128, 255]  # own range stretched


@pytest.mark.parametrize("values,expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),  # 0..1 data
    ([0.0, 100.4, 255.0], [0, 100, 255]),  # 0..255 data
    ([-1.0, 1.0, 3.0], [0, 128, 255]),  # any other range: its own min..max
    ([float("nan"), 0.0, 0.5, float("inf")], [0, 0, 128, 255]),  # non-finite values do not spoil the scale
], ids=["unit", "byte-range", "other-range", "non-finite"])
def test_float_images_are_scaled_not_clipped(tmp_path, values, expected):
    Image.fromarray(np.array([values], np.float32), "F").save(tmp_path / "float.tif")
    out = load_rgb(tmp_path / "float.tif")
    assert out[0, :, 0].tolist() == expected and np.array_equal(out[:, :, 0], out[:, :, 2])


def test_grey_and_bilevel(tmp_path):
    Image.new("L", (4, 4), 77).save(tmp_path / "gray.png")
    assert (load_rgb(tmp_path / "gray.png") == 77).all()
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    bits.save(tmp_path / "bits.png")
    assert load_rgb(tmp_path / "bits.png")[:, :, 1].tolist() == [[0, 255], [255, 0]]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # invisible
    rgba[0, 1] = (10, 20, 30, 255)  # opaque
    rgba[0, 2] = (0, 0, 200, 102)  # 40 % blue over white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = load_rgb(tmp_path / "rgba.png").astype(int)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [10, 20, 30]
    assert np.abs(out[0, 2] - np.array([153, 153, 233])).max() <= 1  # 255*0.6 + c*0.4

    la = Image.fromarray(np.array([[[100, 0], [100, 255]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png")[0, :, 0].tolist() == [255, 100]


def test_palette_and_grey_with_a_transparent_entry(tmp_path):
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.save(tmp_path / "pal.png", transparency=0)
    assert load_rgb(tmp_path / "pal.png")[0].tolist() == [[255, 255, 255], [200, 10, 10]]

    grey = Image.fromarray(np.array([[77, 78]], np.uint8), "L")
    grey.save(tmp_path / "trns.png", transparency=77)  # PNG tRNS: grey level 77 is transparent
    assert load_rgb(tmp_path / "trns.png")[0].tolist() == [[255, 255, 255], [78, 78, 78]]


def test_ycbcr_and_lab_tiffs(tmp_path):
    Image.new("RGB", (4, 4), RED).convert("YCbCr").save(tmp_path / "ycc.tif")
    assert np.abs(load_rgb(tmp_path / "ycc.tif")[0, 0].astype(int) - RED).max() <= 3
    Image.new("LAB", (4, 4), (128, 128, 128)).save(tmp_path / "lab.tif")  # L* ~ 50, neutral: sRGB grey ~ 119
    r, g, b = load_rgb(tmp_path / "lab.tif")[0, 0].astype(int)
    assert r == g == b and 110 <= r <= 128


def test_animated_and_multipage_files_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in (RED, BLUE, GREEN)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("anim.gif", "anim.webp", "pages.tif"):
        out = load_rgb(tmp_path / name)
        assert out.shape == (6, 6, 3) and np.abs(out.astype(int) - RED).max() <= 2, name


def test_lossless_formats_round_trip_exactly(tmp_path):
    arr = _noise(7, 5)
    for name, kw in (("x.webp", {"lossless": True}), ("x.bmp", {}), ("x.png", {}), ("x.tiff", {})):
        Image.fromarray(arr).save(tmp_path / name, **kw)
        assert np.array_equal(load_rgb(tmp_path / name), arr), name


# ---- orientation ----

# Where the stored top-left (red) and top-right (green) corners appear once displayed, from the EXIF 2.3 definition
# of tag 274 ("the 0th row represents the visual ..., the 0th column the visual ...").
_SHOWN = {
    1: ("top-left", "top-right"), 2: ("top-right", "top-left"), 3: ("bottom-right", "bottom-left"),
    4: ("bottom-left", "bottom-right"), 5: ("top-left", "bottom-left"), 6: ("top-right", "bottom-right"),
    7: ("bottom-right", "top-right"), 8: ("bottom-left", "top-left"),
}


def _corner(arr: np.ndarray, where: str) -> np.ndarray:
    rows = slice(0, 4) if where.startswith("top") else slice(-4, None)
    cols = slice(0, 4) if where.endswith("left") else slice(-4, None)
    return arr[rows, cols].reshape(-1, 3).mean(axis=0)


def _marked(h=20, w=40) -> Image.Image:
    arr = np.full((h, w, 3), 128, np.uint8)
    arr[:6, :6] = RED
    arr[:6, -6:] = GREEN
    return Image.fromarray(arr)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    _marked().save(p, exif=exif)
    out = load_rgb(p)
    assert out.shape == ((20, 40, 3) if orientation <= 4 else (40, 20, 3))
    assert read_image_size(p) == (out.shape[1], out.shape[0])
    red_at, green_at = _SHOWN[orientation]
    assert np.abs(_corner(out, red_at) - RED).max() < 10
    assert np.abs(_corner(out, green_at) - GREEN).max() < 10


def test_exif_rotated_jpeg(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", what phones write for a portrait shot
    _marked().save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)
    assert _corner(out, "top-right")[0] > 200 and _corner(out, "top-left")[0] < 160
    assert read_image_size(tmp_path / "rot.jpg") == (20, 40)


def test_broken_exif_keeps_the_image_and_stays_quiet(tmp_path):
    jpeg = _encode(_marked(), "JPEG", quality=95)
    payload = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 20  # an IFD that runs off the end
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    (tmp_path / "badexif.jpg").write_bytes(jpeg[:2] + app1 + jpeg[2:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = load_rgb(tmp_path / "badexif.jpg")
    assert out.shape == (20, 40, 3) and _corner(out, "top-left")[0] > 200
    assert caught == []


# ---- names ----


def test_unicode_paths(tmp_path):
    d = tmp_path / "données 顔 📷"
    d.mkdir()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(d / "visage_é.png")
    assert load_rgb(d / "visage_é.png")[0, 0].tolist() == [1, 2, 3]
    assert load_rgb(str(d / "visage_é.png")).shape == (2, 3, 3)
    assert read_image_size(d / "visage_é.png") == (3, 2)


def test_extensions_and_error_type():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} <= IMAGE_EXTENSIONS
    assert imageio.has_image_extension("A/B/PHOTO.JPG") and imageio.has_image_extension("x.TiFf")
    assert not imageio.has_image_extension("notes.txt") and not imageio.has_image_extension("jpg")
    assert issubclass(ImageLoadError, FaceQCError)
