"""docs/api.md tells client developers the truth: every operation it names is in /openapi.json
with that method, and the defaults it quotes are the configuration's."""

from __future__ import annotations

import re

from config import ROOT, Config

DOC = (ROOT / "docs" / "api.md").read_text()


def test_every_operation_the_client_guide_names_is_in_the_openapi_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    named = set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[a-z/_-]+)", DOC))
    named |= {("POST", path) for path in re.findall(r"-X POST \$API(/[a-z/_-]+)", DOC)}
    named |= {("POST", path) for path in re.findall(r"`POST \$API(/[a-z/_-]+)`", DOC)}
    assert len(named) >= 6
    for method, path in named:
        full = f"/api/v1{path}"
        assert full in paths, f"docs/api.md names {method} {path}, which /openapi.json does not have"
        assert method.lower() in paths[full], f"{full} has no {method} in /openapi.json"


def test_the_limits_and_lifetimes_the_guide_quotes_are_the_defaults(monkeypatch):
    for name in ("RATELIMIT_DEFAULT", "RATELIMIT_LOGIN", "RATELIMIT_LOGIN_ACCOUNT", "RATELIMIT_REGISTER",
                 "ACCESS_TOKEN_TTL_SECONDS", "MAX_CONTENT_LENGTH", "CACHE_TTL_SECONDS"):
        monkeypatch.delenv(name, raising=False)  # the defaults, whatever this shell sets
    config = Config()
    quoted = {
        "600 requests a minute": config.RATELIMIT_PER_IDENTITY == "600/minute",
        "per IP (10/minute)": config.RATELIMIT_LOGIN == "10/minute",
        "per IP and account\n  (5/minute)": config.RATELIMIT_LOGIN_ACCOUNT == "5/minute",
        "registration per IP (20/hour)": config.RATELIMIT_REGISTER == "20/hour",
        "It\n  lives 15 minutes": config.ACCESS_TOKEN_TTL_SECONDS == 900,
        "(64 KiB by default)": config.MAX_CONTENT_LENGTH == 65536,
        "(30 s by default)": config.CACHE_TTL_SECONDS == 30,
    }
    for phrase, holds in quoted.items():
        assert phrase in DOC, f"docs/api.md no longer says {phrase!r}"
        assert holds, f"docs/api.md says {phrase!r}, the configuration says otherwise"


def test_the_page_size_the_guide_quotes_is_the_schema_s(client):
    spec = client.get("/openapi.json").get_json()
    limit = next(p for p in spec["paths"]["/api/v1/tasks"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"], limit["schema"]["default"]) == (1, 100, 20)
