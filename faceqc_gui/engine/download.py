"""Fetching and checking the weight files named in ``registry`` (``faceqc models``, the app's model manager).

A download goes to ``<dest>/<canonical name>.part`` and only reaches the final name through ``os.replace`` after the
sha256 check, so a partial, interrupted or wrong file never sits where the loaders look. An interrupted download keeps
its ``.part`` and the next attempt resumes it with an HTTP Range request.

Three weight files have no published checksum. For those, the first download whose size is plausible records its sha256
in ``known_hashes.json`` (user data dir) and every later download, and ``model_status``, is checked against it.

Hashing a 300 MB file takes about a second, so ``model_status`` caches ``(path, size, mtime_ns) -> sha256`` in
``hash_cache.json`` (user data dir).

Only the standard library talks to the network (urllib): no extra dependency for a once-per-install job.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import http.cookiejar
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

from . import registry
from .errors import DownloadError
from .hashing import sha256_file
from .registry import ModelSpec

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
HTML_LIMIT = 2 * 1024 * 1024  # a confirm page is a few kB; never buffer a mislabelled weight file
MAX_CONFIRM_HOPS = 3
SIZE_TOLERANCE = 0.20  # "plausible size" for files without a published checksum: approx_mb ± 20 %
USER_AGENT = "Mozilla/5.0 (compatible; faceqc model downloader)"

Progress = Callable[[int, "int | None"], None]


class DownloadCancelled(DownloadError):
    """The caller's cancel event was set; the ``.part`` file is kept so the next download resumes."""


# --------------------------------------------------------------------------------------------------------------------
# Small JSON stores in the user data dir

_store_lock = threading.Lock()


def data_dir() -> Path:
    return registry.user_models_dir().parent


def _known_hashes_path() -> Path:
    return data_dir() / "known_hashes.json"


def _hash_cache_path() -> Path:
    return data_dir() / "hash_cache.json"


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: behave as if nothing was stored (it is only a cache / a record)


def _write_json(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write %s: %s", path, e)


def recorded_sha256(key: str) -> str | None:
    """The sha256 recorded on the first download of a model whose checksum is not published (or None)."""
    entry = _read_json(_known_hashes_path()).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    return None


def _record_sha256(key: str, spec: ModelSpec, digest: str, size: int, url: str) -> None:
    with _store_lock:
        data = _read_json(_known_hashes_path())
        data[key] = {
            "file": spec.filename,
            "sha256": digest,
            "size": size,
            "url": url,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_json(_known_hashes_path(), data)


def expected_sha256(key: str) -> tuple[str | None, str | None]:
    """(sha256, source): source is "official" (published), "recorded" (first download) or None (not known yet)."""
    spec = registry.MODELS[key]
    if spec.sha256:
        return spec.sha256.lower(), "official"
    rec = recorded_sha256(key)
    return (rec.lower(), "recorded") if rec else (None, None)


def file_sha256(path: str | os.PathLike, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, cached by (resolved path, size, mtime_ns) so repeated status checks cost nothing."""
    p = Path(path)
    st = p.stat()
    ident = str(p.resolve())
    with _store_lock:
        entry = _read_json(_hash_cache_path()).get(ident)
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    digest = sha256_file(p, progress)
    _cache_sha256(p, digest)
    return digest


def _cache_sha256(path: Path, digest: str) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    with _store_lock:
        data = _read_json(_hash_cache_path())
        data[str(path.resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        # Drop entries of files that are gone so the cache does not grow with every moved models folder.
        data = {k: v for k, v in data.items() if os.path.exists(k)}
        _write_json(_hash_cache_path(), data)


# --------------------------------------------------------------------------------------------------------------------
# Status

MISSING = "missing"
OFFICIAL = "official"  # sha256 equals the published one
RECORDED = "recorded"  # sha256 equals the one recorded at the first download (nothing published)
CUSTOM = "custom"  # sha256 differs from the reference: used as is, reported
UNKNOWN = "unknown"  # no reference sha256 yet (or verify=False)
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ModelStatus:
    key: str
    spec: ModelSpec
    path: Path | None  # the file the loaders would use (first match in the search dirs), None when missing
    size: int | None  # bytes on disk
    sha256: str | None  # of the found file (None when missing, unreadable or verify=False)
    expected_sha256: str | None  # official, else recorded on first download, else None
    hash_source: str | None  # "official" | "recorded" | None
    state: str  # missing | official | recorded | custom | unknown | unreadable
    error: str | None = None  # why the file could not be read (state "unreadable")

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def verified(self) -> bool:
        """The file is the one FaceQC was built and tested with (published hash, or the recorded first download)."""
        return self.state in (OFFICIAL, RECORDED)

    @property
    def custom(self) -> bool:
        return self.state == CUSTOM

    def describe(self) -> str:
        return {
            MISSING: "MISSING",
            OFFICIAL: "ok (official sha256)",
            RECORDED: "ok (matches the sha256 recorded at first download)",
            CUSTOM: "CUSTOM (sha256 differs from the "
                    + ("official file)" if self.hash_source == "official" else "recorded download)"),
            UNKNOWN: "present (no published sha256; not verified)",
            UNREADABLE: f"UNREADABLE ({self.error})",
        }.get(self.state, self.state)


def status_of(key: str, models_dir: str | os.PathLike | None = None, verify: bool = True) -> ModelStatus:
    spec = registry.MODELS[key]
    expected, source = expected_sha256(key)
    path = registry.find_model_file(key, models_dir)
    if path is None:
        return ModelStatus(key, spec, None, None, None, expected, source, MISSING)
    try:
        size = path.stat().st_size
        digest = file_sha256(path) if verify else None
    except OSError as e:
        return ModelStatus(key, spec, path, None, None, expected, source, UNREADABLE, e.strerror or str(e))
    if digest is None or expected is None:
        state = UNKNOWN
    elif digest == expected:
        state = OFFICIAL if source == "official" else RECORDED
    else:
        state = CUSTOM
    return ModelStatus(key, spec, path, size, digest, expected, source, state)


def model_status(models_dir: str | os.PathLike | None = None, verify: bool = True) -> list[ModelStatus]:
    """One entry per registry model, in registry order. ``verify=False`` skips hashing (state "unknown" when found)."""
    return [status_of(key, models_dir, verify) for key in registry.MODELS]


def plausible_size(spec: ModelSpec, size: int) -> bool:
    if spec.size_bytes:
        return size == spec.size_bytes
    approx = spec.approx_mb * 1e6
    return abs(size - approx) <= SIZE_TOLERANCE * approx


# --------------------------------------------------------------------------------------------------------------------
# Download


class _Interrupted(Exception):
    """The body stopped before its announced end (connection cut, reset, timeout): resumable."""

    def __init__(self, reason: str, progressed: bool):
        super().__init__(reason)
        self.progressed = progressed


def download_model(
    key: str,
    dest_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    url: str | None = None,
    timeout: float = 30,
    cancel: threading.Event | None = None,
    retries: int = 3,
    on_message: Callable[[str], None] | None = None,
) -> Path:
    """Downloads ``key``'s weight file to ``dest_dir`` (default: the user models dir) under its canonical name.

    ``progress(bytes_done, bytes_total_or_None)`` is called as data arrives; bytes_done counts resumed bytes and only
    goes down when a server that cannot resume forces a restart from zero. ``url`` overrides the registry's source (mirrors, tests). ``cancel`` is checked between
    chunks. A connection that drops mid-file is resumed up to ``retries`` times. ``on_message`` receives notes for the
    user (hash recorded, download restarted from zero, ...). Always downloads, even when the file is present: callers
    that want to skip an installed file check ``status_of`` first. Raises DownloadError (DownloadCancelled).
    """
    spec = registry.MODELS.get(key)
    if spec is None:
        raise DownloadError(f"Unknown model '{key}'; known models: {', '.join(registry.MODELS)}.")
    dest = Path(dest_dir).expanduser() if dest_dir else registry.user_models_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot create the models folder {dest}: {e.strerror or e}.") from e
    final = dest / spec.filename
    part = dest / (spec.filename + ".part")
    src = url or spec.url
    note = on_message or (lambda msg: log.info("%s", msg))

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    attempt = 0
    resolved = [src]  # after a Drive confirm page: the confirmed URL, where retries resume
    while True:
        try:
            digest, size, complete = _fetch(opener, resolved[0], part, spec, progress, cancel, timeout, note,
                                            resolved)
            break
        except _Interrupted as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt < retries and e.progressed:
                attempt += 1
                note(f"{spec.filename}: {e}; resuming at {have} bytes (retry {attempt} of {retries})")
                continue
            raise DownloadError(
                f"Download of {spec.filename} from {src} was interrupted ({e}) after {have} bytes; "
                f"run the download again to resume it."
            ) from None

    expected, source = expected_sha256(key)
    if expected is not None:
        if digest != expected:
            _unlink(part)
            what = "published" if source == "official" else "recorded at the first download"
            raise DownloadError(
                f"Checksum mismatch for {spec.filename} downloaded from {src}: expected sha256 {expected} "
                f"({what}), got {digest} ({size} bytes). The download was discarded."
            )
    elif plausible_size(spec, size):
        _record_sha256(key, spec, digest, size, src)
        note(f"{spec.filename}: no official sha256 is published; recorded this download's sha256 {digest} "
             f"({size} bytes) in {_known_hashes_path()} and later downloads are checked against it.")
    elif complete:
        # All the bytes the server announced arrived, but the size is not the one expected (our size for this file
        # is an estimate where the authors publish none): installed, never made the reference hash.
        expect = f"{spec.size_bytes} bytes" if spec.size_bytes else f"about {spec.approx_mb:g} MB"
        note(f"{spec.filename}: size {size} bytes differs from the expected {expect}; installed, but its sha256 was "
             f"not recorded as the reference (it may not be the file FaceQC expects).")
    else:
        # Nothing to check it against, the wrong size and no announced length: maybe cut short, maybe another
        # file. It stays a .part (a later run resumes it); it never sits under the name the loaders use.
        expect = f"{spec.size_bytes} bytes" if spec.size_bytes else f"about {spec.approx_mb:g} MB"
        raise DownloadError(
            f"{spec.filename} from {src} is {size} bytes, not the expected {expect}, and no sha256 is known to check "
            f"it: it was not installed. The download is kept as {part} (run the download again to resume it); if "
            f"you know the file is right, rename it to {final.name} yourself."
        )

    if final.is_file():
        # A different file under the final name (custom weights, an old version) is kept aside, never overwritten.
        try:
            same = file_sha256(final) == digest
        except OSError:
            same = False
        if not same:
            aside = final.with_name(f"{final.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(final, aside)
            except OSError as e:
                raise DownloadError(f"Cannot move the existing {final} aside: {e.strerror or e}.") from e
            note(f"{spec.filename}: the file that was there (sha256 differs) was kept as {aside}.")
    try:
        os.replace(part, final)
    except OSError as e:
        raise DownloadError(f"Cannot move the finished download to {final}: {e.strerror or e}.") from e
    _cache_sha256(final, digest)
    return final


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def _fetch(opener, url, part: Path, spec: ModelSpec, progress, cancel, timeout, note,
           resolved: list | None = None) -> tuple[str, int, bool]:
    """Gets the body of ``url`` (following Google Drive's confirm pages) into ``part``; returns (sha256, size).
    ``resolved[0]`` is set to the last confirmed URL, so that a retry after a dropped connection resumes there."""
    resolved = resolved if resolved is not None else [url]
    offset = part.stat().st_size if part.is_file() else 0
    hops = restarts = 0
    while True:
        if restarts > 2:
            raise DownloadError(f"Download of {spec.filename} failed: {url} answers range requests inconsistently.")
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"Download of {spec.filename} cancelled; the partial file is kept for resuming.")
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = _open(opener, urllib.request.Request(url, headers=headers), timeout, spec)
        if resp is None:  # 416: the .part does not fit the file on the server (complete, or from another file)
            _unlink(part)
            offset = 0
            restarts += 1
            continue
        with resp:
            status = resp.status
            ctype = resp.headers.get_content_type()
            start = 0
            total = None
            if status == 206:
                start, total = _content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    _unlink(part)
                    offset = 0
                    restarts += 1
                    continue
            length = resp.headers.get("Content-Length")
            if total is None and length is not None and length.isdigit():
                total = start + int(length)
            try:
                first = resp.read1(CHUNK) if ctype != "text/html" else b""
            except (OSError, http.client.HTTPException) as e:
                raise _Interrupted(_reason(e), False) from None
            if ctype == "text/html" or (start == 0 and _looks_like_html(first)):
                try:
                    body = first + resp.read(HTML_LIMIT)
                except (OSError, http.client.HTTPException):
                    body = first  # a broken error page is still an error page
                nxt = _drive_confirm_url(body, resp.geturl(), resp.headers)
                if nxt is not None and hops < MAX_CONFIRM_HOPS:
                    # Google Drive answers a ranged request with its confirm page (200, HTML): the offset stays,
                    # and the confirmed URL is asked for the rest; retries start from it too (`resolved`).
                    hops += 1
                    url = resolved[0] = nxt
                    continue
                raise DownloadError(_html_error(body, resp.geturl(), spec))
            if status != 206 and offset:  # a real file body from the start: this server cannot resume
                note(f"{spec.filename}: the server does not support resuming; starting again from zero.")
                offset = 0
            return _stream(resp, first, part, start, total, spec, progress, cancel)


def _open(opener, req: urllib.request.Request, timeout, spec: ModelSpec):
    url = req.full_url
    try:
        return opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and req.has_header("Range"):
            return None
        hint = ""
        if e.code in (403, 404, 410):
            hint = (f" The file may have moved or be rate-limited; download {spec.filename} by hand (see models/"
                    f"README.md) and put it in a models folder (`faceqc models path`).")
        raise DownloadError(f"Download of {spec.filename} failed: HTTP {e.code} {e.reason} from {url}.{hint}") from None
    except urllib.error.URLError as e:
        raise DownloadError(_network_message(e.reason, url, spec)) from None
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(_network_message(e, url, spec)) from None


def _network_message(reason, url: str, spec: ModelSpec) -> str:
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(reason, socket.gaierror):
        why = f"cannot resolve {host}"
    elif isinstance(reason, (ConnectionRefusedError, ConnectionResetError)):
        why = f"connection to {host} refused"
    elif isinstance(reason, (socket.timeout, TimeoutError)):
        why = f"{host} did not answer in time"
    elif isinstance(reason, ssl.SSLError):
        return (f"Download of {spec.filename} from {url} failed: secure connection error ({reason}); check the "
                f"system's certificates or proxy.")
    else:
        why = f"cannot reach {host} ({reason})"
    return f"Download of {spec.filename} failed: {why} — no internet connection? ({url})"


def _reason(e: BaseException) -> str:
    if isinstance(e, http.client.IncompleteRead):
        return "connection closed early"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(e) or type(e).__name__


def _content_range(value: str | None) -> tuple[int, int | None]:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not m:
        return -1, None  # unusable: the caller restarts from zero
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _stream(resp, first: bytes, part: Path, start: int, total, spec, progress, cancel) -> tuple[str, int, bool]:
    """Writes the body to ``part``; returns (sha256, size, whether the server announced the size we got)."""
    h = hashlib.sha256()
    if start:
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    done = start
    try:
        f = open(part, "ab" if start else "wb")
    except OSError as e:
        raise DownloadError(f"Cannot write {part}: {e.strerror or e}.") from e
    with f:
        if progress is not None:
            progress(done, total)
        chunk = first
        while True:
            if chunk:
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if total is not None and done >= total:
                break
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(
                    f"Download of {spec.filename} cancelled; the partial file is kept for resuming.")
            try:
                chunk = resp.read1(CHUNK)
            except (OSError, http.client.HTTPException) as e:
                f.flush()
                raise _Interrupted(_reason(e), done > start) from None
            if not chunk:
                break
        f.flush()
        os.fsync(f.fileno())
    if total is not None and done != total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes", done > start)
    return h.hexdigest(), done, total is not None


def _looks_like_html(head: bytes) -> bool:
    s = head[:512].lstrip().lower()
    return s.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


class _PageParser(HTMLParser):
    """Collects the forms (action + hidden inputs) and links of a page; enough for Drive's confirm pages."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None
        self.error_text: list[str] = []
        self._in_error = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = {"id": a.get("id", ""), "action": a.get("action", ""), "inputs": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name") and a.get("type", "").lower() == "hidden":
            self._form["inputs"].append((a["name"], a.get("value", "")))
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif "uc-error-subcaption" in a.get("class", "") or "uc-warning-subcaption" in a.get("class", ""):
            self._in_error = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        if tag in ("p", "div", "span"):
            self._in_error = False

    def handle_data(self, data):
        if self._in_error and data.strip():
            self.error_text.append(data.strip())


def _parse(body: bytes) -> _PageParser:
    p = _PageParser()
    try:
        p.feed(body.decode("utf-8", "replace"))
        p.close()
    except Exception:  # noqa: BLE001 - html.parser on hostile input: use whatever it collected
        pass
    return p


def _drive_confirm_url(body: bytes, page_url: str, headers) -> str | None:
    """The URL that Google Drive's "can't scan this file for viruses" page leads to, or None for any other page."""
    page = _parse(body)
    # Newer Drive: <form id="download-form" action="https://drive.usercontent.google.com/download"> + hidden inputs.
    for form in page.forms:
        names = {n for n, _ in form["inputs"]}
        if form["id"] == "download-form" or ("confirm" in names and "id" in names):
            action = urllib.parse.urljoin(page_url, html.unescape(form["action"]) or page_url)
            parts = urllib.parse.urlsplit(action)
            query = urllib.parse.parse_qsl(parts.query) + form["inputs"]
            return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    # Older Drive: a link "/uc?export=download&confirm=TOKEN&id=...".
    for href in page.links:
        if "confirm=" in href and "download" in href:
            return urllib.parse.urljoin(page_url, html.unescape(href))
    text = body.decode("utf-8", "replace")
    m = re.search(r'"downloadUrl":"([^"]+)"', text)
    if m:
        return m.group(1).replace("\\u003d", "=").replace("\\u0026", "&")
    # Oldest Drive: the token only in a cookie "download_warning_<...>=TOKEN".
    for cookie in headers.get_all("Set-Cookie") or []:
        c = re.match(r"\s*download_warning[^=]*=([^;]+)", cookie)
        if c:
            parts = urllib.parse.urlsplit(page_url)
            query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "confirm"]
            query.append(("confirm", c.group(1)))
            return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return None


def _html_error(body: bytes, url: str, spec: ModelSpec) -> str:
    page = _parse(body)
    detail = " ".join(page.error_text)
    text = body.decode("utf-8", "replace")
    if not detail and "Too many users have viewed or downloaded this file" in text:
        detail = "Google Drive says too many users have downloaded this file recently (quota exceeded)"
    detail = f" ({detail[:300]})" if detail else ""
    return (f"Download of {spec.filename} failed: {url} returned a web page instead of the weight file{detail}. "
            f"Nothing was saved. Try again later, or download it by hand in a browser (see models/README.md) and put "
            f"it in a models folder (`faceqc models path`).")
