"""Mail over real SMTP sockets: send_mail against the dev sink (in-process and as `python -m`), SMTP_URL parsing."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskapi.runtime.devserver import free_port
from taskapi.runtime.mailsink import MailSink
from taskapi.services.mail import (
    MailError,
    PermanentMailError,
    SmtpSettings,
    mask_url,
    parse_smtp_url,
    send_mail,
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "p@ss:w/rd#1%"  # the characters that must be percent-encoded in an SMTP_URL
ENCODED = "p%40ss%3Aw%2Frd%231%25"


@pytest.fixture
def auth_sink(tmp_path):
    with MailSink(tmp_path / "mail", auth=("ada", PASSWORD)) as running:
        yield running


def plain(port: int) -> SmtpSettings:
    return parse_smtp_url(f"smtp://127.0.0.1:{port}")


def send(settings: SmtpSettings, **overrides) -> None:
    message = dict(sender="Taskapi <noreply@example.com>", to="Zoë <zoe@example.com>",
                   subject="Réunion ☕", text="Bonjour ☕\nÀ demain.\n") | overrides
    send_mail(settings, **message)


def test_a_message_arrives_with_exact_headers_and_utf8_body(sink):
    send(plain(sink.port))

    [message] = sink.messages()
    assert message["From"] == "Taskapi <noreply@example.com>"
    assert message["To"] == "Zoë <zoe@example.com>"
    assert message["Subject"] == "Réunion ☕"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content() == "Bonjour ☕\nÀ demain.\n"
    assert re.fullmatch(r"<[^@>]+@example\.com>", message["Message-ID"])
    assert message["Date"].datetime.utcoffset().total_seconds() == 0


def test_each_message_is_an_eml_file_under_the_directory(sink):
    send(plain(sink.port), subject="one")
    send(plain(sink.port), subject="two")

    files = sorted(sink.directory.iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]  # no temp file left behind
    assert all(re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-\d{6}\.eml", path.name) for path in files)
    assert [message["Subject"] for message in sink.messages()] == ["one", "two"]  # oldest first
    assert b"X-Envelope-To: zoe@example.com" in files[0].read_bytes()


def test_a_given_message_id_is_kept(sink):
    send(plain(sink.port), message_id="<task-42.due@example.com>")

    assert sink.messages()[0]["Message-ID"] == "<task-42.due@example.com>"


def test_login_with_the_right_credentials_delivers(auth_sink):
    send(parse_smtp_url(f"smtp://ada:{ENCODED}@127.0.0.1:{auth_sink.port}"))

    assert [message["Subject"] for message in auth_sink.messages()] == ["Réunion ☕"]


def test_a_wrong_password_is_a_permanent_error_that_does_not_show_it(auth_sink):
    wrong = "not-" + PASSWORD
    settings = SmtpSettings("smtp", "127.0.0.1", auth_sink.port, "ada", wrong)

    with pytest.raises(PermanentMailError, match="535") as caught:
        send(settings)

    assert wrong not in str(caught.value) and PASSWORD not in str(caught.value)
    assert wrong not in repr(settings)
    assert auth_sink.messages() == []


def test_a_password_beyond_ascii_is_a_permanent_error_that_does_not_show_it(auth_sink):
    # smtplib's AUTH encodes ASCII only; its UnicodeEncodeError would quote a character of the password.
    settings = SmtpSettings("smtp", "127.0.0.1", auth_sink.port, "ada", "wörd-s3cret")

    with pytest.raises(PermanentMailError, match="ASCII") as caught:
        send(settings)

    assert "ö" not in str(caught.value) and "s3cret" not in str(caught.value)


def test_sending_without_login_where_one_is_required_is_refused(auth_sink):
    with pytest.raises(PermanentMailError, match="530"):
        send(plain(auth_sink.port))

    assert auth_sink.messages() == []


def test_a_closed_port_is_a_temporary_error_raised_quickly():
    started = time.monotonic()

    with pytest.raises(MailError, match="refused") as caught:
        send(plain(free_port()), timeout=2.0)

    assert not isinstance(caught.value, PermanentMailError)  # the server may be back later: retry
    assert time.monotonic() - started < 2


def test_starttls_never_falls_back_to_plain_text(sink):
    with pytest.raises(MailError, match="STARTTLS") as caught:
        send(parse_smtp_url(f"smtp+starttls://127.0.0.1:{sink.port}"))

    assert not isinstance(caught.value, PermanentMailError)
    assert sink.messages() == []


def test_a_line_break_in_a_header_is_refused_before_connecting():
    # A task title pasted into a subject must not inject headers; retrying would not help.
    with pytest.raises(PermanentMailError, match="invalid message"):
        send(plain(free_port()), subject="Hello\r\nBcc: victim@example.com")


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example.com", ("smtp", "mail.example.com", 25, None, None)),
    ("smtp://mail.example.com:2525", ("smtp", "mail.example.com", 2525, None, None)),
    ("smtps://mail.example.com", ("smtps", "mail.example.com", 465, None, None)),
    ("smtps://u:p@mail.example.com:1465", ("smtps", "mail.example.com", 1465, "u", "p")),
    ("smtp+starttls://mail.example.com", ("smtp+starttls", "mail.example.com", 587, None, None)),
    ("SMTP+STARTTLS://Mail.Example.com:25/", ("smtp+starttls", "mail.example.com", 25, None, None)),
    (f"smtp+starttls://ada%40example.com:{ENCODED}@mail.example.com",
     ("smtp+starttls", "mail.example.com", 587, "ada@example.com", PASSWORD)),
    ("smtp://apikey:@[::1]:2525", ("smtp", "::1", 2525, "apikey", "")),
])
def test_parse_smtp_url(url, expected):
    settings = parse_smtp_url(url)

    assert (settings.scheme, settings.host, settings.port, settings.username, settings.password) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("http://u:s3cret@mail.example.com", "must start with smtp://, smtps:// or smtp\\+starttls:// \\(got 'http'\\)"),
    ("u:s3cret@mail.example.com:25", "must look like"),
    ("smtp://u:s3cret/x@mail.example.com", "no path, query or fragment"),
    ("smtp://u:s3cret#x@mail.example.com", "no path, query or fragment"),
    ("smtp://u:s3cret@mail.example.com:99999", "invalid port"),
    ("smtp://u:s3cret@:25", "no host"),
    ("smtp://:s3cret@mail.example.com", "password but no user name"),
    ("smtp://u:s3cret@mail.example.com?tls=1", "no path, query or fragment"),
    ("smtp://u:w%C3%B6rd-s3cret@mail.example.com", "must be ASCII"),
])
def test_a_bad_smtp_url_is_one_clear_line_without_the_password(url, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_smtp_url(url)

    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("url", "masked"), [
    ("smtp://u:s3cret@mail.example.com:587", "smtp://u:***@mail.example.com:587"),
    (f"smtps://ada%40example.com:{ENCODED}@h", "smtps://ada%40example.com:***@h"),
    ("smtp://u:s3cret/x#y@h:25", "smtp://u:***@h:25"),  # unencoded "/" and "#": still all masked
    ("smtp://u@mail.example.com", "smtp://u@mail.example.com"),
    ("smtp://mail.example.com:25", "smtp://mail.example.com:25"),
    ("", ""),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_the_sink_runs_in_the_foreground_and_stops_cleanly_on_sigterm(tmp_path):
    port, directory = free_port(), tmp_path / "mail"
    process = subprocess.Popen(
        [sys.executable, "-m", "taskapi.runtime.mailsink", "--port", str(port), "--dir", str(directory)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process)
        send(plain(port))
        assert len(list(directory.glob("*.eml"))) == 1

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=5)
        assert process.returncode == 0, output
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "from=noreply@example.com to=zoe@example.com subject='Réunion ☕'" in output
    assert "SIGTERM received, stopping" in output


def wait_for_port(port: int, process: subprocess.Popen[str], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the mail sink did not listen on {port} within {seconds} s")
