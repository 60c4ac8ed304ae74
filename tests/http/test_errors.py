"""Every error is RFC 9457 problem+json: routing, body gate, validation, crashes, request ids."""

from __future__ import annotations

import logging

import pytest
from marshmallow import Schema, fields, validate

from taskapi import create_app
from taskapi.extensions import get_db
from taskapi.http.api import get_api
from taskapi.http.blueprint import Blueprint
from tests.helpers import assert_problem


class EchoSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=10))
    tags = fields.List(fields.String(validate=validate.Length(max=3)))


class EchoQuery(Schema):
    limit = fields.Integer(validate=validate.Range(min=1, max=5))


@pytest.fixture(scope="module")
def probe_app(app):
    """The real app's machinery plus a few routes that exercise it (same servers as `app`)."""
    application = create_app("testing")
    blp = Blueprint("probe", __name__)

    @blp.route("/echo", methods=["POST"])
    @blp.arguments(EchoSchema)
    @blp.arguments(EchoQuery, location="query")
    @blp.response(200, EchoSchema)
    def echo(body, query):
        return body

    @blp.route("/nobody", methods=["POST"])
    @blp.response(204)
    def nobody():
        return None

    @blp.route("/boom", methods=["GET"])
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    @blp.route("/mongo", methods=["GET"])
    def mongo():
        get_db().command("ping")
        return {"ok": True}

    get_api(application).register_blueprint(blp, url_prefix="/_probe")
    return application


@pytest.fixture
def probe(probe_app):
    return probe_app.test_client()


def test_unknown_route_is_404_problem(client):
    assert_problem(client.get("/nope"), 404)
    assert_problem(client.get("/api/v1/tasks/nope/deeper"), 404)


def test_wrong_method_is_405_with_allow(client):
    response = client.put("/healthz")
    assert_problem(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


@pytest.mark.parametrize(
    "raw",
    [
        b"{",  # syntax
        b'{"title": "a",}',  # trailing comma
        b'{"title": NaN}',  # NaN is not JSON
        b'{"title": Infinity}',
        b'{"title": "a", "title": "b"}',  # duplicate keys
        b'["title"]',  # an array, not an object
        b'"title"',
        b"null",
        b'{"title": "\xff"}',  # invalid UTF-8
        b'{"title": "\\ud800"}',  # lone surrogate
        b'{"title": "a\\u0000b"}',  # NUL character
        b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deep nesting
        b'{"a": ' * 40 + b"1" + b"}" * 40,  # deeper than the limit, within the parser's
        b"   ",
    ],
)
def test_bad_json_bodies_are_400(probe, raw):
    response = probe.post("/_probe/echo", data=raw, content_type="application/json")
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "raw, plain",
    [
        (b'{"n": ' + b"9" * 5000 + b"}", "a number has too many digits"),
        ("\ufeff{}".encode(), "byte order mark"),
        (b'{"a": 1,}', "a member name in double quotes was expected (line 1, column 9)"),
        (b'{"a": 1} 2', "more than one JSON value"),
    ],
)
def test_parser_errors_are_plain_words(probe, raw, plain):
    detail = assert_problem(probe.post("/_probe/echo", data=raw, content_type="application/json"), 400)["detail"]
    assert plain in detail
    for internal in ("sys.", "set_int_max_str_digits", "utf-8-sig", "Expecting", "char "):
        assert internal not in detail


def test_missing_body_on_json_route_is_400(probe):
    assert_problem(probe.post("/_probe/echo"), 400)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                     "application/json; charset=latin-1"]
)
def test_non_json_body_is_415(probe, content_type):
    response = probe.post("/_probe/echo", data='{"title": "a"}', content_type=content_type)
    assert_problem(response, 415)


def test_body_on_route_that_takes_none_is_415(probe):
    assert_problem(probe.post("/_probe/nobody", json={"x": 1}), 415)
    assert probe.post("/_probe/nobody").status_code == 204


def test_body_over_limit_is_413(probe, probe_app):
    limit = probe_app.config["MAX_CONTENT_LENGTH"]
    payload = '{"title": "' + "a" * limit + '"}'
    assert_problem(probe.post("/_probe/echo", data=payload, content_type="application/json"), 413)


def test_valid_body_passes_and_plus_json_is_json(probe):
    response = probe.post("/_probe/echo", data='{"title": "ok"}', content_type="application/merge-patch+json")
    assert response.status_code == 200
    assert response.get_json() == {"title": "ok"}


def test_validation_is_422_with_field_errors(probe):
    body = assert_problem(probe.post("/_probe/echo", json={"title": "", "tags": ["abcd"]}), 422)
    assert set(body["errors"]) == {"title", "tags.0"}
    assert all(isinstance(m, list) and m for m in body["errors"].values())


def test_unknown_body_field_is_422(probe):
    body = assert_problem(probe.post("/_probe/echo", json={"title": "a", "owner": "x"}), 422)
    assert "owner" in body["errors"]


def test_unknown_query_parameter_is_422(probe):
    body = assert_problem(probe.post("/_probe/echo?limit=2&sort=x", json={"title": "a"}), 422)
    assert "sort" in body["errors"]
    assert assert_problem(probe.post("/_probe/echo?limit=9", json={"title": "a"}), 422)["errors"]["limit"]


def test_unhandled_exception_is_500_logged_without_internals(probe):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("taskapi")
    logger.addHandler(handler)
    try:
        response = probe.get("/_probe/boom", headers={"X-Request-ID": "crash-1"})
    finally:
        logger.removeHandler(handler)
    body = assert_problem(response, 500)
    assert "passwd" not in response.get_data(as_text=True)
    assert body["request_id"] == "crash-1"
    assert any(r.exc_info and "passwd" in str(r.exc_info[1]) and r.request_id == "crash-1" for r in records)


def test_request_id_is_echoed_when_sane(client):
    response = client.get("/healthz", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert response.headers["X-Request-ID"] == "abc.DEF_123-x"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "ünicode"])
def test_insane_request_id_is_replaced(client, bad):
    response = client.get("/nope", headers={"X-Request-ID": bad})
    generated = response.headers["X-Request-ID"]
    assert generated != bad and len(generated) == 32
    assert response.get_json(force=True)["request_id"] == generated
