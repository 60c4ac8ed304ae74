"""Fuzz the live API from its own /openapi.json with schemathesis (`make fuzz`, run by CI).

Starts SecantusDB, Redis and gunicorn (2 workers) on free loopback ports, makes an admin and
logs in, then runs every documented operation with that token and every check schemathesis
has: no 5xx, status codes, content types, headers and bodies as the spec says, invalid input
rejected, valid input accepted. Rate limits are off for the run (they have their own tests);
the operations that revoke the token (logout, logout-all, password) run in a second pass.
Everything started is stopped at the end; the exit code is schemathesis's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from tests.servers import live_app

ROOT = Path(__file__).resolve().parents[2]

PASSWORD = "correct horse battery"
REVOKING = r"/api/v1/auth/(logout|logout-all|password)$"


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="taskapi-fuzz-"))
    with live_app(logs, admin=("fuzz@example.com", PASSWORD), RATELIMIT_ENABLED="false") as base:
        def token() -> str:
            return requests.post(base + "/api/v1/auth/login", json={"email": "fuzz@example.com",
                                                                   "password": PASSWORD}, timeout=10).json()["access_token"]

        examples = os.environ.get("FUZZ_EXAMPLES", "25")
        common = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(Path(__file__).with_name(
            "schemathesis.toml")), "run", f"{base}/openapi.json", "--checks", "all",
                  "--max-examples", examples, "--workers", "1", "--no-color", "--seed", os.environ.get("FUZZ_SEED", "1")]
        first = subprocess.run(common + ["-H", f"Authorization: Bearer {token()}",
                                         "--exclude-path-regex", REVOKING], cwd=ROOT)
        second = subprocess.run(common + ["-H", f"Authorization: Bearer {token()}",
                                          "--include-path-regex", REVOKING], cwd=ROOT)
        print(f"schemathesis logs and server output: {logs}")
        return first.returncode or second.returncode


if __name__ == "__main__":
    sys.exit(main())
