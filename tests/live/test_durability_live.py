"""A kill -9 of the embedded server loses no acknowledged write (started as `make run` starts it)."""

from __future__ import annotations

import signal
import threading
import time

from bson import ObjectId

from tests.helpers import bearer, login, register
from tests.servers import MongoServer


def test_kill_9_of_the_embedded_server_loses_no_acknowledged_write(make_app, log_dir, tmp_path):
    server = MongoServer(log_dir, storage=str(tmp_path / "db")).start()
    try:
        from taskapi.runtime import devserver

        devserver.apply_migrations(server.uri)
        client = make_app(MONGODB_URI=server.uri).test_client()
        register(client, "durable@example.com")
        headers = bearer(login(client, "durable@example.com")["access_token"])
        acknowledged: list[str] = []
        refused = 0

        def write() -> None:
            nonlocal refused
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                response = client.post("/api/v1/tasks", json={"title": f"t{len(acknowledged)}"}, headers=headers)
                if response.status_code == 201:
                    acknowledged.append(response.get_json()["id"])
                else:
                    refused += 1
                    if refused > 3:
                        return

        writer = threading.Thread(target=write)
        writer.start()
        started = time.monotonic()  # kill once enough writes were acknowledged (the speed varies)
        while len(acknowledged) < 150 and time.monotonic() - started < 5:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        writer.join(20)
        assert len(acknowledged) > 100 and refused, (len(acknowledged), refused)
        server.start()  # same port, same files
        import pymongo

        with pymongo.MongoClient(server.uri) as mongo:
            stored = {str(doc["_id"]) for doc in mongo.get_default_database().tasks.find(
                {"_id": {"$in": [ObjectId(i) for i in acknowledged]}}, {"_id": 1})}
        assert stored == set(acknowledged), f"{len(set(acknowledged) - stored)} acknowledged writes lost"
    finally:
        server.stop()
