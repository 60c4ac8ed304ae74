"""The Postman collection is generated from the spec, committed, and kept in sync."""

from __future__ import annotations

import json

from config import ROOT
from taskapi.cli import COLLECTION
from taskapi.cli.postman import SCHEMA_URL, build_collection


def test_committed_collection_matches_the_spec(app, runner, tmp_path):
    result = runner.invoke(args=["openapi", "postman", "--output", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    generated = json.loads((tmp_path / "c.json").read_text())
    committed = json.loads((ROOT / COLLECTION).read_text())
    assert generated == committed, "run `flask --app wsgi openapi postman` and commit the result"


def test_collection_is_usable(client):
    collection = build_collection(client.get("/openapi.json").get_json())
    assert collection["info"]["schema"] == SCHEMA_URL
    assert {v["key"] for v in collection["variable"]} >= {"baseUrl", "accessToken", "refreshToken", "taskId"}
    assert collection["auth"]["bearer"][0]["value"] == "{{accessToken}}"
    folders = {folder["name"]: folder["item"] for folder in collection["item"]}
    assert {"auth", "tasks", "stats", "users", "ops"} <= set(folders)
    login = next(i for i in folders["auth"] if i["request"]["url"]["raw"] == "{{baseUrl}}/api/v1/auth/login")
    script = "\n".join(login["event"][0]["script"]["exec"])
    assert 'collectionVariables.set("accessToken"' in script and login["request"]["auth"] == {"type": "noauth"}
    assert json.loads(login["request"]["body"]["raw"]) == {"email": "ada@example.com", "password": "correct horse battery"}
    urls = [i["request"]["url"]["raw"] for items in folders.values() for i in items]
    assert "{{baseUrl}}/api/v1/tasks/{{taskId}}" in urls and not any("{task_id}" in u for u in urls)
    create = next(i for i in folders["tasks"] if i["request"]["method"] == "POST")
    assert json.loads(create["request"]["body"]["raw"])["title"] == "Buy milk"
    for items in folders.values():
        for item in items:
            if "body" in item["request"]:
                json.loads(item["request"]["body"]["raw"])  # every example body is JSON


def test_export_writes_the_spec(runner, tmp_path, client):
    runner.invoke(args=["openapi", "export", "--output", str(tmp_path / "openapi.json")])
    assert json.loads((tmp_path / "openapi.json").read_text()) == client.get("/openapi.json").get_json()
