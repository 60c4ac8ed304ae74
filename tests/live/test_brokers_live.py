"""tests/brokers.py against real RabbitMQ: a private node (start, stop_app/start_app, clean stop)
and the machine's shared node (a vhost of our own, removed afterwards; never stopped)."""

from __future__ import annotations

import socket
import subprocess
import time

import kombu
import pytest

from tests.brokers import AMQP_URL_ENV, BrokerNotStoppable, amqp_ready, port_open, private_rabbitmq, rabbitmq

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672//"


def round_trip(url: str, queue_name: str, body: dict) -> dict:
    """Publish `body` to a fresh queue on url's vhost and consume it back."""
    with kombu.Connection(url, connect_timeout=5) as conn:
        queue = kombu.Queue(queue_name, exchange=kombu.Exchange(queue_name, type="direct"), routing_key=queue_name,
                            auto_delete=True)
        simple = conn.SimpleQueue(queue)
        try:
            simple.put(body)
            message = simple.get(timeout=5)
            message.ack()
            return message.payload
        finally:
            simple.close()


def assert_node_gone(node) -> None:
    assert node.pids() == set(), f"processes of {node.node} left: {node.pids()}"
    for port in (node.port, node.epmd_port, node.dist_port):
        assert not port_open(port), f"port {port} still listens"
    with socket.socket() as sock:  # free to bind again
        sock.bind(("127.0.0.1", node.port))


def test_private_node_round_trip_stop_app_and_clean_stop(tmp_path):
    started = time.monotonic()
    with private_rabbitmq(tmp_path) as broker:
        node = broker.node
        print(f"\nprivate node {node.node} accepted AMQP after {node.start_seconds:.1f} s "
              f"(whole context ready {time.monotonic() - started:.1f} s)")
        assert broker.vhost and broker.url.endswith("/" + broker.vhost)
        assert node.node.startswith("taskapi-test-") and node.url.startswith("amqp://guest:guest@127.0.0.1:")
        assert node.port != 5672 and node.epmd_port != 4369
        assert round_trip(broker.url, broker.queue_name("ping"), {"n": 1}) == {"n": 1}
        assert broker.vhost in node.ctl("list_vhosts", "--quiet").split()

        pids = node.pids()
        assert pids and node.process.pid in pids

        t = time.monotonic()
        broker.stop_app()
        print(f"stop_app {time.monotonic() - t:.1f} s")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", node.port), timeout=2).close()
        with pytest.raises(Exception):
            amqp_ready(broker.url)
        assert node.running()  # only the rabbit app stopped, not the Erlang node

        seconds = broker.start_app()
        print(f"start_app until AMQP accepted {seconds:.1f} s")
        assert round_trip(broker.url, broker.queue_name("ping"), {"n": 2}) == {"n": 2}
    print(f"private node stopped in {node.stop_seconds:.1f} s")
    assert node.process.returncode is not None
    assert_node_gone(node)
    assert not (set(pids) & node.pids())


def test_rabbitmq_without_amqp_url_is_a_private_node(tmp_path, monkeypatch):
    monkeypatch.delenv(AMQP_URL_ENV, raising=False)
    with rabbitmq(tmp_path) as broker:
        assert broker.node is not None and broker.admin_node == broker.node.node
        assert broker.vhost and broker.isolation == "vhost"
        assert round_trip(broker.url, broker.queue_name("hello"), {"hello": "world"}) == {"hello": "world"}
        node = broker.node
    assert_node_gone(node)


def test_amqp_url_on_this_machine_gets_its_own_vhost(tmp_path, monkeypatch):
    try:
        amqp_ready(SHARED_URL)
    except Exception as exc:  # noqa: BLE001 - whatever the reason, there is no shared broker here
        pytest.skip(f"no RabbitMQ at {SHARED_URL}: {exc!r}")
    monkeypatch.setenv(AMQP_URL_ENV, SHARED_URL)
    with rabbitmq(tmp_path) as broker:
        assert broker.node is None
        if broker.vhost is None:
            pytest.skip(f"rabbitmqctl cannot administer the node behind {SHARED_URL} (queue prefix instead)")
        vhost, admin_node = broker.vhost, broker.admin_node
        assert broker.url == f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        assert vhost in broker.ctl("list_vhosts", "--quiet").split()
        assert round_trip(broker.url, broker.queue_name("shared"), {"ok": True}) == {"ok": True}
        with pytest.raises(BrokerNotStoppable):
            broker.stop_app()  # the shared node is never stopped
        amqp_ready(SHARED_URL)
    listed = subprocess.run(["rabbitmqctl", "-n", admin_node, "list_vhosts", "--quiet"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert "/" in listed and vhost not in listed
