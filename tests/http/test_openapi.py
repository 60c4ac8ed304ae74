"""The OpenAPI document and the docs page, served with local assets only."""

import re


def test_openapi_document_lists_probes(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "taskapi"
    assert {"/healthz", "/readyz"} <= set(spec["paths"])
    assert "Problem" in spec["components"]["schemas"]


def test_docs_page_uses_local_assets_only(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in html
    assert not re.search(r"(src|href)=\"https?://", html), "docs must not load assets from a CDN"
    assert '<link rel="icon" href="data:,"/>' in html, "browsers would ask for /favicon.ico (a 404 in the log)"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        response = client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.get_data()) > 1000


def test_every_operation_has_an_id_a_summary_a_description_and_its_security(client):
    spec = client.get("/openapi.json").get_json()
    ids = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            ids.append(operation["operationId"])
            assert operation.get("summary") and operation.get("description"), f"{method} {path}"
            public = path in ("/healthz", "/readyz", "/.well-known/jwks.json") or path.endswith(
                ("/auth/register", "/auth/login", "/auth/password-reset", "/auth/password-reset/confirm"))
            assert operation["security"] == ([] if public else [{"bearerAuth": []}]), f"{method} {path}"
            assert any(code.startswith("4") for code in operation["responses"]), f"{method} {path} has no 4xx"
    assert len(ids) == len(set(ids)) and "listTasks" in ids and "logoutAll" in ids
    assert spec["servers"] == [{"url": "/", "description": "this deployment"}]
    assert spec["info"]["license"]["url"] == "/license" and spec["info"]["contact"]["email"]
    assert client.get("/license").status_code == 200
