"""Thumbnails and previews, made off the UI thread and cached on disk.

- ``make_thumbnail``: Pillow with ``draft()`` (JPEG decodes at 1/2, 1/4 or 1/8 scale straight from the DCT), EXIF
  orientation applied (the same orientation the scores and face boxes use), transparency on white.
- ``ThumbnailDiskCache``: JPEG files under the user cache dir, named by a hash of (path, size, mtime, thumbnail size),
  so an edited or replaced file gets a new thumbnail and nothing ever has to be invalidated by hand.
- ``ImageLoader``: a few worker threads that take the most recent request first (what is on screen now, not what
  scrolled past a second ago), drop requests that piled up beyond a bound, and hand results to the UI thread in
  small time-boxed batches so a flood of finished thumbnails never stalls it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from PIL import Image, ImageOps
from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

THUMB_SIDE = 256  # on disk; tiles are at most this big
MAX_PENDING = 768  # requests kept; older ones are dropped and re-requested if their tile is painted again


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("faceqc", appauthor=False)) / "thumbs"


def _open_oriented(path: str, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decoded RGB image no larger than max_side, EXIF-oriented, and the full oriented size (w, h) of the file."""
    im = Image.open(path)
    w, h = im.size
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    full = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    if im.format == "JPEG":
        im.draft("RGB", (max_side, max_side))
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # corrupt EXIF: show the pixels as stored
        pass
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        im = bg
    elif im.mode != "RGB":
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            im = im.point(lambda v: v / 256) if im.mode.startswith("I;16") else im
        im = im.convert("RGB")
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im, full


def pil_to_qimage(im: Image.Image) -> QImage:
    im = im if im.mode == "RGB" else im.convert("RGB")
    data = im.tobytes()
    q = QImage(data, im.width, im.height, 3 * im.width, QImage.Format.Format_RGB888)
    return q.copy()  # detach from the Python buffer


def make_thumbnail(path: str, max_side: int = THUMB_SIDE) -> Image.Image:
    im, _ = _open_oriented(path, max_side)
    return im


DISK_CACHE_MAX_BYTES = 2 * 1024 ** 3  # ~130k thumbnails of ~15 kB: a 100k-image project stays fully cached


class ThumbnailDiskCache:
    def __init__(self, root: str | os.PathLike | None = None, side: int = THUMB_SIDE,
                 max_bytes: int = DISK_CACHE_MAX_BYTES):
        self.root = Path(root) if root else default_cache_dir()
        self.side = side
        self.max_bytes = int(max_bytes)

    def prune(self, max_bytes: int | None = None) -> tuple[int, int]:
        """Deletes the least recently used thumbnails until the cache holds at most ``max_bytes``; returns (files
        removed, bytes left). "Used" is the file's access time, refreshed on every cache hit (``load``), so it works
        on relatime/noatime mounts too. Safe while the app runs: a thumbnail removed here is simply made again."""
        cap = self.max_bytes if max_bytes is None else int(max_bytes)
        entries = []
        total = 0
        try:
            subdirs = [d for d in self.root.iterdir() if d.is_dir() and not d.is_symlink()]
        except OSError:
            return 0, 0
        for d in subdirs:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.name.endswith((".jpg", ".tmp")) and e.is_file(follow_symlinks=False):
                            st = e.stat(follow_symlinks=False)
                            entries.append((st.st_atime, st.st_size, e.path))
                            total += st.st_size
            except OSError:
                continue
        removed = 0
        if total > cap:
            for _, size, path in sorted(entries):
                try:
                    os.unlink(path)
                except OSError:
                    continue
                removed += 1
                total -= size
                if total <= cap:
                    break
        return removed, total

    def prune_in_background(self) -> threading.Thread:
        """``prune()`` in a daemon thread (a large cache takes a while to list; the UI must not wait for it)."""
        t = threading.Thread(target=self.prune, name="faceqc-thumb-prune", daemon=True)
        t.start()
        return t

    def cache_path(self, path: str) -> Path | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        h = hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{self.side}".encode("utf-8", "surrogatepass"))
        name = h.hexdigest()
        return self.root / name[:2] / (name + ".jpg")

    def load(self, path: str) -> QImage | None:
        """The thumbnail of ``path`` (from the cache, else made and cached); None when the file cannot be read."""
        cp = self.cache_path(path)
        if cp is None:
            return None
        if cp.is_file():
            q = QImage(str(cp))
            if not q.isNull():
                try:
                    os.utime(cp)  # mark as recently used for prune() (atime is not reliable on relatime mounts)
                except OSError:
                    pass
                return q
        try:
            im = make_thumbnail(path, self.side)
        except Exception:
            return None
        try:
            cp.parent.mkdir(parents=True, exist_ok=True)
            tmp = cp.with_suffix(f".{threading.get_ident()}.tmp")
            im.save(tmp, "JPEG", quality=85)
            os.replace(tmp, cp)
        except OSError:
            pass  # a read-only or full cache only costs speed
        return pil_to_qimage(im)


@dataclass
class LoadResult:
    key: object
    kind: str  # "thumb" | "preview"
    image: QImage | None
    full_size: tuple[int, int] | None = None  # previews: the oriented size of the file (boxes are in these pixels)
    error: str | None = None


class ImageLoader(QObject):
    """Loads thumbnails and previews in ``workers`` threads; ``loaded`` delivers batches of LoadResult on the UI
    thread. ``request`` is cheap and idempotent while a key is pending."""

    loaded = Signal(list)
    _wake = Signal()

    def __init__(self, disk: ThumbnailDiskCache | None = None, workers: int = 2, parent: QObject | None = None):
        super().__init__(parent)
        self.disk = disk or ThumbnailDiskCache()
        self._cond = threading.Condition()
        self._thumbs: OrderedDict[object, str] = OrderedDict()  # key -> path; newest last
        self._previews: deque[tuple[object, str, int]] = deque()
        self._results: deque[LoadResult] = deque()
        self._inflight: set = set()  # thumbnails being made now (no longer in _thumbs, not yet in _results)
        self._stop = False
        self.tile_side = THUMB_SIDE  # thumbnails are delivered scaled to this (scaling off the UI thread)
        self._wake.connect(self._drain)
        self._threads = [threading.Thread(target=self._work, name=f"faceqc-thumbs-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    # ---- UI side ---------------------------------------------------------------------------------------------------
    def request(self, key, path: str) -> None:
        with self._cond:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return
            if key in self._inflight:
                return
            self._thumbs[key] = path
            while len(self._thumbs) > MAX_PENDING:
                self._thumbs.popitem(last=False)
            self._cond.notify()

    def is_pending(self, key) -> bool:
        with self._cond:
            return key in self._thumbs or key in self._inflight

    def request_preview(self, key, path: str, max_side: int) -> None:
        with self._cond:
            self._previews.clear()  # only the latest preview matters
            self._previews.append((key, path, max_side))
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._thumbs.clear()
            self._previews.clear()

    def shutdown(self) -> None:
        with self._cond:
            self._stop = True
            self._thumbs.clear()
            self._previews.clear()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=2)

    @Slot()
    def _drain(self) -> None:
        # Bounded batches: the receiver turns each image into a pixmap (~0.1 ms); thousands arriving at once (a warm
        # disk cache while scrolling fast) must not block a frame.
        batch: list[LoadResult] = []
        with self._cond:
            while self._results and len(batch) < 48:
                batch.append(self._results.popleft())
            more = bool(self._results)
        if batch:
            self.loaded.emit(batch)
        if more:
            QTimer.singleShot(5, self._drain)

    # ---- worker side -----------------------------------------------------------------------------------------------
    def _next(self):
        with self._cond:
            while not self._stop and not self._thumbs and not self._previews:
                self._cond.wait()
            if self._stop:
                return None
            if self._previews:
                return ("preview",) + self._previews.popleft()
            key, path = self._thumbs.popitem(last=True)  # newest request first
            # Keep the key visible as pending until its result is queued, so paint doesn't re-request it.
            self._inflight.add(key)
            return ("thumb", key, path, self.disk.side)

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            kind, key, path, side = job
            if kind == "thumb":
                img = self.disk.load(path)
                tile = self.tile_side
                if img is not None and max(img.width(), img.height()) > tile:
                    img = img.scaled(tile, tile, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
                res = LoadResult(key, "thumb", img)
            else:
                try:
                    im, full = _open_oriented(path, side)
                    res = LoadResult(key, "preview", pil_to_qimage(im), full)
                except Exception as e:
                    res = LoadResult(key, "preview", None, None, f"{type(e).__name__}: {e}".splitlines()[0])
            with self._cond:
                if self._stop:
                    return
                self._inflight.discard(key) if kind == "thumb" else None
                first = not self._results
                self._results.append(res)
            if first:
                self._wake.emit()


class PixmapCache:
    """Tile pixmaps in memory, least recently used dropped first, bounded by bytes."""

    def __init__(self, max_bytes: int = 160 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[object, QPixmap] = OrderedDict()
        self._bytes = 0

    def get(self, key) -> QPixmap | None:
        pm = self._items.get(key)
        if pm is not None:
            self._items.move_to_end(key)
        return pm

    def put(self, key, pm: QPixmap) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= _size(old)
        self._items[key] = pm
        self._bytes += _size(pm)
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= _size(dropped)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items


def _size(pm: QPixmap) -> int:
    return pm.width() * pm.height() * 4
