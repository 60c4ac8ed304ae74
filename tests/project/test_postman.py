"""The Postman collection: generated from the spec, committed and in sync, and a scenario a user
can run top to bottom and again (newman runs it twice in CI: `make postman`)."""

from __future__ import annotations

import json

from config import ROOT
from taskapi.cli import COLLECTION
from taskapi.cli.postman import SCHEMA_URL, build_collection

REVOKING = {"POST /api/v1/auth/password", "POST /api/v1/auth/logout", "POST /api/v1/auth/logout-all"}


def requests_of(collection):
    return [(folder["name"], item) for folder in collection["item"] for item in folder["item"]]


def signature(item):
    path = "/" + "/".join(item["request"]["url"]["path"])
    for variable, name in (("{{taskId}}", "{task_id}"), ("{{userId}}", "{user_id}"), ("{{webhookId}}", "{webhook_id}"),
                           ("{{deliveryId}}", "{delivery_id}")):
        path = path.replace(variable, name)
    return f"{item['request']['method']} {path}"


def script(item, listen="test"):
    return "\n".join(line for event in item.get("event", []) if event["listen"] == listen
                     for line in event["script"]["exec"])


def test_committed_collection_matches_the_spec(app, runner, tmp_path):
    result = runner.invoke(args=["openapi", "postman", "--output", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    generated = json.loads((tmp_path / "c.json").read_text())
    committed = json.loads((ROOT / COLLECTION).read_text())
    assert generated == committed, "run `.venv/bin/flask --app wsgi openapi postman` and commit the result"


def test_every_operation_is_in_the_run_and_revocation_comes_last(client):
    spec = client.get("/openapi.json").get_json()
    collection = build_collection(spec)
    assert collection["info"]["schema"] == SCHEMA_URL
    operations = {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops
                  if method != "parameters"}
    run = [signature(item) for _, item in requests_of(collection)]
    assert operations == set(run), operations ^ set(run)
    first_revocation = min(i for i, name in enumerate(run) if name in REVOKING)
    assert all(name in REVOKING or name.endswith(("/auth/me", "/auth/login")) for name in run[first_revocation:])
    assert collection["item"][-1]["name"].endswith("(last)")


def test_every_request_asserts_its_status_and_variables_are_set_by_their_responses(client):
    collection = build_collection(client.get("/openapi.json").get_json())
    items = requests_of(collection)
    for folder, item in items:
        tests = script(item)
        assert "pm.response.to.have.status(" in tests, f"{folder} / {item['name']} asserts nothing"
        assert "documented fields" in tests or "problem+json" in tests or "no body" in tests, item["name"]
    setters = {variable: [item["name"] for _, item in items if f'collectionVariables.set("{variable}"' in script(item)]
               for variable in ("accessToken", "refreshToken", "taskId", "etag", "userId")}
    assert all(setters.values()), setters
    register = next(item for _, item in items if signature(item) == "POST /api/v1/auth/register")
    assert "Date.now()" in script(register, "prerequest"), "each run registers a new account"
    assert json.loads(register["request"]["body"]["raw"])["email"] == "{{email}}"


def test_header_parameters_and_the_admin_folder(client):
    collection = build_collection(client.get("/openapi.json").get_json())
    items = requests_of(collection)
    headers = {(signature(item), h["key"]) for _, item in items for h in item["request"]["header"]}
    assert ("POST /api/v1/tasks", "Idempotency-Key") in headers
    assert ("PATCH /api/v1/tasks/{task_id}", "If-Match") in headers
    assert ("GET /api/v1/tasks/{task_id}", "If-None-Match") in headers
    admin = next(folder for folder in collection["item"] if folder["name"].startswith("5 Admin"))
    assert "adminToken" in admin["description"] and "create-admin" in admin["description"]
    for item in admin["item"]:
        assert "403" in script(item) and "adminToken" in script(item, "prerequest")
    assert all("{task_id}" not in item["request"]["url"]["raw"] for _, item in items)


def test_export_writes_the_spec(runner, tmp_path, client):
    runner.invoke(args=["openapi", "export", "--output", str(tmp_path / "openapi.json")])
    assert json.loads((tmp_path / "openapi.json").read_text()) == client.get("/openapi.json").get_json()
