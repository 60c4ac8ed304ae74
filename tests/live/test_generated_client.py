"""A Python client generated from /openapi.json with openapi-python-client works without
edits: the walkthrough (register, login, create, list, patch with If-Match, stats, logout) runs
through it against a live gunicorn, with readable function and enum names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.servers import gunicorn

WALKTHROUGH = r'''
import sys, uuid
from taskapi_client import AuthenticatedClient, Client
from taskapi_client.api.auth import get_me, login, logout, register
from taskapi_client.api.stats import dashboard
from taskapi_client.api.tasks import create_task, list_tasks, patch_task
from taskapi_client.models import ListTasksSort, Login, Problem, Register, TaskInput, TaskPatch, TaskPatchStatus

base = sys.argv[1]
email = f"gen-{uuid.uuid4().hex[:12]}@example.com"
public = Client(base_url=base)
user = register.sync(client=public, body=Register(email=email, password="correct horse battery", name="Gen"))
assert user.email == email, user
pair = login.sync(client=public, body=Login(email=email, password="correct horse battery"))
assert pair.token_type == "Bearer", pair
client = AuthenticatedClient(base_url=base, token=pair.access_token)

created = create_task.sync_detailed(client=client, body=TaskInput(title="Generated"), idempotency_key="gen-1")
assert created.status_code == 201, created.content
etag = created.headers["ETag"]
task = created.parsed
page = list_tasks.sync(client=client, sort=ListTasksSort.CREATED_AT_DESC, limit=5)
assert [item.id for item in page.items] == [task.id] and page.next_cursor is None, page

stale = patch_task.sync(task.id, client=client, body=TaskPatch(title="Changed"), if_match='"v9"')
assert isinstance(stale, Problem) and stale.status == 412, stale
done = patch_task.sync(task.id, client=client, body=TaskPatch(status=TaskPatchStatus.DONE), if_match=etag)
assert done.status == "done" and done.version == 2, done
numbers = dashboard.sync(client=client)
assert numbers.by_status.done == 1 and numbers.total == 1, numbers

assert logout.sync_detailed(client=client).status_code == 204
after = get_me.sync(client=client)
assert isinstance(after, Problem) and after.status == 401, after
print("walkthrough ok")
'''


def test_a_generated_python_client_runs_the_walkthrough(app_env, log_dir, app, tmp_path):
    venv_bin = Path(sys.executable).parent
    with gunicorn(app_env, workers=2, log_path=log_dir / "gunicorn-generated-client.log") as base:
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(requests.get(base + "/openapi.json", timeout=10).json()))
        env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        generated = subprocess.run(
            [str(venv_bin / "openapi-python-client"), "generate", "--path", str(spec), "--meta", "none",
             "--output-path", str(tmp_path / "taskapi_client")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert generated.returncode == 0, generated.stdout + generated.stderr
        assert "Warning" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
        modules = {p.stem for p in (tmp_path / "taskapi_client" / "api" / "tasks").glob("*.py")}
        assert {"create_task", "list_tasks", "get_task", "patch_task", "put_task", "delete_task"} <= modules
        run = subprocess.run([sys.executable, "-c", WALKTHROUGH, base], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "walkthrough ok"
