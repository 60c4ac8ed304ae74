"""The Grafana dashboard and the Prometheus rules ask only for series the app really exports
(promtool, in `make lint`, checks their syntax and that the alerts fire on the series they
should)."""

from __future__ import annotations

import json
import re

import yaml

from config import ROOT

DEPLOY = ROOT / "deploy"


def expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "taskapi-rules.yml").read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "taskapi-dashboard.json").read_text())
    found += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return found


def test_every_series_the_dashboard_and_the_alerts_use_is_exported(client):
    client.get("/healthz")  # one request, so the request series exist
    exported = {line.split("{")[0].split(" ")[0] for line in client.get("/metrics").get_data(as_text=True).splitlines()
                if line and not line.startswith("#")}
    used = {name for expr in expressions() for name in re.findall(r"\b(taskapi_[a-z_]+)", expr)}
    assert used and used <= exported, used - exported
    assert "taskapi_http_requests_total" in used and "taskapi_webhook_deliveries_total" in used


def test_the_dashboard_has_a_datasource_variable_and_unique_panel_ids():
    dashboard = json.loads((DEPLOY / "grafana" / "taskapi-dashboard.json").read_text())
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert "datasource" in names and "instance" in names
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(panel["targets"] for panel in dashboard["panels"])


def test_the_capacity_model_page_is_the_last_benchmark_run():
    """docs/scaling.md is written by `make bench` from bench/results.json: a hand edit, or a run
    whose page was not kept, shows here (`python -m bench.run --render` rewrites it)."""
    from bench import capacity

    report = json.loads((ROOT / "bench" / "results.json").read_text())
    page = (ROOT / "docs" / "scaling.md").read_text()
    assert page == capacity.document(report)
    assert f"commit `{report['commit']}`" in page and f"{report['capacity_model']['requests_per_core']:,}" in page
