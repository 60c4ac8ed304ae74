"""Outbound HTTP for webhook deliveries: the SSRF guard (URL and address rules) and one bounded POST.

A webhook URL comes from a user, so the server must never call something only it can reach: the
loopback, private and link-local networks (cloud metadata at 169.254.169.254), and every other
non-public address, however the URL spells it. `check_url` judges a URL when it is saved; `post`
judges it again at delivery, resolves the name once and connects to the address it checked, so a
name that changes its answer between the check and the connect (DNS rebinding) gains nothing.
Network problems never raise: `post` returns a `Result` whose `error` is a short reason.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

# Spaces, controls and backslashes are where parsers disagree about the host; refusing them is cheaper than proving
# that urlsplit, http.client and the receiver all read such a URL the same way.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_IPV4_PART = re.compile(r"0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*", re.IGNORECASE)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REPLACED_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
# Special-purpose ranges that some Python versions still call global (IETF protocol assignments, local-use NAT64,
# deprecated site-local, the newer IPv6 documentation prefix).
_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("192.0.0.0/24", "64:ff9b:1::/48", "fec0::/10", "3fff::/20"))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedURL(ValueError):
    """A URL the webhook client refuses to call; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Policy:
    """What the client may call and how long and how much it may spend on one attempt."""

    allow_http: bool = False
    allow_networks: tuple[Network, ...] = ()
    connect_timeout: float = 3.0
    total_timeout: float = 10.0
    max_response_bytes: int = 65536
    user_agent: str = "taskapi-webhooks/1.1"
    ca_file: str | None = None


@dataclass
class Result:
    """One delivery attempt: the status if a response arrived, its wall time, and why it failed (None for 2xx)."""

    status: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the receiver answered 2xx and nothing went wrong."""
        return self.status is not None and 200 <= self.status < 300 and self.error is None


@dataclass(frozen=True)
class _Target:
    """A URL that passed the syntax rules, in the parts a request needs."""

    scheme: str
    host: str  # the name (for DNS and TLS) or the IP address's canonical text
    port: int
    ip: Address | None  # set when the URL names an address rather than a host
    host_header: str
    path: str


def parse_networks(text: str) -> tuple[Network, ...]:
    """Networks from a comma- or space-separated list such as "10.0.0.0/8, 127.0.0.1/32"; ValueError on a bad one."""
    networks: list[Network] = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network: {item!r} ({exc})") from None
    return tuple(networks)


def check_url_syntax(url: str, policy: Policy) -> None:
    """Raise BlockedURL unless the URL's form is allowed and any IP address it names is public or allowed."""
    _parse(url, policy)


def check_url(url: str, policy: Policy, *, resolve: bool = True, resolve_timeout: float = 2.0) -> None:
    """Raise BlockedURL unless the URL is allowed and its host, resolved now, has only public or allowed addresses."""
    target = _parse(url, policy)
    if target.ip is not None or not resolve:
        return
    try:
        addresses = _resolve(target.host, target.port, resolve_timeout)
    except _LookupFailed:
        # A name that does not resolve yet may resolve later; the delivery checks again and reports "dns".
        return
    for address in addresses:
        reason = _refusal(address, policy)
        if reason is not None:
            raise BlockedURL(reason)


def post(url: str, body: bytes, headers: dict[str, str], policy: Policy) -> Result:
    """POST the body to the URL once, within the policy's limits; network problems come back as Result.error."""
    start = time.monotonic()
    deadline = start + policy.total_timeout
    _check_headers(headers)
    try:
        target = _parse(url, policy)
    except BlockedURL as exc:
        return _result(start, None, f"blocked: {exc.reason}")
    if target.ip is not None:
        addresses: list[Address] = [target.ip]
    else:
        try:
            addresses = _resolve(target.host, target.port, min(policy.connect_timeout, deadline - time.monotonic()))
        except _LookupFailed as exc:
            return _result(start, None, f"dns: {exc.reason}")
    for address in addresses:
        reason = _refusal(address, policy)
        if reason is not None:
            return _result(start, None, f"blocked: {reason}")
    status, error = _deliver(target, addresses[0], body, headers, policy, deadline)
    return _result(start, status, error)


def _result(start: float, status: int | None, error: str | None) -> Result:
    return Result(status=status, duration_ms=round((time.monotonic() - start) * 1000), error=error)


# --- the URL ---------------------------------------------------------------------------------------------------


def _parse(url: str, policy: Policy) -> _Target:
    """The URL's parts, or BlockedURL naming the first rule it breaks."""
    if len(url) > MAX_URL_LENGTH:
        raise BlockedURL(f"URL longer than {MAX_URL_LENGTH} characters")
    if not url.isascii():
        raise BlockedURL("non-ASCII characters not allowed (use punycode and percent-encoding)")
    if _UNSAFE_CHARACTERS.search(url):
        raise BlockedURL("spaces, control characters and backslashes not allowed")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BlockedURL("malformed URL")
    schemes = ("http", "https") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise BlockedURL("scheme must be http or https" if policy.allow_http else "scheme must be https")
    if "@" in parts.netloc:
        raise BlockedURL("userinfo not allowed")
    if "#" in url:
        raise BlockedURL("fragment not allowed")
    if not parts.hostname:
        raise BlockedURL("URL has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise BlockedURL("port must be 1..65535")
    port = port or DEFAULT_PORTS[parts.scheme]

    ip: Address | None
    if parts.netloc.startswith("["):
        try:
            ip = ipaddress.IPv6Address(unquote(parts.hostname))  # a zone arrives as %25eth0
        except ValueError:
            raise BlockedURL("invalid IPv6 address")
    else:
        ip = _host_address(parts.hostname.removesuffix("."), policy)
    if ip is not None:
        reason = _refusal(ip, policy)
        if reason is not None:
            raise BlockedURL(reason)
        host = str(ip).split("%")[0]  # the zone is for our socket, not for Host or TLS
        shown = f"[{host}]" if ip.version == 6 else host
    else:
        host = shown = parts.hostname.removesuffix(".")
    host_header = shown if port == DEFAULT_PORTS[parts.scheme] else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme=parts.scheme, host=host, port=port, ip=ip, host_header=host_header, path=path)


def _host_address(host: str, policy: Policy) -> ipaddress.IPv4Address | None:
    """The IPv4 address an unbracketed host spells (in any inet_aton form), None for a valid name."""
    address = _ipv4_literal(host)
    if address is not None:
        return address
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise BlockedURL("invalid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Resolvers treat such hosts as addresses, or not, inconsistently; no real name ends in a number.
        raise BlockedURL("invalid IPv4 address")
    if labels[-1] == "localhost" and _refusal(ipaddress.IPv4Address("127.0.0.1"), policy) is not None:
        # RFC 6761: localhost names are the loopback even when a lookup would say otherwise or fail.
        raise BlockedURL(f"loopback name {host} is not allowed")
    return None


def _ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """The address inet_aton reads from the host (1 to 4 parts, each decimal, 0-octal or 0x-hex), else None."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.fullmatch(part) for part in parts):
        return None
    values = [int(part, 16) if part[:2].lower() == "0x" else int(part, 8) if part[0] == "0" else int(part)
              for part in parts]
    *leading, last = values
    # Each leading part is one byte; the last part fills every byte left (127.1 is 127.0.0.1).
    if any(value > 255 for value in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (24 - 8 * index)
    return ipaddress.IPv4Address(number)


# --- the address -----------------------------------------------------------------------------------------------


def _refusal(address: Address, policy: Policy) -> str | None:
    """Why the address may not be called, or None when it is public or inside an allowed network."""
    if any(address in network for network in policy.allow_networks):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = _refusal(embedded, policy)
            if reason is not None:
                return f"{reason} (embedded in {address})"
            if address.ipv4_mapped is not None or address in _NAT64:
                return None  # these reach exactly the IPv4 address, which passed
    kind = _kind(address)
    return None if kind is None else f"{kind} {address} is not allowed"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a mapped, compatible, 6to4 or NAT64 IPv6 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or 1 < int(address) <= 0xFFFFFFFF:  # NAT64 or IPv4-compatible (::a.b.c.d)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: Address) -> str | None:
    """The kind of non-public address this is, None for a public one."""
    # Multicast first: Python calls much of it global.
    if address.is_multicast:
        return "multicast address"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address in _SHARED:
        return "shared address"
    if any(address in network for network in _PRIVATE):
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if any(address in network for network in _NOT_PUBLIC) or not address.is_global:
        return "not a public address"
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "scoped address"
    return None


class _LookupFailed(Exception):
    """The name gave no address in time; `reason` says which way."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _resolve(host: str, port: int, timeout: float) -> list[Address]:
    """The host's addresses in the resolver's order, waiting at most `timeout` seconds."""
    answers: list[list[Address] | None] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found = [ipaddress.ip_address(info[4][0]) for info in infos
                     if info[0] in (socket.AF_INET, socket.AF_INET6) and isinstance(info[4][0], str)]
            answers.append(list(dict.fromkeys(found)))
        except (OSError, ValueError):  # gaierror, or an answer or name the codecs reject
            answers.append(None)

    # getaddrinfo has no timeout of its own; a daemon thread lets us stop waiting without blocking exit.
    thread = threading.Thread(target=lookup, name="outbound-dns", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if not answers:
        raise _LookupFailed("lookup timed out")
    if not answers[0]:
        raise _LookupFailed("name did not resolve")
    return answers[0]


# --- the request -----------------------------------------------------------------------------------------------


def _check_headers(headers: dict[str, str]) -> None:
    """Raise ValueError for a header http.client would refuse, before anything touches the network."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\0") or not value.isascii():
            raise ValueError(f"invalid value for header {name!r}")


def _remaining(deadline: float) -> float:
    """Seconds left before the deadline; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _deliver(target: _Target, address: Address, body: bytes, headers: dict[str, str], policy: Policy,
             deadline: float) -> tuple[int | None, str | None]:
    """Connect to the checked address, send the request and read a bounded response: (status, error)."""
    sock: socket.socket | None = None
    status: int | None = None
    try:
        sock = socket.create_connection((str(address), target.port),
                                        timeout=min(policy.connect_timeout, _remaining(deadline)))
        if target.scheme == "https":
            sock.settimeout(_remaining(deadline))
            context = ssl.create_default_context(cafile=policy.ca_file)
            sock = context.wrap_socket(sock, server_hostname=target.host)
        connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = _DeadlineSocket(sock, deadline)  # never connect(): that would look the name up again
        connection.request("POST", target.path, body=body, headers=_request_headers(target, body, headers, policy))
        response = connection.getresponse()
        status = response.status
        if not 200 <= status < 300:
            return status, f"non-2xx: {status}"
        # Read (and drop) a bounded part of the body so a receiver that answers slowly still counts as slow.
        left = policy.max_response_bytes
        while left > 0:
            chunk = response.read(min(left, 16384))
            if not chunk:
                break
            left -= len(chunk)
        return status, None
    except (OSError, http.client.HTTPException) as exc:
        return status, _describe(exc)
    finally:
        if sock is not None:
            sock.close()


def _request_headers(target: _Target, body: bytes, headers: dict[str, str], policy: Policy) -> dict[str, str]:
    """The caller's headers, with the framing headers ours and the defaults filled in."""
    sent = {name: value for name, value in headers.items() if name.lower() not in _REPLACED_HEADERS}
    given = {name.lower() for name in sent}
    if "content-type" not in given:
        sent["Content-Type"] = "application/json"
    if "user-agent" not in given:
        sent["User-Agent"] = policy.user_agent
    sent.update({"Host": target.host_header, "Content-Length": str(len(body)), "Connection": "close"})
    return sent


def _describe(exc: BaseException) -> str:
    """A short reason for a failed attempt."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or 'handshake failed'}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "reset"
    if isinstance(exc, http.client.HTTPException):
        return f"protocol: {type(exc).__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"network: {exc.strerror}"
    return f"network: {type(exc).__name__}"


class _DeadlineSocket:
    """The socket as http.client sees it: each send and receive may wait only for the time left."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: ReadableBuffer) -> None:
        """Send everything, within the time left (sendall's timeout bounds the whole call)."""
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        """A reader whose every receive checks the deadline, so a receiver trickling bytes cannot hold us."""
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        """Leave the socket open: post() closes it once the response is read."""


class _DeadlineReader(io.RawIOBase):
    """Receives from the socket with the timeout set to the time left before each call."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        """Always: this is the response stream."""
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Receive into the buffer, failing with TimeoutError at the deadline."""
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)
