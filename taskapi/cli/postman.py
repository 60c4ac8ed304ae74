"""A Postman v2.1 collection that runs top to bottom, any number of times, green
(`flask --app wsgi openapi postman`; CI runs it twice with newman: `make postman`).

The run is a scenario, in the order below: the probes; a new account for this run (a unique
email, so a rerun never collides); its tasks (create with an Idempotency-Key, list, get, a
conditional get answered 304, PATCH and PUT with If-Match, stats, delete); its account pages
and a token refresh; the admin pages (403 unless `adminToken` holds an admin's access token);
and last what revokes tokens (password change, logout-all, logout), each followed by a request
that proves the old token is dead. Every request checks its status, content type and the
required fields of its response schema (from the OpenAPI document); the requests that define
a variable (`accessToken`, `refreshToken`, `taskId`, `etag`, `userId`) set it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
PATH_VARIABLES = {"task_id": "taskId", "user_id": "userId", "webhook_id": "webhookId", "delivery_id": "deliveryId"}
PASSWORD, NEW_PASSWORD = "correct horse battery", "a brand new passphrase"

SET_TOKENS = ["const tokens = pm.response.json();",
              'pm.collectionVariables.set("accessToken", tokens.access_token);',
              'pm.collectionVariables.set("refreshToken", tokens.refresh_token);']
SET_ETAG = ['pm.collectionVariables.set("etag", pm.response.headers.get("ETag"));']
ADMIN_AUTH = [  # the admin folder: an admin's token when one is given, else this run's user (403)
    'const admin = pm.variables.get("adminToken");  // a collection or environment variable',
    'const token = admin || pm.collectionVariables.get("accessToken");',
    'pm.request.headers.upsert({key: "Authorization", value: "Bearer " + token});',
]


@dataclass
class Step:
    operation: str  # operationId in the OpenAPI document
    name: str
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    token: str = "accessToken"  # the bearer token variable; "" for none
    tests: list[str] = field(default_factory=list)
    prerequest: list[str] = field(default_factory=list)
    admin: bool = False  # 200-class for an admin token, 403 otherwise


TASK = {"title": "Buy milk", "description": "Two litres", "priority": "high", "tags": ["home"],
        "due_at": "2030-12-01T17:00:00Z"}
FOLDERS: list[tuple[str, str, list[Step]]] = [
    ("1 Start here", "The probes, then a new account for this run (its email is unique) and a login.", [
        Step("healthz", "Liveness", 200, token=""),
        Step("readyz", "Readiness (MongoDB and Redis answer)", 200, token=""),
        Step("jwks", "The public keys that verify tokens (RS256/ES256; empty with HS256)", 200, token=""),
        Step("register", "Register a new account", 201, token="",
             body={"email": "{{email}}", "password": PASSWORD, "name": "Postman"},
             prerequest=['const unique = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;',
                         'pm.collectionVariables.set("email", `postman-${unique}@example.com`);'],
             tests=['pm.collectionVariables.set("userId", pm.response.json().id);',
                    'pm.test("the email is the one sent", () => '
                    'pm.expect(pm.response.json().email).to.eql(pm.collectionVariables.get("email")));']),
        Step("login", "Log in (stores accessToken and refreshToken)", 200, token="",
             body={"email": "{{email}}", "password": PASSWORD}, tests=SET_TOKENS),
    ]),
    ("2 Tasks", "The new user's tasks: create, read, conditional writes, stats, delete.", [
        Step("createTask", "Create a task (Idempotency-Key: a retry would replay it)", 201, body=TASK,
             headers={"Idempotency-Key": "{{$guid}}"},
             tests=['pm.collectionVariables.set("taskId", pm.response.json().id);', *SET_ETAG,
                    'pm.test("ETag is v1", () => pm.expect(pm.response.headers.get("ETag")).to.eql(\'"v1"\'));']),
        Step("listTasks", "List open tasks tagged home, by due date", 200,
             query={"status": "todo,in_progress", "tag": "home", "sort": "due_at", "limit": "20"},
             tests=['pm.test("the new task is listed", () => pm.expect(pm.response.json().items.map(t => t.id))'
                    '.to.include(pm.collectionVariables.get("taskId")));']),
        Step("getTask", "Get the task (stores its ETag)", 200, tests=SET_ETAG),
        Step("getTask", "Get it again with If-None-Match: 304, no body", 304, headers={"If-None-Match": "{{etag}}"}),
        Step("patchTask", "Start it, if nobody changed it (If-Match)", 200, body={"status": "in_progress"},
             headers={"If-Match": "{{etag}}"},
             tests=[*SET_ETAG, 'pm.test("version 2", () => pm.expect(pm.response.json().version).to.eql(2));']),
        Step("patchTask", "A stale If-Match is refused (412)", 412, body={"status": "done"},
             headers={"If-Match": '"v1"'}),
        Step("putTask", "Replace it (If-Match)", 200, body={**TASK, "status": "done"},
             headers={"If-Match": "{{etag}}"},
             tests=[*SET_ETAG, 'pm.test("done, with completed_at", () => '
                               'pm.expect(pm.response.json().completed_at).to.be.a("string"));']),
        Step("dashboard", "Dashboard numbers", 200,
             tests=['pm.test("one task, done", () => { const d = pm.response.json(); pm.expect(d.total).to.eql(1); '
                    'pm.expect(d.by_status.done).to.eql(1); });']),
        Step("completions", "Created and completed per day (7 days)", 200, query={"days": "7"},
             tests=['pm.test("seven days", () => pm.expect(pm.response.json().days).to.have.lengthOf(7));']),
        Step("deleteTask", "Delete it (If-Match)", 204, headers={"If-Match": "{{etag}}"}),
        Step("getTask", "It is gone (404)", 404),
    ]),
    ("3 Webhooks", "A webhook for this run's tasks: create (the answer holds its secret), read, change, rotate its "
     "secret, ping, read its delivery log, delete. Deliveries are made by the notification worker "
     "(`flask --app wsgi worker`); example.com does not answer them.", [
        Step("createWebhook", "Subscribe a URL to task events (stores webhookId)", 201,
             body={"url": "https://example.com/hooks/taskapi", "events": ["task.created", "task.completed"],
                   "description": "Postman"},
             tests=['pm.collectionVariables.set("webhookId", pm.response.json().id);',
                    'pm.test("the secret is shown once", () => '
                    'pm.expect(pm.response.json().secret).to.match(/^whsec_/));']),
        Step("listWebhooks", "List webhooks", 200, query={"limit": "20"},
             tests=['pm.test("the new webhook is listed", () => pm.expect(pm.response.json().items.map(w => w.id))'
                    '.to.include(pm.collectionVariables.get("webhookId")));']),
        Step("getWebhook", "Get the webhook (no secret)", 200,
             tests=['pm.test("no secret", () => pm.expect(pm.response.json()).to.not.have.property("secret"));']),
        Step("updateWebhook", "Subscribe it to every event", 200, body={"events": ["*"]},
             tests=['pm.test("every event", () => pm.expect(pm.response.json().events).to.eql(["*"]));']),
        Step("rotateWebhookSecret", "Rotate its secret (the old one signs for 24 h more)", 200),
        Step("pingWebhook", "Ping it (202: the worker sends a webhook.ping)", 202),
        Step("listDeliveries", "Its delivery log", 200, query={"limit": "20"}),
        Step("redeliver", "Redeliver an unknown delivery (404)", 404,
             prerequest=['pm.collectionVariables.set("deliveryId", "000000000000000000000000");']),
        Step("deleteWebhook", "Delete it", 204),
        Step("getWebhook", "It is gone (404)", 404),
    ]),
    ("4 Account", "The caller's own account, and a token refresh (the refresh token works once).", [
        Step("getMe", "Who am I", 200,
             tests=['pm.test("this run\'s user", () => '
                    'pm.expect(pm.response.json().email).to.eql(pm.collectionVariables.get("email")));']),
        Step("updateMe", "Change the display name", 200, body={"name": "Postman, renamed"}),
        Step("refresh", "Refresh (rotates both tokens)", 200, token="refreshToken", tests=SET_TOKENS),
        Step("requestPasswordReset", "Ask for a password-reset email (202 for any address)", 202, token="",
             body={"email": "{{email}}"}),
        Step("confirmPasswordReset", "A token that was never emailed is refused (422)", 422, token="",
             body={"token": "not-a-real-token", "new_password": NEW_PASSWORD}),
    ]),
    ("5 Admin (needs an admin token)", "User administration. Set the collection variable adminToken to an admin's "
     "access token (make an admin with `.venv/bin/flask --app wsgi users create-admin`, then log in as them) to run these "
     "as an admin; without it they run as this run's user and are refused with 403.", [
        Step("listUsers", "List users", 200, query={"limit": "20"}, admin=True),
        Step("getUser", "Get this run's user", 200, admin=True),
        Step("updateUser", "Re-activate this run's user (no change)", 200, body={"active": True}, admin=True),
    ]),
    ("6 Revocation (last)", "What ends tokens, each checked by a request with the old token.", [
        Step("changePassword", "Change the password (ends every token)", 204,
             body={"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        Step("getMe", "The old token is dead (401)", 401),
        Step("login", "Log in with the new password", 200, token="",
             body={"email": "{{email}}", "password": NEW_PASSWORD}, tests=SET_TOKENS),
        Step("logoutAll", "Log out everywhere", 204),
        Step("getMe", "Dead after logout-all (401)", 401),
        Step("login", "Log in again", 200, token="", body={"email": "{{email}}", "password": NEW_PASSWORD},
             tests=SET_TOKENS),
        Step("logout", "Log out this session", 204),
        Step("getMe", "Dead after logout (401)", 401),
    ]),
]


def build_collection(spec: dict[str, Any]) -> dict[str, Any]:
    operations = {op["operationId"]: (path, method, op) for path, ops in spec["paths"].items()
                  for method, op in ops.items() if isinstance(op, dict) and "operationId" in op}
    return {
        "info": {
            "_postman_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "taskapi-postman-collection")),
            "name": spec["info"]["title"],
            "description": f"Generated from /openapi.json (API {spec['info']['version']}). Set baseUrl and run the "
                           "collection top to bottom (Run collection, or `newman run`): each run makes its own "
                           "account, so it can run again at once. Admin requests need adminToken (see folder 5).",
            "schema": SCHEMA_URL,
        },
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{accessToken}}", "type": "string"}]},
        "variable": [{"key": key, "value": value, "type": "string"} for key, value in (
            ("baseUrl", "http://localhost:8000"), ("adminToken", ""), ("email", ""), ("accessToken", ""),
            ("refreshToken", ""), ("taskId", ""), ("etag", ""), ("userId", ""))],
        "item": [{"name": name, "description": description,
                  "item": [_item(spec, step, *operations[step.operation]) for step in steps]}
                 for name, description, steps in FOLDERS],
    }


def _item(spec: dict[str, Any], step: Step, path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    postman_path = re.sub(r"\{(\w+)\}", lambda m: "{{" + PATH_VARIABLES.get(m.group(1), m.group(1)) + "}}", path)
    query = [{"key": key, "value": value} for key, value in step.query.items()]
    raw = "{{baseUrl}}" + postman_path + ("?" + "&".join(f"{k}={v}" for k, v in step.query.items()) if query else "")
    request: dict[str, Any] = {
        "method": method.upper(),
        "header": [{"key": key, "value": value} for key, value in step.headers.items()],
        "url": {"raw": raw, "host": ["{{baseUrl}}"], "path": [part for part in postman_path.split("/") if part],
                **({"query": query} if query else {})},
        "description": operation.get("description") or operation.get("summary", ""),
    }
    if step.admin or not step.token:
        request["auth"] = {"type": "noauth"}
    elif step.token != "accessToken":
        request["auth"] = {"type": "bearer", "bearer": [{"key": "token", "value": "{{" + step.token + "}}",
                                                         "type": "string"}]}
    if step.body is not None:
        request["header"].append({"key": "Content-Type", "value": "application/json"})
        request["body"] = {"mode": "raw", "raw": json.dumps(step.body, indent=2, ensure_ascii=False),
                           "options": {"raw": {"language": "json"}}}
    events = [{"listen": "test", "script": {"type": "text/javascript", "exec": _tests(spec, step, operation)}}]
    prerequest = [*step.prerequest, *(ADMIN_AUTH if step.admin else [])]
    if prerequest:
        events.insert(0, {"listen": "prerequest", "script": {"type": "text/javascript", "exec": prerequest}})
    return {"name": step.name, "request": request, "event": events}


def _tests(spec: dict[str, Any], step: Step, operation: dict[str, Any]) -> list[str]:
    """Status, content type and the response schema's required fields; problem+json for errors."""
    lines: list[str] = []
    if step.admin:
        lines += ['const admin = !!pm.variables.get("adminToken");',
                  f'pm.test(admin ? "{step.status} for an admin" : "403 without an admin token", '
                  f'() => pm.response.to.have.status(admin ? {step.status} : 403));',
                  "if (!admin) { pm.test(\"a problem+json\", () => pm.expect(pm.response.headers.get(\"Content-Type\"))"
                  ".to.include(\"application/problem+json\")); return; }"]
    else:
        lines.append(f'pm.test("status {step.status}", () => pm.response.to.have.status({step.status}));')
    if step.status >= 400:
        lines.append('pm.test("a problem+json", () => { pm.expect(pm.response.headers.get("Content-Type"))'
                     f'.to.include("application/problem+json"); pm.expect(pm.response.json().status).to.eql({step.status}); }});')
    else:
        required = _required_fields(spec, operation, step.status)
        if required is not None:
            lines.append('pm.test("JSON with the documented fields", () => { pm.expect(pm.response.headers.get("Content-Type"))'
                         '.to.include("application/json"); pm.expect(Object.keys(pm.response.json()))'
                         f".to.include.members({json.dumps(required)}); }});")
        elif step.status in (204, 304):
            lines.append('pm.test("no body", () => pm.expect(pm.response.text()).to.eql(""));')
    return lines + step.tests


def _required_fields(spec: dict[str, Any], operation: dict[str, Any], status: int) -> list[str] | None:
    response = _resolve(spec, operation["responses"].get(str(status), {}))
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    schema = _resolve(spec, schema)
    return sorted(schema.get("required", []))


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        section, _, name = node["$ref"].removeprefix("#/components/").partition("/")
        node = spec["components"][section][name]
    return node
