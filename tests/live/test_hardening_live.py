"""Limits and hostile input against gunicorn with 3 workers, over real sockets."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import requests

from tests.helpers import PASSWORD, bearer
from tests.servers import gunicorn


def post_fresh(url: str, **kwargs) -> requests.Response:
    with requests.Session() as session:
        return session.post(url, timeout=30, **kwargs)


def test_register_limit_is_shared_by_all_workers(app_env, log_dir, app):
    env = {**app_env, "RATELIMIT_REGISTER": "10/hour"}
    with gunicorn(env, workers=3, log_path=log_dir / "gunicorn-limits.log") as base:
        calls = [{"json": {"email": f"p{i}@example.com", "password": PASSWORD},
                  "headers": {"X-Forwarded-For": f"198.51.100.{i}"}} for i in range(30)]  # spoofing does not help
        with ThreadPoolExecutor(15) as pool:
            codes = list(pool.map(lambda kw: post_fresh(base + "/api/v1/auth/register", **kw).status_code, calls))
        assert sorted(codes) == [201] * 10 + [429] * 20, codes


def raw_request(base: str, payload: bytes) -> bytes:
    host = urlparse(base)
    with socket.create_connection((host.hostname, host.port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_hostile_bodies_get_4xx_and_workers_stay_healthy(app_env, log_dir, app):
    with gunicorn(app_env, workers=3, log_path=log_dir / "gunicorn-hostile.log") as base:
        post_fresh(base + "/api/v1/auth/register", json={"email": "h@example.com", "password": PASSWORD})
        token = post_fresh(base + "/api/v1/auth/login", json={"email": "h@example.com", "password": PASSWORD}).json()
        headers = {**bearer(token["access_token"]), "Content-Type": "application/json"}
        tasks = base + "/api/v1/tasks"
        hostile = {
            b"[" * 100_000 + b"]" * 100_000: 413,  # deep nesting, over the size limit
            b'{"title": ' + b"[" * 20_000 + b"]" * 20_000 + b"}": 400,  # deep nesting within it
            b'{"title": "x", "tags": [' + b'"a",' * 15_000 + b'"a"]}': 422,  # huge array
            b'{"title": "\\ud800"}': 400,  # lone surrogate
            b'{"title": "a\\u0000"}': 400,  # NUL
            b'{"title": "a", "title": "b"}': 400,  # duplicate keys
            b'{"title": {"$ne": null}}': 422,  # operator injection
            b'{"title": "x", "__raw__": {"owner": {"$exists": true}}}': 422,
            b"\xff\xfe\x00{": 400,  # not UTF-8
        }
        for body, status in hostile.items():
            response = post_fresh(tasks, data=body, headers=headers)
            assert response.status_code == status, (body[:40], response.status_code, response.text[:200])
            assert response.headers["Content-Type"] == "application/problem+json"

        def chunks():
            for _ in range(100):
                yield b"x" * 1024

        chunked = post_fresh(tasks, data=chunks(), headers=headers)  # no Content-Length, 100 KiB
        assert chunked.status_code == 413 and chunked.headers["Content-Type"] == "application/problem+json"
        assert chunked.request.headers.get("Transfer-Encoding") == "chunked"

        def exactly(size: int):
            head, tail = b'{"title": "x", "description": "', b'"}'
            body = head + b"d" * (size - len(head) - len(tail)) + tail
            yield body[: size // 2]
            yield body[size // 2:]

        limit = 65536
        at_limit = post_fresh(tasks, data=exactly(limit), headers=headers)
        assert at_limit.status_code == 422 and "description" in at_limit.json()["errors"]  # parsed, then validated
        assert post_fresh(tasks, data=exactly(limit + 1), headers=headers).status_code == 413

        junk = raw_request(base, b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                 b"Content-Type: application/json\r\n\r\n{\"a\":")
        assert junk.startswith(b"HTTP/1.1 4")

        too_long = raw_request(base, b"GET /api/v1/tasks?q=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = too_long.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 414") and b"Content-Type: application/problem+json" in head
        assert b'"status": 414' in body  # gunicorn's own rejection, in the same envelope

        # Every worker still serves normal requests.
        for _ in range(12):
            with requests.Session() as session:
                assert session.get(base + "/healthz", timeout=10).status_code == 200
                assert session.get(tasks, headers=bearer(token["access_token"]), timeout=10).status_code == 200
