"""Run docs/taskapi.postman_collection.json with newman against a live server (`make postman`, run by CI).

Starts SecantusDB, Redis and gunicorn (2 workers) on free loopback ports with the rate limits
on, as a user's server has them, then runs the whole collection twice in a row (each run makes
its own account), then its admin folder once more with an admin's token. Exit code: newman's.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from config import ROOT
from tests.servers import live_app

NEWMAN = ROOT / "tools" / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "docs" / "taskapi.postman_collection.json"
ADMIN_EMAIL, ADMIN_PASSWORD = "postman-admin@example.com", "correct horse battery"


def main() -> int:
    if not NEWMAN.exists():
        print("newman is not installed: run `make postman` (it installs it with npm)", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="taskapi-newman-"))
    with live_app(logs, admin=(ADMIN_EMAIL, ADMIN_PASSWORD), RATELIMIT_ENABLED="true") as base:
        common = [str(NEWMAN), "run", str(COLLECTION), "--env-var", f"baseUrl={base}", "--bail", "--color", "off"]
        for run in (1, 2):  # twice in a row: a rerun must be as green as the first run
            print(f"--- newman run {run}", flush=True)
            if subprocess.run(common, cwd=ROOT).returncode:
                return 1
        token = requests.post(base + "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                              timeout=10).json()["access_token"]
        print("--- newman run 3: the admin folder with an admin's token", flush=True)
        admin = subprocess.run(common + ["--env-var", f"adminToken={token}", "--folder", "1 Start here",
                                         "--folder", "5 Admin (needs an admin token)"], cwd=ROOT)
        print(f"server logs: {logs}")
        return admin.returncode


if __name__ == "__main__":
    sys.exit(main())
