"""A Postman v2.1 collection generated from the OpenAPI document (`flask --app wsgi openapi postman`).

Folders follow the spec's tags; requests carry example bodies built from the schemas; the
collection's bearer auth uses {{accessToken}}, which the login request's test script stores
(with {{refreshToken}}), as the create-task request stores {{taskId}}.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
PATH_VARIABLES = {"task_id": "taskId", "user_id": "userId"}
SCRIPTS = {
    ("post", "/api/v1/auth/login"): [
        'pm.test("logged in", () => pm.response.to.have.status(200));',
        "const tokens = pm.response.json();",
        'pm.collectionVariables.set("accessToken", tokens.access_token);',
        'pm.collectionVariables.set("refreshToken", tokens.refresh_token);',
    ],
    ("post", "/api/v1/auth/refresh"): [
        'pm.test("rotated", () => pm.response.to.have.status(200));',
        "const tokens = pm.response.json();",
        'pm.collectionVariables.set("accessToken", tokens.access_token);',
        'pm.collectionVariables.set("refreshToken", tokens.refresh_token);',
    ],
    ("post", "/api/v1/tasks"): [
        'pm.test("created", () => pm.response.to.have.status(201));',
        'pm.collectionVariables.set("taskId", pm.response.json().id);',
    ],
}
EXAMPLE_BODIES = {  # bodies a newcomer can send as they are
    ("post", "/api/v1/auth/register"): {"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"},
    ("post", "/api/v1/auth/login"): {"email": "ada@example.com", "password": "correct horse battery"},
    ("post", "/api/v1/auth/password"): {"current_password": "correct horse battery", "new_password": "a new passphrase"},
}


def build_collection(spec: dict[str, Any]) -> dict[str, Any]:
    folders: dict[str, list[dict]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            tag = (operation.get("tags") or ["other"])[0]
            folders.setdefault(tag, []).append(_item(spec, path, method, operation))
    tags = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    return {
        "info": {
            "_postman_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "taskapi-postman-collection")),
            "name": spec["info"]["title"],
            "description": f"Generated from /openapi.json (API {spec['info']['version']}). Set baseUrl, run "
                           "Auth > login: its test script stores the tokens the other requests use.",
            "schema": SCHEMA_URL,
        },
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{accessToken}}", "type": "string"}]},
        "variable": [{"key": "baseUrl", "value": "http://localhost:8000", "type": "string"},
                     {"key": "accessToken", "value": "", "type": "string"},
                     {"key": "refreshToken", "value": "", "type": "string"},
                     {"key": "taskId", "value": "", "type": "string"},
                     {"key": "userId", "value": "", "type": "string"}],
        "item": [{"name": tag, "description": tags.get(tag, ""), "item": items} for tag, items in folders.items()],
    }


def _item(spec: dict, path: str, method: str, operation: dict) -> dict[str, Any]:
    postman_path = re.sub(r"\{(\w+)\}", lambda m: "{{" + PATH_VARIABLES.get(m.group(1), m.group(1)) + "}}", path)
    query = [{"key": p["name"], "value": "", "description": p.get("description", ""), "disabled": True}
             for p in _parameters(spec, path, method) if p["in"] == "query"]
    request: dict[str, Any] = {
        "method": method.upper(),
        "header": [],
        "url": {"raw": "{{baseUrl}}" + postman_path, "host": ["{{baseUrl}}"],
                "path": [part for part in postman_path.split("/") if part], **({"query": query} if query else {})},
        "description": operation.get("description") or operation.get("summary", ""),
    }
    if not operation.get("security"):
        request["auth"] = {"type": "noauth"}
    elif path == "/api/v1/auth/refresh":
        request["auth"] = {"type": "bearer", "bearer": [{"key": "token", "value": "{{refreshToken}}", "type": "string"}]}
    body_schema = (operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema"))
    if body_schema is not None:
        body = EXAMPLE_BODIES.get((method, path)) or _example(spec, body_schema)
        request["header"].append({"key": "Content-Type", "value": "application/json"})
        request["body"] = {"mode": "raw", "raw": _json(body), "options": {"raw": {"language": "json"}}}
    item: dict[str, Any] = {"name": operation.get("summary") or f"{method.upper()} {path}", "request": request}
    script = SCRIPTS.get((method, path))
    if script:
        item["event"] = [{"listen": "test", "script": {"type": "text/javascript", "exec": script}}]
    return item


def _parameters(spec: dict, path: str, method: str) -> list[dict]:
    operation = spec["paths"][path]
    return [_resolve(spec, p) for p in operation.get("parameters", []) + operation[method].get("parameters", [])]


def _resolve(spec: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        section, _, name = node["$ref"].removeprefix("#/components/").partition("/")
        node = spec["components"][section][name]
    return node


def _example(spec: dict, schema: dict) -> Any:
    schema = _resolve(spec, schema)
    if "example" in schema:
        return schema["example"]
    if schema.get("type") == "object" or "properties" in schema:
        return {name: _example(spec, prop) for name, prop in schema.get("properties", {}).items()
                if not _resolve(spec, prop).get("readOnly") and ("example" in _resolve(spec, prop)
                                                                 or name in schema.get("required", []))}
    if "enum" in schema:
        return schema["enum"][0]
    return {"integer": 1, "number": 1.0, "boolean": True, "array": []}.get(str(schema.get("type")), "string")


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)
