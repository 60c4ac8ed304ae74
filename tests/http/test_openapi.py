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
