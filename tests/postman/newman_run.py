"""Run docs/taskapi.postman_collection.json with newman against a live server (`make postman`, run by CI).

Starts SecantusDB, Redis and gunicorn (2 workers) on free loopback ports with the rate limits
on, as a user's server has them, then runs the whole collection twice in a row (each run makes
its own account), then its admin folder once more with an admin's token. Exit code: newman's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from config import ROOT
from taskapi.runtime import devserver
from tests.servers import MongoServer, RedisServer, gunicorn

NEWMAN = ROOT / "tools" / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "docs" / "taskapi.postman_collection.json"
ADMIN_EMAIL, ADMIN_PASSWORD = "postman-admin@example.com", "correct horse battery"


def main() -> int:
    if not NEWMAN.exists():
        print("newman is not installed: run `make postman` (it installs it with npm)", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="taskapi-newman-"))
    mongo, state, cache = MongoServer(logs).start(), RedisServer(logs).start(), RedisServer(logs).start()
    try:
        devserver.apply_migrations(mongo.uri)
        env = {"TASKAPI_ENV": "testing", "MONGODB_URI": mongo.uri, "REDIS_URL": state.url, "CACHE_REDIS_URL": cache.url,
               "JWT_SECRET_KEY": "newman-secret-" + "n" * 40, "RATELIMIT_ENABLED": "true",
               "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1"}
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "users", "create-admin", "--email", ADMIN_EMAIL,
                        "--password", ADMIN_PASSWORD], cwd=ROOT, env={**os.environ, **env}, check=True, capture_output=True)
        with gunicorn(env, workers=2, log_path=logs / "gunicorn.log") as base:
            common = [str(NEWMAN), "run", str(COLLECTION), "--env-var", f"baseUrl={base}", "--bail", "--color", "off"]
            for run in (1, 2):  # twice in a row: a rerun must be as green as the first run
                print(f"--- newman run {run}", flush=True)
                if subprocess.run(common, cwd=ROOT).returncode:
                    return 1
            token = requests.post(base + "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                  timeout=10).json()["access_token"]
            print("--- newman run 3: the admin folder with an admin's token", flush=True)
            admin = subprocess.run(common + ["--env-var", f"adminToken={token}", "--folder", "1 Start here",
                                             "--folder", "4 Admin (needs an admin token)"], cwd=ROOT)
            print(f"server logs: {logs}")
            return admin.returncode
    finally:
        for server in (mongo, state, cache):
            server.stop()
        shutil.rmtree(logs / "db", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
