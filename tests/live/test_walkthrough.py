"""The README's curl walkthrough, run as written against a live gunicorn."""

from __future__ import annotations

import re
import subprocess

from config import ROOT
from tests.servers import gunicorn


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->", readme, re.S)
    assert block, "README.md lost its walkthrough block"
    return block.group(1)


def test_readme_walkthrough_runs_again_and_again_and_leaves_nothing_behind(app_env, log_dir, app, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with gunicorn(app_env, workers=2, log_path=log_dir / "gunicorn-walkthrough.log") as base:
        for _ in range(2):  # a reader tries it twice: same output, no conflicts, no stale ETags
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=tmp_path,
                                    env={"PATH": "/usr/bin:/bin", "API": base, "TMPDIR": str(temp)},
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            lines = result.stdout.strip().splitlines()
            assert lines[0] == "Ada"
            assert re.fullmatch(r'created [0-9a-f]{24} with ETag "v1"', lines[1])
            assert lines[2:] == ["Buy milk", "done", "1", "204", "401"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and not list(temp.iterdir()), "files left behind"


def test_readme_webhook_walkthrough_delivers_a_verified_event(app_env, log_dir, app, tmp_path):
    """The webhook walkthrough, as written, against gunicorn and a notification worker."""
    import sys

    from tests.servers import worker

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- webhook-walkthrough:start -->\n```bash\n(.*?)```\n<!-- webhook-walkthrough:end -->",
                      readme, re.S)
    assert block, "README.md lost its webhook walkthrough block"
    env = {**app_env, "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32"}
    with gunicorn(env, workers=2, log_path=log_dir / "gunicorn-hooks.log") as base, \
            worker(env, log_dir / "worker-walkthrough.log"):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.group(1)], cwd=tmp_path,
                                env={"PATH": "/usr/bin:/bin", "API": base, "PY": sys.executable,
                                     "TMPDIR": str(tmp_path)},
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["task.created Water the plants (signature verified)", "succeeded"]
    assert list(tmp_path.iterdir()) == [], "files left behind"
