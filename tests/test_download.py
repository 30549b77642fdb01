"""Weight downloads against a real HTTP server on 127.0.0.1 (no internet): resume, checksums, Drive pages, errors."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from faceqc_gui.engine import download, registry
from faceqc_gui.engine.errors import DownloadError

SIZE = 1_000_003  # several CHUNKs, not a multiple of one


def payload(seed: int, n: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeServer:
    """Serves ``files[name]`` under /f/<name> and emulates the failure modes a weight download meets."""

    TOKEN = "tok-4711"
    UUID = "8d3c-uuid"

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}  # name -> bytes sent before the connection is dropped (used once)
        self.stall_once: dict[str, int] = {}  # name -> bytes sent before the server goes silent (used once)
        self.ignore_range = False
        self.no_length = False  # send files without Content-Length (the body ends when the connection closes)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(parts.query))
                server.requests.append({"path": parts.path, "query": q, "range": self.headers.get("Range"),
                                        "cookie": self.headers.get("Cookie")})
                route = parts.path.split("/")
                if route[1] == "f":
                    return self.send_file(route[2])
                if route[1] == "status":
                    return self.send_error(int(route[2]))
                if route[1] == "html":  # a sign-in page where a binary was expected
                    return self.send_body(b"<html><body><h1>Sign in</h1></body></html>", "text/html")
                if route[1] == "html-as-binary":  # mislabelled: only the content reveals it
                    return self.send_body(b"\n  <!DOCTYPE html><html><body>Not found</body></html>",
                                          "application/octet-stream")
                if route[1] == "quota":
                    return self.send_body(
                        b'<html><body><p class="uc-error-subcaption">Too many users have viewed or downloaded this '
                        b"file recently.</p></body></html>", "text/html")
                if route[1] == "uc":  # old Drive: warning page with a confirm link and a download_warning cookie
                    if q.get("confirm") == server.TOKEN:
                        return self.send_file(q["id"])
                    link = f'/uc?export=download&amp;confirm={server.TOKEN}&amp;id={q["id"]}'.encode()
                    return self.send_body(
                        b"<html><body>Google Drive can't scan this file for viruses. <a id=\"uc-download-link\" "
                        b'href="' + link + b'">Download anyway</a></body></html>', "text/html",
                        cookie=f"download_warning_13058876669334088843_{q['id']}={server.TOKEN}; Path=/")
                if route[1] == "uc-cookie":  # oldest Drive: the token only in the cookie
                    if q.get("confirm") == server.TOKEN:
                        return self.send_file(q["id"])
                    return self.send_body(b"<html><body>Virus scan warning</body></html>", "text/html",
                                          cookie=f"download_warning_1_{q['id']}={server.TOKEN}; Path=/")
                if route[1] == "new-uc":  # newer Drive: a form to drive.usercontent.google.com/download
                    action = f"http://127.0.0.1:{server.port}/download"
                    form = (f'<form id="download-form" action="{action}" method="get">'
                            f'<input type="submit" id="uc-download-link" value="Download anyway"/>'
                            f'<input type="hidden" name="id" value="{q["id"]}">'
                            f'<input type="hidden" name="export" value="download">'
                            f'<input type="hidden" name="confirm" value="t">'
                            f'<input type="hidden" name="uuid" value="{server.UUID}"></form>')
                    return self.send_body(f"<!DOCTYPE html><html><body>{form}</body></html>".encode(), "text/html")
                if route[1] == "download":
                    if q.get("confirm") == "t" and q.get("uuid") == server.UUID and q.get("export") == "download":
                        return self.send_file(q["id"])
                    return self.send_body(b"<html><body>Bad request</body></html>", "text/html", status=400)
                self.send_error(404)

            def send_body(self, body: bytes, ctype: str, status: int = 200, cookie: str | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if cookie:
                    self.send_header("Set-Cookie", cookie)
                self.end_headers()
                self.wfile.write(body)

            def send_file(self, name: str):
                data = server.files.get(name)
                if data is None:
                    return self.send_error(404)
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if server.no_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut_once:
                    self.wfile.write(body[: server.cut_once.pop(name)])
                    self.close_connection = True
                    return
                if name in server.stall_once:
                    self.wfile.write(body[: server.stall_once.pop(name)])
                    time.sleep(1.5)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ranged(self) -> list[str]:
        return [r["range"] for r in self.requests if r["range"]]


@pytest.fixture
def http_server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = FakeServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def toy_spec(data: bytes | None, url: str = "http://127.0.0.1:9/unused", **kw) -> registry.ModelSpec:
    base = dict(key="toy", filenames=("toy_weights.pth", "toy_alt.pth"), title="Toy model", provides="tests",
                url=url, sha256=sha(data) if data is not None else None, size_bytes=None,
                approx_mb=SIZE / 1e6, licence="MIT")
    base.update(kw)
    return registry.ModelSpec(**base)


@pytest.fixture
def toy(monkeypatch, http_server):
    """A registry entry "toy" whose official sha256 is that of the served payload."""
    data = payload(1)
    http_server.files["toy.bin"] = data
    monkeypatch.setitem(registry.MODELS, "toy", toy_spec(data, url=http_server.url("/f/toy.bin")))
    return data


def listing(d) -> list[str]:
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_fresh_download_progress_is_monotonic_and_final_name_appears_only_at_the_end(toy, tmp_path):
    final = tmp_path / "toy_weights.pth"
    calls = []

    def progress(done, total):
        # Atomicity: while bytes are arriving, the final name must not exist (loaders would pick up half a file).
        assert not final.exists()
        assert (tmp_path / "toy_weights.pth.part").exists()
        calls.append((done, total))

    path = download.download_model("toy", dest_dir=tmp_path, progress=progress)
    assert path == final
    assert final.read_bytes() == toy
    assert listing(tmp_path) == ["toy_weights.pth"]  # no .part left behind
    dones = [d for d, _ in calls]
    assert len(calls) >= 4
    assert dones == sorted(dones)
    assert calls[-1] == (SIZE, SIZE)
    assert all(t == SIZE for _, t in calls)


def test_default_destination_is_the_user_models_dir(toy):
    path = download.download_model("toy")
    assert path == registry.user_models_dir() / "toy_weights.pth"
    assert path.read_bytes() == toy


def test_cut_connection_is_resumed_with_a_range_request(toy, http_server, tmp_path):
    http_server.cut_once["toy.bin"] = 300_000
    notes = []
    path = download.download_model("toy", dest_dir=tmp_path, on_message=notes.append)
    assert sha(path.read_bytes()) == sha(toy)
    assert http_server.ranged() == ["bytes=300000-"]
    assert any("resuming" in n for n in notes)


def test_interrupted_download_keeps_part_and_next_call_resumes(toy, http_server, tmp_path):
    http_server.cut_once["toy.bin"] = 400_000
    with pytest.raises(DownloadError, match="interrupted.*resume"):
        download.download_model("toy", dest_dir=tmp_path, retries=0)
    assert listing(tmp_path) == ["toy_weights.pth.part"]
    assert (tmp_path / "toy_weights.pth.part").stat().st_size == 400_000

    calls = []
    path = download.download_model("toy", dest_dir=tmp_path, progress=lambda d, t: calls.append(d))
    assert path.read_bytes() == toy
    assert http_server.ranged() == ["bytes=400000-"]
    assert calls[0] == 400_000  # progress starts where the resumed bytes end
    assert listing(tmp_path) == ["toy_weights.pth"]


def test_server_ignoring_range_restarts_cleanly(toy, http_server, tmp_path):
    # A stale .part with bytes that are not the file's prefix: appending to it would corrupt the result.
    (tmp_path / "toy_weights.pth.part").write_bytes(b"\0" * 5000)
    http_server.ignore_range = True
    notes = []
    path = download.download_model("toy", dest_dir=tmp_path, on_message=notes.append)
    assert http_server.ranged() == ["bytes=5000-"]
    assert path.read_bytes() == toy
    assert any("starting again from zero" in n for n in notes)


def test_complete_part_rejected_by_server_with_416_is_downloaded_again(toy, tmp_path):
    (tmp_path / "toy_weights.pth.part").write_bytes(toy)  # e.g. a crash between the last byte and the rename
    path = download.download_model("toy", dest_dir=tmp_path)
    assert path.read_bytes() == toy


def test_bad_checksum_leaves_neither_final_file_nor_part(monkeypatch, http_server, tmp_path):
    served = payload(2)
    http_server.files["toy.bin"] = served
    wanted = payload(3)
    monkeypatch.setitem(registry.MODELS, "toy", toy_spec(wanted, url=http_server.url("/f/toy.bin")))
    with pytest.raises(DownloadError) as e:
        download.download_model("toy", dest_dir=tmp_path)
    assert sha(wanted) in str(e.value) and sha(served) in str(e.value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("code", [404, 500])
def test_http_error_names_status_and_url(toy, http_server, tmp_path, code):
    url = http_server.url(f"/status/{code}")
    with pytest.raises(DownloadError) as e:
        download.download_model("toy", dest_dir=tmp_path, url=url)
    assert str(code) in str(e.value) and url in str(e.value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("route", ["uc", "uc-cookie", "new-uc"])
def test_google_drive_virus_scan_page_is_followed(toy, http_server, tmp_path, route):
    path = download.download_model("toy", dest_dir=tmp_path, url=http_server.url(f"/{route}?export=download&id=toy.bin"))
    assert path.read_bytes() == toy
    second = http_server.requests[-1]
    if route == "new-uc":
        assert second["path"] == "/download" and second["query"]["uuid"] == FakeServer.UUID
    else:
        assert second["query"].get("confirm") == FakeServer.TOKEN


@pytest.mark.parametrize("route", ["uc", "new-uc"])
def test_google_drive_download_resumes_through_the_confirm_page(toy, http_server, tmp_path, route):
    # Drive answers the ranged request with its confirm page (200, HTML): the offset must survive the confirm hop,
    # both for the automatic retry after a cut connection and for a later run that finds the .part.
    http_server.cut_once["toy.bin"] = 600_000
    notes = []
    url = http_server.url(f"/{route}?export=download&id=toy.bin")
    path = download.download_model("toy", dest_dir=tmp_path, url=url, on_message=notes.append)
    assert path.read_bytes() == toy
    file_requests = [r["range"] for r in http_server.requests if r["query"].get("confirm")]  # the confirmed URL
    assert file_requests == [None, "bytes=600000-"]  # the retry resumed there instead of restarting
    assert not any("starting again from zero" in n for n in notes)

    os.remove(path)
    (tmp_path / "toy_weights.pth.part").write_bytes(toy[:700_000])  # a .part left by an earlier run
    http_server.requests.clear()
    path = download.download_model("toy", dest_dir=tmp_path, url=url, on_message=notes.append)
    assert path.read_bytes() == toy
    assert [r["range"] for r in http_server.requests] == ["bytes=700000-", "bytes=700000-"]
    assert not any("starting again from zero" in n for n in notes)


@pytest.mark.parametrize("route, detail", [("/html", None), ("/html-as-binary", None),
                                           ("/quota", "Too many users")])
def test_web_page_instead_of_binary_is_an_error_and_nothing_is_saved(toy, http_server, tmp_path, route, detail):
    with pytest.raises(DownloadError, match="web page instead of the weight file") as e:
        download.download_model("toy", dest_dir=tmp_path, url=http_server.url(route))
    if detail:
        assert detail in str(e.value)
    assert listing(tmp_path) == []


def test_unpublished_hash_is_recorded_on_first_download_and_enforced_later(monkeypatch, http_server, tmp_path):
    first = payload(4)
    http_server.files["toy.bin"] = first
    monkeypatch.setitem(registry.MODELS, "toy", toy_spec(None, url=http_server.url("/f/toy.bin")))
    assert download.expected_sha256("toy") == (None, None)
    notes = []
    download.download_model("toy", dest_dir=tmp_path / "a", on_message=notes.append)
    assert any("recorded" in n and sha(first) in n for n in notes)
    assert download.expected_sha256("toy") == (sha(first), "recorded")
    stored = json.loads((download.data_dir() / "known_hashes.json").read_text())
    assert stored["toy"]["sha256"] == sha(first)

    http_server.files["toy.bin"] = payload(5)  # same size, different bytes: the source changed under us
    with pytest.raises(DownloadError, match="recorded at the first download"):
        download.download_model("toy", dest_dir=tmp_path / "b")
    assert listing(tmp_path / "b") == []


def test_implausible_size_without_a_hash_or_length_is_not_installed_and_stays_a_part(monkeypatch, http_server,
                                                                                      tmp_path):
    # Nothing to verify it against, the wrong size, and no Content-Length to tell a complete file from one cut short:
    # it must not sit under the name the loaders use, and it must not become the recorded reference.
    http_server.files["toy.bin"] = payload(6)
    http_server.no_length = True
    monkeypatch.setitem(registry.MODELS, "toy", toy_spec(None, url=http_server.url("/f/toy.bin"), approx_mb=50))
    with pytest.raises(DownloadError, match="not installed") as e:
        download.download_model("toy", dest_dir=tmp_path)
    assert "toy_weights.pth.part" in str(e.value) and "rename it to toy_weights.pth" in str(e.value)
    assert listing(tmp_path) == ["toy_weights.pth.part"]
    assert download.expected_sha256("toy") == (None, None)


def test_implausible_size_complete_as_announced_is_installed_but_not_recorded(monkeypatch, http_server, tmp_path):
    # The server announced the length and all of it arrived: our size for this file is only an estimate, so the file
    # is installed (with a note), but its hash never becomes the reference.
    http_server.files["toy.bin"] = payload(6)
    monkeypatch.setitem(registry.MODELS, "toy", toy_spec(None, url=http_server.url("/f/toy.bin"), approx_mb=50))
    notes = []
    path = download.download_model("toy", dest_dir=tmp_path, on_message=notes.append)
    assert path.read_bytes() == payload(6) and listing(tmp_path) == ["toy_weights.pth"]
    assert download.expected_sha256("toy") == (None, None)
    assert any("installed, but its sha256 was not recorded" in n for n in notes)


def test_connection_refused_is_reported_as_no_connection(toy, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DownloadError, match="no internet connection"):
        download.download_model("toy", dest_dir=tmp_path, url=f"http://127.0.0.1:{port}/x")
    assert listing(tmp_path) == []


def test_dns_failure_is_reported_as_no_connection(toy, tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError, match="cannot resolve example.invalid.*no internet connection"):
        download.download_model("toy", dest_dir=tmp_path, url="http://example.invalid/w.pth")


def test_stalled_server_times_out_and_keeps_part(toy, http_server, tmp_path):
    http_server.stall_once["toy.bin"] = 200_000
    with pytest.raises(DownloadError, match="timed out"):
        download.download_model("toy", dest_dir=tmp_path, timeout=0.3, retries=0)
    assert (tmp_path / "toy_weights.pth.part").stat().st_size == 200_000


def test_cancel_keeps_part_and_a_later_download_resumes(toy, http_server, tmp_path):
    cancel = threading.Event()

    def progress(done, total):
        if done > 0:
            cancel.set()

    with pytest.raises(download.DownloadCancelled, match="cancelled"):
        download.download_model("toy", dest_dir=tmp_path, progress=progress, cancel=cancel)
    part = tmp_path / "toy_weights.pth.part"
    kept = part.stat().st_size
    assert 0 < kept < SIZE
    assert not (tmp_path / "toy_weights.pth").exists()

    path = download.download_model("toy", dest_dir=tmp_path)
    assert path.read_bytes() == toy
    assert http_server.ranged() == [f"bytes={kept}-"]


def test_unknown_key_is_a_download_error():
    with pytest.raises(DownloadError, match="Unknown model"):
        download.download_model("nope")


# ----------------------------------------------------------------------------------------------------- model_status

def test_model_status_states(monkeypatch, tmp_path):
    official, other, recorded = b"official bytes", b"someone else's fine-tune", b"first download"
    specs = {
        "a": toy_spec(official, key="a", filenames=("a.pth",)),
        "b": toy_spec(official, key="b", filenames=("b.pth",)),
        "c": toy_spec(None, key="c", filenames=("c.pth", "c_alt.pth")),
        "d": toy_spec(None, key="d", filenames=("d.pth",)),
        "e": toy_spec(official, key="e", filenames=("e.pth",)),
    }
    monkeypatch.setattr(registry, "MODELS", specs)
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "w"
    d.mkdir()
    (d / "a.pth").write_bytes(official)
    (d / "b.pth").write_bytes(other)
    (d / "c_alt.pth").write_bytes(recorded)  # the second accepted name counts
    (d / "d.pth").write_bytes(b"x")
    download._record_sha256("c", specs["c"], sha(recorded), len(recorded), "http://example/")

    st = {s.key: s for s in download.model_status(d)}
    assert [s.key for s in download.model_status(d)] == ["a", "b", "c", "d", "e"]
    assert st["a"].state == "official" and st["a"].verified and st["a"].path == d / "a.pth"
    assert st["a"].size == len(official) and st["a"].sha256 == sha(official)
    assert st["b"].state == "custom" and st["b"].custom and not st["b"].verified
    assert st["c"].state == "recorded" and st["c"].verified and st["c"].path == d / "c_alt.pth"
    assert st["d"].state == "unknown" and st["d"].expected_sha256 is None and not st["d"].verified
    assert st["e"].state == "missing" and st["e"].path is None and not st["e"].found


def test_hash_cache_avoids_rehashing_and_notices_changed_files(monkeypatch, tmp_path):
    data = b"weights v1"
    monkeypatch.setattr(registry, "MODELS", {"a": toy_spec(data, key="a", filenames=("a.pth",))})
    hashed = []
    real = download.sha256_file
    monkeypatch.setattr(download, "sha256_file", lambda p, progress=None: hashed.append(p) or real(p, progress))
    f = tmp_path / "a.pth"
    f.write_bytes(data)
    assert download.status_of("a", tmp_path).state == "official"
    assert download.status_of("a", tmp_path).state == "official"
    assert len(hashed) == 1

    st = f.stat()
    f.write_bytes(b"weights v2")  # same size: only the mtime tells the cache it is stale
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert download.status_of("a", tmp_path).state == "custom"
    assert len(hashed) == 2


def test_status_survives_a_damaged_cache_file(monkeypatch, tmp_path):
    data = b"w"
    monkeypatch.setattr(registry, "MODELS", {"a": toy_spec(data, key="a", filenames=("a.pth",))})
    (tmp_path / "a.pth").write_bytes(data)
    download.data_dir().mkdir(parents=True, exist_ok=True)
    (download.data_dir() / "hash_cache.json").write_text("{not json")
    (download.data_dir() / "known_hashes.json").write_text("[1, 2]")
    assert download.status_of("a", tmp_path).state == "official"


def test_status_reports_unreadable_file_without_raising(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "MODELS", {"a": toy_spec(b"w", key="a", filenames=("a.pth",))})
    (tmp_path / "a.pth").write_bytes(b"w")

    def denied(path, progress=None):  # chmod 000 does not stop root, so fail the read itself
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(download, "sha256_file", denied)
    st = download.status_of("a", tmp_path)
    assert st.state == "unreadable" and "Permission denied" in st.error and not st.verified


def test_spec_sizes_make_real_downloads_plausible():
    # The recorded-hash rule must accept a file of the size the registry announces (and reject a 2 kB error page).
    for spec in registry.MODELS.values():
        exact = spec.size_bytes or int(spec.approx_mb * 1e6)
        assert download.plausible_size(spec, exact)
        assert not download.plausible_size(spec, 2048)
    spec = registry.MODELS["detector"]
    assert not download.plausible_size(spec, spec.size_bytes + 1)
