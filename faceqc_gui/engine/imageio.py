"""Decoding any image file Pillow reads into RGB uint8, or a one-line reason why not.

Every failure becomes ImageLoadError with a short human reason that ends up in the results (and the grid), so a
bad file never stops a run. Choices, and why:
- EXIF orientation is applied: a phone photo must be scored the way people see it.
- Transparency is composited on white: generated faces saved as RGBA usually have a transparent background, and
  white is what viewers show; black would make dark hair merge into the background for the detector.
- 16-bit and float images are scaled, not clipped: I;16 keeps its top 8 bits (65535 -> 255); float images in 0..1
  are scaled by 255, others by their own min..max.
- The pixel limit is ours (MAX_PIXELS), checked from the header before any pixel is decoded, so a decompression bomb
  costs nothing and does not depend on Pillow's global MAX_IMAGE_PIXELS, which other code may change.
- Truncated files are errors even if someone set ImageFile.LOAD_TRUNCATED_IMAGES globally: we force it off while
  decoding, because half a face scored as a whole one is a silent lie.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

MAX_PIXELS = 178_956_970  # Pillow's own default bomb limit (~179 MP, e.g. 13.4k x 13.4k)


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image file"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    return (e.strerror or str(e)).splitlines()[0]


def _open(path: str | os.PathLike) -> Image.Image:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ImageLoadError(_os_reason(e)) from e
    if p.is_dir():
        raise ImageLoadError("is a directory, not an image file")
    if size == 0:
        raise ImageLoadError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
    except UnidentifiedImageError as e:
        raise ImageLoadError("not an image (unrecognised format)") from e
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f": {int(m.group(1)) / 1e6:.0f} MP" if m else ""
        raise ImageLoadError(f"image too large{size} (limit {MAX_PIXELS / 1e6:.0f} MP; decompression bomb?)") from e
    except OSError as e:
        raise ImageLoadError(_os_reason(e)) from e
    except Exception as e:  # Pillow raises assorted errors on malformed headers
        raise ImageLoadError(f"corrupt image header ({type(e).__name__})") from e
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageLoadError(f"invalid image size {w}x{h}")
    if w * h > MAX_PIXELS:
        im.close()
        raise ImageLoadError(f"image too large: {w}x{h} = {w * h / 1e6:.0f} MP (limit {MAX_PIXELS / 1e6:.0f} MP)")
    return im


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), from the header only."""
    with _open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im).astype(np.uint32) >> 8
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode == "I":
        a = np.asarray(im).astype(np.int64)
        # 32-bit integer images here are almost always 16-bit data widened by the decoder (PNG 16-bit gray).
        shift = 8 if a.max(initial=0) <= 65535 else 24
        return Image.fromarray((np.clip(a, 0, None) >> shift).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif hi > lo:
            a = (a - lo) * (255.0 / (hi - lo))
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info) or (
        mode in ("L", "RGB") and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV: Pillow's conversions are right for these


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB, C-contiguous, orientation applied; raises ImageLoadError with a one-line reason."""
    im = _open(path)
    fmt = im.format or "image"
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.seek(0)  # GIF/TIFF: the first frame
        except EOFError:
            pass
        im.load()
        im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im)
        arr = np.asarray(rgb, dtype=np.uint8)
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).lower()
        if "truncated" in msg or "premature" in msg or "broken data stream" in msg or isinstance(e, EOFError):
            raise ImageLoadError(f"truncated or corrupt image data ({fmt})") from e
        raise ImageLoadError(f"corrupt image data ({fmt}): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    except MemoryError as e:
        raise ImageLoadError("not enough memory to decode this image") from e
    except Exception as e:
        raise ImageLoadError(f"cannot decode image ({fmt}): {type(e).__name__}") from e
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
        im.close()
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageLoadError(f"unsupported image layout {arr.shape}")
    return np.ascontiguousarray(arr)
