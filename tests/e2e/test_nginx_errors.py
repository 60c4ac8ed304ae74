"""Every error Nginx produces itself is problem+json with the right status, over raw sockets;
per-address connection and auth-route limits hold; a flood of slow bodies from one address
does not shut out other clients.

The repo's nginx.conf runs with its ports and paths rewritten, three timeouts shortened to
2 s, and three test-only locations (a `return 500`, a `return 503`, a body temp directory the
workers cannot open) for errors that cannot otherwise be provoked on purpose. The upstream is a
small HTTP server on a real socket that can close without answering or answer late.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from config import ROOT
from taskapi.runtime import devserver
from tests.servers import wait_http

TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
          414: "URI Too Long", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
          500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
          503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

STUB = textwrap.dedent('''
    import json, socket, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args): pass
        def handle_any(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if url.path.endswith("/close"):
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if url.path.endswith("/sleep"):
                time.sleep(float(parse_qs(url.query).get("s", ["5"])[0]))
            body = json.dumps({"ok": True, "headers": dict(self.headers.items())}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                try:
                    self.wfile.write(body)
                except OSError:
                    pass
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Upstream).serve_forever()
''')


class Resp:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, sep, rest = raw.partition(b"\r\n\r\n")
        self.status, self.headers, self.body = None, {}, b""
        if sep and head.startswith(b"HTTP/"):
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                key, _, value = line.partition(":")
                self.headers[key.strip().lower()] = value.strip()
            self.body = rest[:int(self.headers["content-length"])] if "content-length" in self.headers else rest

    def complete(self) -> bool:
        return self.status is not None and "content-length" in self.headers and \
            len(self.body) >= int(self.headers["content-length"])

    def __repr__(self) -> str:
        return f"{self.status} {self.headers.get('content-type')} {self.body[:100]!r}"


def send(data: bytes, port: int, *, source: str | None = None, timeout: float = 10,
         chunks: list[bytes] | None = None) -> Resp:
    """One raw request (then optional chunks); read until the response is complete or closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    try:
        sock.sendall(data)
        for chunk in chunks or ():
            try:
                sock.sendall(chunk)
            except OSError:  # Nginx answered and closed early
                break
        raw = b""
        while not Resp(raw).complete():
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                data = b""
            if not data:
                break
            raw += data
        return Resp(raw)
    finally:
        sock.close()


def req(line: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    return line + b"\r\nHost: t\r\n" + headers + b"\r\n" + body


CHUNK = b"x" * 8192
MANY_HEADERS = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 7000) for i in range(5))
ERRORS = [  # id, raw request, status Nginx must answer, send() options
    ("nul-in-path", req(b"GET /%00 HTTP/1.1"), 400, {}),
    ("dotdot-above-root", req(b"GET /../x HTTP/1.1"), 400, {}),
    ("lowercase-method", req(b"get / HTTP/1.1"), 400, {}),
    ("tls-bytes", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, {}),
    ("garbage-request-line", b"HELLO WORLD\r\n\r\n", 400, {}),
    ("space-in-uri", req(b"GET /a b HTTP/1.1"), 400, {}),
    ("nul-in-header-name", req(b"GET / HTTP/1.1", b"X-Bad\x00: v\r\n"), 400, {}),
    ("nul-in-header-value", req(b"GET / HTTP/1.1", b"X-Bad: a\x00b\r\n"), 400, {}),
    ("space-in-header-name", req(b"GET / HTTP/1.1", b"Bad Name: v\r\n"), 400, {}),
    ("obs-fold", req(b"GET / HTTP/1.1", b"X-A: 1\r\n  folded\r\n"), 400, {}),
    ("content-length-abc", req(b"POST / HTTP/1.1", b"Content-Length: abc\r\n"), 400, {}),
    ("two-content-lengths", req(b"POST / HTTP/1.1", b"Content-Length: 1\r\nContent-Length: 1\r\n", b"x"), 400, {}),
    ("length-and-chunked", req(b"POST / HTTP/1.1", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                               b"0\r\n\r\n"), 400, {}),
    ("chunked-on-http-1.0", req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, {}),
    ("bad-chunk-size", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"zz\r\n\r\n"), 400, {}),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400, {}),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, {}),
    ("host-with-slash", b"GET / HTTP/1.1\r\nHost: ex/ample\r\n\r\n", 400, {}),
    ("connect-authority", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400, {}),
    ("connect-path", req(b"CONNECT / HTTP/1.1"), 405, {}),
    ("trace", req(b"TRACE / HTTP/1.1"), 405, {}),
    ("unknown-method", req(b"FOO / HTTP/1.1"), 405, {}),
    ("webdav", req(b"PROPFIND /api/v1/tasks HTTP/1.1"), 405, {}),
    ("body-over-limit", req(b"POST /api/v1/tasks HTTP/1.1", b"Content-Length: 70000\r\n"), 413, {}),
    ("chunked-over-limit", req(b"POST /api/v1/tasks HTTP/1.1", b"Transfer-Encoding: chunked\r\n"), 413,
     {"chunks": [b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)] * 10 + [b"0\r\n\r\n"]}),
    ("uri-too-long", req(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 414, {}),
    ("one-huge-header", req(b"GET / HTTP/1.1", b"X-Big: " + b"a" * 9000 + b"\r\n"), 431, {}),
    ("headers-too-large", req(b"GET / HTTP/1.1", MANY_HEADERS), 431, {}),
    ("transfer-encoding-gzip", req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip\r\n"), 501, {}),
    ("http-2.0-line", req(b"GET / HTTP/2.0"), 505, {}),
    ("http-3.1-line", req(b"GET / HTTP/3.1"), 505, {}),
    ("nginx-500", req(b"GET /__test/500 HTTP/1.1"), 500, {}),
    ("nginx-503", req(b"GET /__test/503 HTTP/1.1"), 503, {}),
    ("upstream-closes", req(b"GET /close HTTP/1.1"), 502, {}),
    ("upstream-too-slow", req(b"GET /sleep?s=4 HTTP/1.1"), 504, {"timeout": 15}),
    ("metrics", req(b"GET /metrics HTTP/1.1"), 404, {}),
    ("metrics-double-slash", req(b"GET //metrics HTTP/1.1"), 404, {}),
    ("metrics-escaped", req(b"GET /%6Detrics HTTP/1.1"), 404, {}),
    ("internal-error-uri", req(b"GET /__problem/400 HTTP/1.1"), 404, {}),
]


def assert_problem(resp: Resp, status: int, request_id: str | None = None) -> None:
    assert resp.status == status, resp
    assert resp.headers.get("content-type") == "application/problem+json", resp
    body = json.loads(resp.body)
    assert (body["type"], body["title"], body["status"]) == ("about:blank", TITLES[status], status), body
    assert body["detail"] and body["request_id"] == resp.headers["x-request-id"], resp
    if request_id:
        assert resp.headers["x-request-id"] == request_id
    if status == 405:
        assert resp.headers["allow"] == ALLOW
    if status in (429, 502, 503, 504):
        assert resp.headers["retry-after"].isdigit()


def render(workdir: Path, port: int, upstream: int) -> Path:
    text = (ROOT / "nginx.conf").read_text()
    rewrites = [
        (r"(?m)^(\s*)listen\s+80\b[^;]*;", rf"\1listen 127.0.0.1:{port} default_server;"),
        (r"server\s+(auth|tasks):8000\b[^;]*", f"server 127.0.0.1:{upstream}"),  # both upstreams: the stub
        (r"(?m)^pid\s+[^;]+;", f"pid {workdir}/nginx.pid;"),
        (r"(?m)^error_log\s+\S+\s+\w+;", f"error_log {workdir}/error.log info;"),
        (r"access_log\s+/var/log/nginx/access.log", f"access_log {workdir}/access.log"),
        (r"/var/cache/nginx/", f"{workdir}/"),
        (r"client_body_timeout\s+\d+s;", "client_body_timeout 2s;"),
        (r"client_header_timeout\s+\d+s;", "client_header_timeout 2s;"),
        (r"proxy_read_timeout\s+\d+s;", "proxy_read_timeout 2s;"),
        (r"(?m)^(\s*)server_name _;", rf"\1server_name _;\n\1location = /__test/500 {{ return 500; }}"
                                      rf"\n\1location = /__test/503 {{ return 503; }}"
                                      rf"\n\1location = /__test/unwritable {{ client_body_temp_path {workdir}/locked/t;"
                                      r" client_body_buffer_size 1k; proxy_pass http://taskapi_tasks; }"),
    ]
    for pattern, replacement in rewrites:
        text, count = re.subn(pattern, replacement, text)
        assert count >= 1, f"nginx.conf no longer matches {pattern!r}"
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    return conf


@pytest.fixture(scope="module")
def edge():
    """Nginx with the repo's config in front of the stub upstream; yields (port, upstream process)."""
    # Nginx workers run unprivileged: they must reach the temp directories (pytest's own
    # tmp tree is private to root), ...
    workdir = Path(tempfile.mkdtemp(prefix="taskapi-nginx-errors-"))
    workdir.chmod(0o755)
    (workdir / "locked").mkdir(mode=0o700)  # but not this one (a genuine 500)
    port, upstream_port = devserver.free_port(), devserver.free_port()
    conf = render(workdir, port, upstream_port)
    check = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    upstream = subprocess.Popen([sys.executable, "-c", STUB, str(upstream_port)])
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", nginx)
        yield {"port": port, "upstream": upstream, "workdir": workdir}
    finally:
        for process in (nginx, upstream):
            devserver.stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("data, status, options", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_nginx_errors_are_problem_json(edge, data, status, options):
    assert_problem(send(data, edge["port"], **options), status)


def test_a_genuine_nginx_500_is_problem_json(edge):
    resp = send(req(b"POST /__test/unwritable HTTP/1.1", b"Content-Length: 4096\r\n", b"x" * 4096), edge["port"])
    assert_problem(resp, 500)
    assert "empty URI in redirect" not in (edge["workdir"] / "error.log").read_text(errors="replace")


def test_request_ids_on_nginx_errors(edge):
    sane = send(req(b"POST /api/v1/tasks HTTP/1.1", b"X-Request-ID: probe-413.a_B\r\nContent-Length: 70000\r\n"),
                edge["port"])
    assert_problem(sane, 413, request_id="probe-413.a_B")
    unsafe = send(req(b"GET /x HTTP/1.1", b"X-Request-ID: has space\"quote\r\nTransfer-Encoding: gzip\r\n"),
                  edge["port"])
    assert_problem(unsafe, 501)
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    head = send(b"HEAD / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", edge["port"], timeout=3)
    assert head.status == 501 and head.headers["content-type"] == "application/problem+json" and head.body == b""


def test_timeouts_close_without_an_answer(edge):
    """Nginx sends nothing on a header or body timeout (it logs 408): nothing to make problem+json."""
    for data in (b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"a",
                 b"GET / HTTP/1.1\r\nHost: t\r\nX-Half: "):
        started = time.monotonic()
        assert send(data, edge["port"], timeout=8).raw == b""
        assert 1.5 < time.monotonic() - started < 6


def test_auth_routes_are_rate_limited_per_address(edge):
    codes = [send(req(b"POST /api/v1/auth/login HTTP/1.1", b"Content-Length: 2\r\n", b"{}"), edge["port"],
                  source="127.0.0.3").status for _ in range(26)]
    assert codes[:21] == [200] * 21 and codes.count(429) >= 3, codes
    limited = send(req(b"POST /api/v1/auth/register HTTP/1.1", b"Content-Length: 2\r\n", b"{}"), edge["port"],
                   source="127.0.0.3")
    assert_problem(limited, 429)
    me = [send(req(b"GET /api/v1/auth/me HTTP/1.1"), edge["port"], source="127.0.0.3").status for _ in range(30)]
    assert me == [200] * 30  # only the password-hashing routes
    assert send(req(b"POST /api/v1/auth/login HTTP/1.1", b"Content-Length: 2\r\n", b"{}"), edge["port"],
                source="127.0.0.4").status == 200


def test_one_address_cannot_take_every_connection(edge):
    held = []
    try:
        for _ in range(32):  # 32 requests stuck in their bodies: the per-address limit
            sock = socket.create_connection(("127.0.0.1", edge["port"]), timeout=5, source_address=("127.0.0.6", 0))
            sock.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
            held.append(sock)
        time.sleep(0.5)
        assert_problem(send(req(b"GET /healthz HTTP/1.1"), edge["port"], source="127.0.0.6"), 429)
        assert send(req(b"GET /healthz HTTP/1.1"), edge["port"], source="127.0.0.7").status == 200
    finally:
        for sock in held:
            sock.close()


def test_a_slow_body_flood_from_one_address_leaves_room_for_others(edge):
    """2 000 connections dribbling their bodies (what exhausted worker_connections before)."""
    flood, served = [], []
    try:
        for _ in range(2000):
            try:
                sock = socket.create_connection(("127.0.0.1", edge["port"]), timeout=2,
                                                source_address=("127.0.0.8", 0))
                sock.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx")
                flood.append(sock)
            except OSError:
                break
        for _ in range(10):
            served.append(send(req(b"GET /healthz HTTP/1.1"), edge["port"], source="127.0.0.9", timeout=5).status)
            for sock in flood[:50]:
                try:
                    sock.send(b"x")
                except OSError:
                    pass
    finally:
        for sock in flood:
            sock.close()
    assert len(flood) >= 1000 and served == [200] * 10, (len(flood), served)


def test_upstream_down_is_a_502_problem(edge):
    devserver.stop_process(edge["upstream"])
    assert_problem(send(req(b"GET /healthz HTTP/1.1"), edge["port"]), 502)
