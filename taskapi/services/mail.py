"""Mail over SMTP: the SMTP_URL setting, one message per call, and errors that say whether a retry can help."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit

from taskapi.clock import utcnow

DEFAULT_PORTS = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}
URL_FORM = "smtp://, smtps:// or smtp+starttls://[user:password@]host[:port]"
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,30}")


class MailError(Exception):
    """The message was not sent; a later attempt may succeed."""


class PermanentMailError(MailError):
    """The server refused for good (5xx) or the message cannot be built: retrying will not help."""


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send: scheme is smtp (plain), smtps (implicit TLS) or smtp+starttls (TLS required)."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks; the password must not.
        password = None if self.password is None else "***"
        return (f"SmtpSettings(scheme={self.scheme!r}, host={self.host!r}, port={self.port!r}, "
                f"username={self.username!r}, password={password!r})")


def parse_smtp_url(url: str) -> SmtpSettings:
    """SMTP_URL as settings; ValueError names what is wrong but never echoes the password."""
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ValueError(f"SMTP_URL must look like {URL_FORM}")
    if scheme not in DEFAULT_PORTS:
        # Echo the scheme only when it looks like one: a malformed URL may put the password before "://".
        shown = f" (got {scheme!r})" if _SCHEME.fullmatch(scheme) else ""
        raise ValueError(f"SMTP_URL must start with smtp://, smtps:// or smtp+starttls://{shown}")
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # Usually an unencoded "/", "?" or "#" in the password cut the URL short.
        raise ValueError("SMTP_URL must have no path, query or fragment (percent-encode special characters "
                         "in the user name and password)")
    try:
        port = parts.port
    except ValueError:  # its message quotes the port text, which can be a piece of a mangled password
        raise ValueError("SMTP_URL has an invalid port (percent-encode special characters in the password)")
    if not parts.hostname:
        raise ValueError(f"SMTP_URL has no host; expected {URL_FORM}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and username is None:
        raise ValueError("SMTP_URL has a password but no user name")
    if not f"{username or ''}{password or ''}".isascii():
        raise ValueError("SMTP_URL user name and password must be ASCII (smtplib's AUTH sends nothing else)")
    return SmtpSettings(scheme=scheme, host=parts.hostname, port=port or DEFAULT_PORTS[scheme],
                        username=username, password=password)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to log even when malformed."""
    # Plain string surgery rather than urlsplit: an unencoded "/" or "#" in the password would
    # move part of it out of urlsplit's netloc, and that part would be logged.
    prefix, separator, rest = url.partition("://")
    if not separator:
        prefix, rest = "", url
    else:
        prefix += separator
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{prefix}{user}:***@{hostpart}"


def send_mail(settings: SmtpSettings, *, sender: str, to: str, subject: str, text: str,
              message_id: str | None = None, timeout: float = 10.0, ca_file: str | None = None) -> None:
    """Send one UTF-8 text message; MailError when it was not sent, PermanentMailError when retrying won't help."""
    message = _build(sender=sender, to=to, subject=subject, text=text, message_id=message_id)
    where = f"{settings.host}:{settings.port}"
    try:
        _deliver(settings, message, timeout=timeout, ca_file=ca_file)
    except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused; codes per address
        codes = [code for code, _ in exc.recipients.values()]
        reason = f"{where}: recipient refused ({_reply(*next(iter(exc.recipients.values())))})"
        raise _error(reason, settings, permanent=all(code >= 500 for code in codes))
    except smtplib.SMTPResponseException as exc:  # refusals with a reply code: 4xx try again, 5xx never
        step = "login refused" if isinstance(exc, smtplib.SMTPAuthenticationError) else "refused"
        raise _error(f"{where}: {step} ({_reply(exc.smtp_code, exc.smtp_error)})", settings,
                     permanent=500 <= exc.smtp_code < 600)
    except ssl.SSLError as exc:  # before OSError: it is one, and the TLS reason is the useful part
        raise _error(f"{where}: TLS failed ({exc.reason or exc})", settings)
    except (smtplib.SMTPException, OSError) as exc:  # refused connection, DNS, timeout, other protocol faults
        raise _error(f"{where}: {type(exc).__name__}: {exc}", settings)


def _build(*, sender: str, to: str, subject: str, text: str, message_id: str | None) -> EmailMessage:
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(utcnow())
        # The sender's domain rather than make_msgid's default, which looks up (and leaks) this host's name.
        message["Message-ID"] = message_id or make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or None)
        message.set_content(text, charset="utf-8")
    except (ValueError, TypeError) as exc:  # a line break in a header or a malformed address: no retry fixes it
        raise PermanentMailError(f"invalid message: {exc}")
    return message


def _deliver(settings: SmtpSettings, message: EmailMessage, *, timeout: float, ca_file: str | None) -> None:
    client: smtplib.SMTP
    if settings.scheme == "smtps":
        client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout, context=_tls(ca_file))
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    try:
        if settings.scheme == "smtp+starttls":
            client.starttls(context=_tls(ca_file))  # raises unless offered: never fall back to plain text
        if settings.username:
            _login(client, settings.username, settings.password or "")
        client.send_message(message)
    except BaseException:
        client.close()
        raise
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        # The server has accepted the message: a failed goodbye must not make the caller send it twice.
        client.close()


def _login(client: smtplib.SMTP, username: str, password: str) -> None:
    try:
        client.login(username, password)
    except UnicodeEncodeError:  # its own message quotes a character of the password and where it is
        raise PermanentMailError("SMTP user name and password must be ASCII (smtplib's AUTH sends nothing else)")


def _tls(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}".strip()


def _error(reason: str, settings: SmtpSettings, *, permanent: bool = False) -> MailError:
    # A server may echo what it was sent; the password must not reach a log through it.
    if settings.password:
        reason = reason.replace(settings.password, "***")
    return PermanentMailError(reason) if permanent else MailError(reason)
