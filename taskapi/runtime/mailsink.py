"""The development SMTP sink: accepts every message on 127.0.0.1 and keeps each as an .eml file.

`make run` starts it when SMTP_URL is unset (`python -m taskapi.runtime.mailsink --port N --dir PATH`,
SIGTERM or Ctrl-C stops it); tests use `MailSink` as their real SMTP server. Never imported by the app.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

log = logging.getLogger("taskapi.mailsink")


class _Handler:
    """aiosmtpd's hooks: refuse MAIL before AUTH when a login is required; store and log each message."""

    def __init__(self, directory: Path, *, auth_required: bool = False) -> None:
        self.directory = directory
        self.auth_required = auth_required
        self.count = 0
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        # Checked here rather than with aiosmtpd's auth_required, which warns on every connection without TLS.
        if self.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # Stored with local line endings, as a Maildir delivery does: CRLF is SMTP's wire format.
        content = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        # Return-Path and X-Envelope-To keep the envelope, which Bcc and bounces make differ from the headers.
        stamp = (f"Return-Path: <{envelope.mail_from or ''}>\n"
                 f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\n").encode("utf-8", "surrogateescape")
        path = self._write(stamp + content)
        headers = BytesParser(policy=policy.default).parsebytes(content, headersonly=True)
        log.info("mail from=%s to=%s subject=%r file=%s", envelope.mail_from, ",".join(envelope.rcpt_tos),
                 str(headers.get("subject", "")), path.name)
        return "250 Message accepted for delivery"

    def _write(self, data: bytes) -> Path:
        with self.lock:  # one counter for the whole sink, so names never collide
            self.count += 1
            count = self.count
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{count:06d}.eml"
        final = self.directory / name
        # Readers glob *.eml: the dot-prefixed temp file is never seen half-written.
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, final)
        return final


class _Controller(Controller):
    def _trigger_server(self) -> None:
        # Port 0 lets the OS pick a free port (no race with other tests); learn it before aiosmtpd pokes it.
        if isinstance(self.server, asyncio.Server) and self.server.sockets:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class MailSink:
    """An SMTP server on 127.0.0.1 that stores what it receives; with auth=(user, password), AUTH is required."""

    def __init__(self, directory: str | os.PathLike[str], port: int = 0, *,
                 auth: tuple[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.auth = auth
        self._requested_port = port
        self._controller: _Controller | None = None

    @property
    def port(self) -> int:
        """The listening port (the OS's pick when created with port 0)."""
        if self._controller is None:
            return self._requested_port
        return int(self._controller.port)

    def start(self) -> MailSink:
        """Listen; returns once the server answers."""
        if self._controller is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if self.auth is not None:
            # Plain-text AUTH on purpose: tests check login without setting up TLS.
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        # server_hostname skips aiosmtpd's getfqdn(), a DNS lookup that can stall in containers.
        handler = _Handler(self.directory, auth_required=self.auth is not None)
        controller = _Controller(handler, hostname="127.0.0.1", port=self._requested_port,
                                 server_hostname="mailsink.localhost", **options)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening; safe to call twice."""
        if self._controller is not None:
            controller, self._controller = self._controller, None
            self._requested_port = int(controller.port)
            controller.stop()

    def messages(self) -> list[EmailMessage]:
        """Every stored message, parsed, oldest first."""
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(path.read_bytes()) for path in self.files()]

    def files(self) -> list[Path]:
        """The stored .eml files, oldest first (their names start with the UTC time of arrival)."""
        return sorted(self.directory.glob("*.eml"))

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert self.auth is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (value.encode() for value in self.auth)
        # Both comparisons always run, in constant time: a sink is still a place to show good habits.
        ok = hmac.compare_digest(auth_data.login, user) & hmac.compare_digest(auth_data.password, password)
        return AuthResult(success=bool(ok), handled=False)


def main(argv: list[str] | None = None) -> int:
    """Run a sink in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m taskapi.runtime.mailsink", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8025, help="port on 127.0.0.1 (default 8025; 0 picks one)")
    parser.add_argument("--dir", type=Path, default=Path("var/mail"), help="where .eml files go (default var/mail)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command; one line per message here

    stopping = threading.Event()

    def on_signal(number: int, _frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(number).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink = MailSink(args.dir, args.port)
    try:
        sink.start()
    except OSError as exc:  # usually the port is taken
        log.error("cannot listen on 127.0.0.1:%s: %s", args.port, exc)
        return 1
    log.info("SMTP sink on 127.0.0.1:%s, messages in %s", sink.port, sink.directory)
    try:
        stopping.wait()
    finally:
        sink.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
