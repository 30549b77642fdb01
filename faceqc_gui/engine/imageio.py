"""Decoding any image file Pillow reads into RGB uint8, or a one-line reason why not.

Every failure becomes ImageLoadError with a short human reason that ends up in the results (and the grid), so a
bad file never stops a run. Choices, and why:
- EXIF orientation is applied (ImageOps.exif_transpose): a phone photo must be scored the way people see it. A broken
  EXIF block only loses the rotation; it does not make an otherwise good picture unusable.
- Transparency is composited on white: generated faces saved as RGBA usually have a transparent background, white
  is what image viewers and the grid show, and on black dark hair would merge into the background for the detector.
- 16-bit images keep their top 8 bits (I;16: 65535 -> 255, 32768 -> 128), the same rule Pillow applies to 16-bit
  RGB PNGs, so one file's grey and colour versions agree. 32-bit integer ("I") images: values already in 0..255 are
  taken as they are, values in 0..65535 as 16-bit data (>> 8), anything else (negative, wider) is stretched from its
  own min..max. Float ("F") images: data within 0..1 is multiplied by 255, data within 0..255 taken as it is, any
  other range stretched from its own finite min..max; NaN -> 0, +inf -> 255, -inf -> 0. Nothing is clipped away.
- The pixel limit is ours (MAX_PIXELS), checked from the header before any pixel is decoded, so a decompression bomb
  costs nothing even when other code has disabled Pillow's global Image.MAX_IMAGE_PIXELS. If other code *lowered*
  that global, Pillow refuses earlier and we report its limit.
- Truncated files are errors even if other code set ImageFile.LOAD_TRUNCATED_IMAGES: half a face scored as a whole
  one is a silent lie. Pillow only offers that switch as a process global, and decodes run in several threads, so
  _strict_pillow() holds it off (and silences Pillow's own warnings) while any load is in progress and gives the
  previous setting back when the last one ends.
- ICC profiles are not applied (CMYK uses Pillow's plain conversion); detection and scoring do not need exact colour.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

# Pillow's default hard limit (2 x Image.MAX_IMAGE_PIXELS), so both checks agree on a default install:
# ~179 MP, e.g. 13,400 x 13,400; a 100 MP camera frame still loads.
MAX_PIXELS = 178_956_970

_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# How a file starts, to name the format in a message when Pillow cannot even parse the header.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def has_image_extension(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


# ---- process-wide Pillow settings, held while any load runs ----

_guard_lock = threading.Lock()
_guard_depth = 0
_guard_saved_truncated = False
_guard_warnings: warnings.catch_warnings | None = None


@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    global _guard_depth, _guard_saved_truncated, _guard_warnings
    with _guard_lock:
        if _guard_depth == 0:
            _guard_saved_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
            _guard_warnings = warnings.catch_warnings()
            _guard_warnings.__enter__()
            # Corrupt-EXIF and bomb warnings from Pillow would flood the console on a large folder; the reason for a
            # real failure is in the ImageLoadError. Only Pillow's warnings (and ours) are muted, nothing else's.
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            warnings.filterwarnings("ignore", module=re.escape(__name__) + "$")
        _guard_depth += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # asserted on every entry in case other code flipped it meanwhile
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _guard_saved_truncated
                if _guard_warnings is not None:
                    # Restores the whole filter list as it was when the first load began: a filter another thread
                    # adds while loads are in progress does not survive (catch_warnings' usual limitation).
                    _guard_warnings.__exit__(None, None, None)
                    _guard_warnings = None


# ---- opening (header only) ----


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    return (e.strerror or str(e) or type(e).__name__).splitlines()[0].lower()


def _sniff(path: str | os.PathLike) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 10_000_000 else f"{pixels / 1e6:.2g} MP"


def _check_file(path: str | os.PathLike) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImageLoadError(_os_reason(e)) from e
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError("is a directory")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO would block Image.open forever; a device has no meaningful size.
        raise ImageLoadError("not a regular file (device, pipe or socket)")
    if st.st_size == 0:
        raise ImageLoadError("empty file (0 bytes)")


def _open(path: str | os.PathLike) -> Image.Image:
    """Header parsed, size checked, no pixel decoded. Call inside _strict_pillow()."""
    _check_file(path)
    try:
        im = Image.open(path)
    except UnidentifiedImageError as e:
        fmt = _sniff(path)
        if fmt:
            raise ImageLoadError(f"truncated or corrupt image header ({fmt})") from e
        raise ImageLoadError("not an image (unrecognised format)") from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(_pillow_bomb_reason(e)) from e
    except OSError as e:
        if e.errno is not None:  # the operating system refused (permission, I/O error...)
            raise ImageLoadError(_os_reason(e)) from e
        raise ImageLoadError(f"truncated or corrupt image data ({_sniff(path) or 'image'})") from e
    except Exception as e:  # Pillow raises assorted errors (SyntaxError, ValueError, struct.error) on bad headers
        raise ImageLoadError(f"corrupt image header ({_sniff(path) or type(e).__name__})") from e
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageLoadError(f"invalid image size {w}x{h}")
    if w * h > MAX_PIXELS:
        im.close()
        raise ImageLoadError(f"image too large: {w}x{h} = {_mp(w * h)} (limit {_mp(MAX_PIXELS)})")
    return im


def _pillow_bomb_reason(e: Exception) -> str:
    # Pillow's message: "Image size (N pixels) exceeds limit of L pixels, could be decompression bomb DOS attack."
    m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(e))
    if not m:
        return f"image too large (limit {_mp(MAX_PIXELS)})"
    return f"image too large: {_mp(int(m.group(1)))} (limit {_mp(int(m.group(2)))})"


def _orientation(im: Image.Image) -> int:
    try:
        o = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF: show the pixels as stored
        return 1
    return o if 1 <= o <= 8 else 1


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), from the header only; ImageLoadError if unusable."""
    with _strict_pillow():
        im = _open(path)
        try:
            w, h = im.size
            return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)
        finally:
            im.close()


# ---- decoding ----


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _stretch(a: np.ndarray) -> np.ndarray:
    """Finite min..max of `a` onto 0..255; NaN -> 0, +inf -> 255, -inf -> 0."""
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    out = np.zeros(a.shape, np.float64)
    if finite.any():
        lo, hi = float(a[finite].min()), float(a[finite].max())
        if hi > lo:
            out[finite] = (a[finite] - lo) * (255.0 / (hi - lo))
        else:  # constant image: keep its level where it is meaningful
            out[finite] = np.clip(a[finite], 0.0, 255.0)
    out[np.isposinf(a)] = 255.0
    return np.rint(out).astype(np.uint8)


def _float_to_u8(a: np.ndarray) -> np.ndarray:
    finite = a[np.isfinite(a)]
    if not finite.size or finite.min() < 0.0 or finite.max() > 255.0:
        return _stretch(a)
    gain = 255.0 if finite.max() <= 1.0 else 1.0  # 0..1 data is scaled up; 0..255 data is already 8-bit levels
    scaled = np.nan_to_num(a.astype(np.float64) * gain, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _int_to_u8(a: np.ndarray) -> np.ndarray:
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return (a >> 8).astype(np.uint8)
    return _stretch(a)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)  # a writable copy (asarray of a Pillow image is read-only)
    if mode.startswith("I;16"):
        return _gray_to_rgb((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8))
    if mode == "I":
        return _gray_to_rgb(_int_to_u8(np.asarray(im).astype(np.int64)))
    if mode == "F":
        return _gray_to_rgb(_float_to_u8(np.asarray(im, dtype=np.float32)))
    if mode in _ALPHA_MODES or "transparency" in im.info:
        if mode == "La":  # premultiplied grey has no direct conversion to RGBA
            im = im.convert("RGBa")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    try:
        return np.array(im.convert("RGB"), dtype=np.uint8)  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX
    except ValueError as e:
        raise ImageLoadError(f"unsupported image mode {mode}") from e


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB, C-contiguous and writable, orientation applied (first frame of animations and
    multi-page files); raises ImageLoadError with a one-line reason for anything that is not a usable image."""
    with _strict_pillow():
        src = im = _open(path)
        fmt = im.format or _sniff(path) or "image"
        try:
            im.load()
            if _orientation(im) != 1:
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # a malformed EXIF block costs the rotation, not the image
                    pass
            arr = _to_rgb_array(im)
        except ImageLoadError:
            raise
        except Image.DecompressionBombError as e:  # GIF frames are size-checked again while decoding
            raise ImageLoadError(_pillow_bomb_reason(e)) from e
        except MemoryError as e:
            raise ImageLoadError(f"not enough memory to decode this {im.width}x{im.height} image") from e
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
            if isinstance(e, OSError) and e.errno is not None:  # e.g. EIO on a failing disk, a file removed on NFS
                raise ImageLoadError(_os_reason(e)) from e
            raise ImageLoadError(f"truncated or corrupt image data ({fmt})") from e
        except Exception as e:
            raise ImageLoadError(f"cannot decode image ({fmt}): {type(e).__name__}") from e
        finally:
            im.close()
            src.close()  # multi-frame files keep their file open after load()
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageLoadError(f"unsupported image layout {arr.shape}")
    return np.ascontiguousarray(arr)
