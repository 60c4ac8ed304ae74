"""The webhook client: the SSRF guard's URL and address rules, and post() against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from taskapi.services import outbound
from taskapi.services.outbound import BlockedURL, Policy, Result, check_url, check_url_syntax, parse_networks, post

LOOPBACK = parse_networks("127.0.0.0/8")
LOCAL = Policy(allow_http=True, allow_networks=LOOPBACK, connect_timeout=1.0, total_timeout=2.0)


# --- real receivers --------------------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 that records every request and answers it with `behave`."""

    def __init__(self, behave: Callable[[http.server.BaseHTTPRequestHandler, Receiver], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.stop = threading.Event()  # wakes handlers that sleep or trickle, at teardown
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(Received(self.command, self.path, dict(self.headers.items()), body))
                behave(self, receiver)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hanging up mid-answer is what several tests are about


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(behave: Callable[[http.server.BaseHTTPRequestHandler, Receiver], None],
              tls: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(behave, tls))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def answer(status: int, body: bytes = b"{}", **headers: str):
    def behave(handler: http.server.BaseHTTPRequestHandler, receiver: Receiver) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return behave


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- URL rules -------------------------------------------------------------------------------------------------


REFUSED = [
    ("http://0x7f.1/", "loopback address 127.0.0.1"),
    ("http://2130706433/", "loopback address 127.0.0.1"),
    ("http://0177.0.0.1/", "loopback address 127.0.0.1"),
    ("http://127.1/", "loopback address 127.0.0.1"),
    ("http://127.0.0.1./", "loopback address"),
    ("http://[::ffff:127.0.0.1]/", "loopback address 127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "loopback address 127.0.0.1"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback address 127.0.0.1"),
    ("http://[::127.0.0.1]/", "loopback address 127.0.0.1"),  # IPv4-compatible
    ("http://[2002:7f00:1::]/", "loopback address 127.0.0.1"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local address 169.254.169.254"),  # NAT64
    ("http://[::1]:8080/", "loopback address ::1"),
    ("http://0/", "unspecified address 0.0.0.0"),
    ("http://[::]/", "unspecified address ::"),
    ("http://169.254.169.254/latest/meta-data", "link-local address 169.254.169.254"),
    ("http://[fe80::1%25eth0]/", "link-local address"),
    ("http://10.1.2.3/", "private address"),
    ("http://0xc0.0xa8.1/", "private address 192.168.0.1"),
    ("http://[fd00::1]/", "private address"),
    ("http://100.64.0.1/", "shared address"),
    ("http://224.0.0.1/", "multicast address"),
    ("http://[ff0e::1]/", "multicast address"),
    ("http://240.0.0.1/", "reserved address"),
    ("http://192.0.2.1/", "not a public address"),
    ("http://[fec0::1]/", "not a public address"),
    ("https://user:pw@example.com/", "userinfo not allowed"),
    ("https://@example.com/", "userinfo not allowed"),
    ("https://example.com/#top", "fragment not allowed"),
    ("https://example.com/#", "fragment not allowed"),
    ("ftp://example.com/", "scheme must be http or https"),
    ("https://example.com/" + "a" * (2049 - len("https://example.com/")), "URL longer than 2048 characters"),
    ("https://localhost/", "loopback name localhost"),
    ("https://api.localhost./", "loopback name"),
    ("https://1.2.3.4.5/", "invalid IPv4 address"),
    ("https://256.1.1.1/", "invalid IPv4 address"),
    ("https://example.123/", "invalid IPv4 address"),
    ("https://[v1.x]/", "invalid IPv6 address"),
    ("https://example.com:0/", "port must be 1..65535"),
    ("https://example.com:65536/", "port must be 1..65535"),
    ("https://example.com:x/", "port must be 1..65535"),
    ("https:///hook", "URL has no host"),
    ("https://exa mple.com/", "spaces"),
    ("https://example.com\\@127.0.0.1/", "backslashes"),
    ("https://ex%61mple.com/", "invalid host name"),
    ("https://ex\u00e4mple.com/", "non-ASCII"),
    ("https://\uff11\uff12\uff17.0.0.1/", "non-ASCII"),  # fullwidth digits the IDNA codec would fold into 127
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_urls_name_the_rule_they_break(url, reason):
    policy = Policy(allow_http=True)
    with pytest.raises(BlockedURL) as syntax:
        check_url_syntax(url, policy)
    assert reason in syntax.value.reason
    with pytest.raises(BlockedURL) as full:
        check_url(url, policy, resolve_timeout=0.5)
    assert full.value.reason == syntax.value.reason
    assert isinstance(syntax.value, ValueError) and str(syntax.value) == syntax.value.reason


def test_plain_http_needs_allow_http():
    with pytest.raises(BlockedURL, match="scheme must be https"):
        check_url_syntax("http://example.com/hook", Policy())
    check_url_syntax("http://example.com/hook", Policy(allow_http=True))


@pytest.mark.parametrize("url", [
    "https://example.com/hook",  # no DNS for public names here: accepted now, the delivery reports "dns"
    "https://Example.COM:8443/a/b?c=d",
    "https://93.184.216.34/x",
    "https://[2606:4700::1]/x",
    "https://[::ffff:93.184.216.34]/",  # a mapped public address is that address
    "https://[2002:5db8:d822::1]/",  # 6to4 around a public address
    "https://hooks_1.example-site.com./",
])
def test_public_urls_are_accepted_even_when_the_name_does_not_resolve_here(url):
    check_url_syntax(url, Policy())
    check_url(url, Policy(), resolve_timeout=0.5)


def test_allowed_networks_open_the_loopback_in_any_spelling():
    for url in ("http://127.0.0.1:8080/", "http://0x7f.1:8080/", "http://[::ffff:127.0.0.1]:8080/",
                "http://localhost:8080/"):
        check_url(url, LOCAL, resolve_timeout=0.5)
        with pytest.raises(BlockedURL, match="loopback"):
            check_url(url, Policy(allow_http=True), resolve_timeout=0.5)
    with pytest.raises(BlockedURL, match="scheme must be https"):
        check_url("http://127.0.0.1:8080/", Policy(allow_networks=LOOPBACK))
    with pytest.raises(BlockedURL, match="private address"):
        check_url("http://10.0.0.1/", LOCAL)


def test_a_name_that_resolves_to_a_non_public_address_is_refused():
    name = socket.gethostname()
    try:
        resolved = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(name, 443)}
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    if any(address.is_global for address in resolved):
        pytest.skip(f"{name} resolves to a public address here")
    with pytest.raises(BlockedURL, match="address"):
        check_url(f"https://{name}/hook", Policy())
    check_url(f"https://{name}/hook", Policy(), resolve=False)  # syntax alone cannot know


@pytest.mark.parametrize("spelling", [
    "127.0.0.1", "0x7f.1", "0X7F.0.0.01", "2130706433", "0177.0.0.1", "127.1", "127.0.1", "0", "0x0", "00",
    "0xffffffff", "1.16777215", "1.16777216", "1.2.65535", "1.2.65536", "4294967295", "4294967296",
    "0x100000000", "08", "09.1", "0x", "0x.1", "1..2", ".1", "1.", "1.2.3.4.5", "256.1", "0xg", "1e2", "cafe",
    "00000000000000000000177.1", "0x000000000000007f.1",
])
def test_ipv4_spellings_are_read_as_inet_aton_reads_them(spelling):
    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(spelling))
    except OSError:
        expected = None
    assert outbound._ipv4_literal(spelling) == expected


def test_parse_networks():
    assert parse_networks("10.0.0.0/8, 127.0.0.1/32") == (ipaddress.ip_network("10.0.0.0/8"),
                                                          ipaddress.ip_network("127.0.0.1/32"))
    assert parse_networks(" fd00::/8 192.168.0.0/16,") == (ipaddress.ip_network("fd00::/8"),
                                                           ipaddress.ip_network("192.168.0.0/16"))
    assert parse_networks("") == ()
    assert parse_networks("10.0.0.1/8") == (ipaddress.ip_network("10.0.0.0/8"),)  # host bits ignored, as config does
    for bad in ("10.0.0.0/33", "ten", "10.0.0.0/8, nope"):
        with pytest.raises(ValueError):
            parse_networks(bad)


def test_result_is_ok_only_for_2xx_without_error():
    assert Result(204, 5, None).ok
    assert not Result(200, 5, "timeout").ok
    assert not Result(302, 5, "non-2xx: 302").ok
    assert not Result(None, 5, "refused").ok


# --- post() ----------------------------------------------------------------------------------------------------


def test_post_sends_the_exact_body_and_headers_and_reports_2xx(serve):
    receiver = serve(answer(200))
    body = b'{"event": "task.created", "id": "\xc3\xa9"}'
    result = post(f"{receiver.url}/hooks/in?x=1", body, {"X-Signature": "sha256=abc", "X-Event": "task.created",
                                                         "Host": "evil.example"}, LOCAL)
    assert result.ok, result
    assert result.status == 200 and result.error is None and 0 <= result.duration_ms < 2000
    [request] = receiver.requests
    assert (request.method, request.path, request.body) == ("POST", "/hooks/in?x=1", body)
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["X-Signature"] == "sha256=abc" and request.headers["X-Event"] == "task.created"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == str(len(body))
    assert request.headers["User-Agent"] == "taskapi-webhooks/1.1"


def test_post_keeps_a_given_content_type_and_resolves_a_name_once(serve):
    receiver = serve(answer(201))
    result = post(f"http://localhost:{receiver.port}/", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"},
                  LOCAL)
    assert result.ok and result.status == 201
    [request] = receiver.requests
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Host"] == f"localhost:{receiver.port}"


def test_post_reports_a_server_error(serve):
    receiver = serve(answer(500))
    result = post(receiver.url, b"{}", {}, LOCAL)
    assert (result.status, result.error, result.ok) == (500, "non-2xx: 500", False)


def test_post_never_follows_a_redirect(serve):
    target = serve(answer(200))
    receiver = serve(answer(302, Location=f"{target.url}/stolen"))
    result = post(receiver.url, b"{}", {}, LOCAL)
    assert (result.status, result.error, result.ok) == (302, "non-2xx: 302", False)
    assert len(receiver.requests) == 1 and target.requests == []


def test_post_gives_up_on_a_slow_receiver_at_the_deadline(serve):
    def sleep(handler, receiver):
        receiver.stop.wait(5)

    receiver = serve(sleep)
    started = time.monotonic()
    result = post(receiver.url, b"{}", {}, Policy(allow_http=True, allow_networks=LOOPBACK, total_timeout=0.8))
    assert (result.status, result.error) == (None, "timeout")
    assert time.monotonic() - started < 0.8 + 1
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_receiver_trickling_bytes_is_stopped_at_the_deadline(serve, where):
    def trickle(handler, receiver):
        if where == "body":
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
        else:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not receiver.stop.wait(0.2):
            handler.wfile.write(b"x")

    receiver = serve(trickle)
    started = time.monotonic()
    result = post(receiver.url, b"{}", {}, Policy(allow_http=True, allow_networks=LOOPBACK, total_timeout=1.0))
    elapsed = time.monotonic() - started
    assert result.error == "timeout" and not result.ok
    assert result.status == (200 if where == "body" else None)
    assert 0.9 <= elapsed < 1.5


def test_post_reads_only_a_bounded_part_of_a_huge_response(serve):
    def huge(handler, receiver):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 1024 * 1024))
        handler.end_headers()
        chunk = b"x" * 65536
        for _ in range(160):
            handler.wfile.write(chunk)

    receiver = serve(huge)
    result = post(receiver.url, b"{}", {}, LOCAL)
    assert result.ok, result
    assert result.duration_ms < 1000


def test_post_reports_a_refused_connection():
    result = post(f"http://127.0.0.1:{free_port()}/", b"{}", {}, LOCAL)
    assert (result.status, result.error) == (None, "refused")


def test_post_refuses_the_loopback_without_sending_anything(serve):
    receiver = serve(answer(200))
    for url in (receiver.url, f"http://0x7f.1:{receiver.port}/", f"http://[::ffff:127.0.0.1]:{receiver.port}/"):
        result = post(url, b"{}", {}, Policy(allow_http=True))
        assert result.status is None and result.error.startswith("blocked: loopback address 127.0.0.1"), result
    result = post(f"http://localhost:{receiver.port}/", b"{}", {}, Policy(allow_http=True))
    assert result.error == "blocked: loopback name localhost is not allowed"
    result = post(f"http://{socket.gethostname()}:{receiver.port}/", b"{}", {}, Policy(allow_http=True))
    assert result.error.startswith(("blocked: ", "dns: "))  # whatever this machine's name resolves to, no request
    assert receiver.requests == []


def test_post_reports_rule_and_dns_failures_without_raising():
    assert post("https://user@example.com/", b"{}", {}, Policy()).error == "blocked: userinfo not allowed"
    result = post("https://no-such-host.invalid/hook", b"{}", {}, Policy(connect_timeout=0.5))
    assert result.status is None and result.error in ("dns: name did not resolve", "dns: lookup timed out")


def test_post_raises_for_a_header_that_would_split_the_request(serve):
    receiver = serve(answer(200))
    with pytest.raises(ValueError):
        post(receiver.url, b"{}", {"X-Bad": "a\r\nX-Injected: 1"}, LOCAL)
    with pytest.raises(ValueError):
        post(receiver.url, b"{}", {"Bad Name": "1"}, LOCAL)
    assert receiver.requests == []


# --- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for IP 127.0.0.1 and its key, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


def test_https_verifies_the_receiver_against_the_configured_ca(serve, certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver = serve(answer(200), tls=context)
    trusted = Policy(allow_networks=LOOPBACK, ca_file=cert, total_timeout=2.0)
    result = post(f"{receiver.url}/hook", b'{"a": 1}', {}, trusted)
    assert result.ok, result
    assert receiver.requests[0].body == b'{"a": 1}'
    assert receiver.requests[0].headers["Host"] == f"127.0.0.1:{receiver.port}"

    result = post(f"{receiver.url}/hook", b"{}", {}, Policy(allow_networks=LOOPBACK, total_timeout=2.0))
    assert result.status is None and result.error.startswith("tls: certificate verify failed"), result
    assert len(receiver.requests) == 1


def test_https_to_a_plain_http_receiver_is_a_tls_error(serve):
    receiver = serve(answer(200))
    result = post(f"https://127.0.0.1:{receiver.port}/", b"{}", {}, LOCAL)
    assert result.status is None and result.error.startswith(("tls: ", "reset")), result
