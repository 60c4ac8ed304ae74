"""RabbitMQ for tests: the broker named by AMQP_URL, or a private node of Debian's rabbitmq-server.

`rabbitmq(workdir)` yields a RabbitBroker isolated for this run: its own vhost (made and removed
with rabbitmqctl) when we can administer the node, else a queue-name prefix on the shared vhost.
`private_rabbitmq(workdir)` always starts a private node (own AMQP, epmd and distribution ports on
127.0.0.1, own node name, cookie, data, logs and config under a temp dir, no plugins); only such a
node may be stopped and started again (stop_app/start_app) - never the machine's shared one.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import kombu

log = logging.getLogger(__name__)

AMQP_URL_ENV = "AMQP_URL"
START_TIMEOUT = 60.0  # seconds for a node (or its rabbit app) to accept AMQP connections
DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")  # the real scripts; /usr/sbin's wrappers `su rabbitmq` when root
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Ports a private node must not take: the usual RabbitMQ/epmd ones and rabbitmqctl's own dist range.
RESERVED_PORTS = {4369, 5672, 5671, 15672, 25672, *range(35672, 35683)}
MARKER_ENV = "TASKAPI_RABBIT_NODE"  # set in the node's environment: finds all its processes (epmd too)

_running: set[RabbitNode] = set()


class BrokerError(RuntimeError):
    """A broker could not be started, administered or stopped."""


class BrokerNotStoppable(BrokerError):
    """stop_app/start_app on a broker that others share."""


def run_id() -> str:
    return f"taskapi-{os.getpid()}-{secrets.token_hex(4)}"


def rabbit_binary(name: str) -> str | None:
    """Debian's real script (not the /usr/sbin wrapper), else whatever `name` PATH has."""
    if (DEBIAN_BIN / name).exists():
        return str(DEBIAN_BIN / name)
    return shutil.which(name)


def ensure_rabbitmq_server() -> None:
    """Install Debian's rabbitmq-server if it is missing (as the Makefile's nginx target does)."""
    if rabbit_binary("rabbitmq-server") and rabbit_binary("rabbitmqctl"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise BrokerError("rabbitmq-server is not installed and cannot be installed here (needs root and apt-get): "
                          "install it or set AMQP_URL")
    log.warning("rabbitmq-server missing: installing Debian's package")
    subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null",
                   shell=True, check=True)
    if not rabbit_binary("rabbitmq-server"):
        raise BrokerError("rabbitmq-server still missing after apt-get install")


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (all held open while choosing, so no duplicates)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] in RESERVED_PORTS:
                sock.close()
                continue
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def amqp_ready(url: str) -> None:
    """Raise unless an AMQP connection (login and vhost included) succeeds now."""
    with kombu.Connection(url, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=5)


def wait_amqp(url: str, timeout: float = START_TIMEOUT, alive=None, describe=lambda: "") -> float:
    """Poll until AMQP accepts a connection; returns the seconds waited."""
    started = time.monotonic()
    while True:
        if alive is not None and not alive():
            raise BrokerError(f"RabbitMQ exited before accepting AMQP connections at {redact(url)}{describe()}")
        try:
            amqp_ready(url)
            return time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            if time.monotonic() - started > timeout:
                raise BrokerError(f"RabbitMQ at {redact(url)} refused AMQP for {timeout:.0f} s ({exc!r}){describe()}")
            time.sleep(0.2)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port or 5672}"))
    return url


def with_vhost(url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


def url_vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def proc_pids_with(marker: str) -> set[int]:
    """Live processes whose command line or environment contains marker (read from /proc)."""
    found = set()
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.add(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


class RabbitNode:
    """A private RabbitMQ node: rabbitmq-server in the foreground, its own everything under workdir."""

    def __init__(self, workdir: Path) -> None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="rabbitmq-", dir=workdir))
        self.name = f"taskapi-test-{os.getpid()}-{secrets.token_hex(3)}"
        self.node = f"{self.name}@localhost"
        self.port, self.epmd_port, self.dist_port = free_ports(3)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.log_dir = self.dir / "log"
        self.output = self.dir / "rabbitmq-server.out"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        self.env = self._environment()

    def __repr__(self) -> str:
        return f"RabbitNode({self.node}, amqp={self.port}, epmd={self.epmd_port}, dist={self.dist_port})"

    def _environment(self) -> dict[str, str]:
        (self.dir / "mnesia").mkdir()
        self.log_dir.mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")  # no management plugin, no plugins at all
        (self.dir / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq/rabbitmq-env.conf
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "log.console = false\nlog.file.level = info\n"
            "disk_free_limit.absolute = 50MB\n")
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("RABBITMQ_", "ERL_")) and key != AMQP_URL_ENV}
        env.update({
            "HOME": str(self.dir),  # node and rabbitmqctl share this ~/.erlang.cookie
            MARKER_ENV: self.node,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
        })
        return env

    def describe(self) -> str:
        parts = [f"\n--- {self.output} (tail) ---\n{tail(self.output)}"]
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"\n--- {path} (tail) ---\n{tail(path)}")
        return "".join(parts)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RabbitNode:
        ensure_rabbitmq_server()
        started = time.monotonic()
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen([rabbit_binary("rabbitmq-server")], cwd=self.dir, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        _running.add(self)
        try:
            wait_amqp(self.url, alive=self.running, describe=self.describe)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        log.info("%s accepts AMQP after %.1f s", self, self.start_seconds)
        return self

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl -n NODE args... against this node; returns stdout, raises BrokerError on failure."""
        return rabbitmqctl(self.node, *args, env=self.env, binary=rabbit_binary("rabbitmqctl"), timeout=timeout)

    def stop_broker_app(self) -> None:
        """Stop the rabbit application (the Erlang node stays up): AMQP connections are refused."""
        self.ctl("stop_app")

    def start_broker_app(self) -> float:
        """Start the rabbit application again and wait until AMQP accepts connections; returns seconds."""
        started = time.monotonic()
        self.ctl("start_app")
        wait_amqp(self.url, alive=self.running, describe=self.describe)
        return time.monotonic() - started

    def pids(self) -> set[int]:
        """Every live process of this node: beam, its helpers and the epmd it started."""
        return proc_pids_with(self.node)

    def stop(self) -> None:
        """rabbitmqctl stop, then kill our epmd and any leftover process of the node."""
        started = time.monotonic()
        if self.running():
            try:
                self.ctl("stop", timeout=30)
                self.process.wait(30)
            except (BrokerError, subprocess.TimeoutExpired) as exc:
                log.warning("%s: rabbitmqctl stop failed (%s); terminating", self, exc)
                self._signal_group(signal.SIGTERM)
                try:
                    self.process.wait(15)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.process.wait(5)
        epmd = shutil.which("epmd")
        if epmd:
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env,
                           capture_output=True, timeout=10, check=False)
        deadline = time.monotonic() + 10
        sig = signal.SIGTERM
        while (leftovers := self.pids()) and time.monotonic() < deadline:
            for pid in leftovers:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
            sig = signal.SIGKILL
        if leftovers:
            raise BrokerError(f"{self}: processes {sorted(leftovers)} would not exit")
        _running.discard(self)
        self.stop_seconds = time.monotonic() - started
        log.info("%s stopped in %.1f s", self, self.stop_seconds)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass


@atexit.register
def _stop_forgotten_nodes() -> None:
    for node in list(_running):
        try:
            node.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def rabbitmqctl(node: str, *args: str, env: dict[str, str] | None = None, binary: str | None = None,
                timeout: float = 60) -> str:
    binary = binary or shutil.which("rabbitmqctl")
    if not binary:
        raise BrokerError("rabbitmqctl is not installed")
    try:
        result = subprocess.run([binary, "-n", node, *args], env=env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BrokerError(f"rabbitmqctl -n {node} {' '.join(args)} timed out after {timeout:.0f} s")
    if result.returncode != 0:
        raise BrokerError(f"rabbitmqctl -n {node} {' '.join(args)} exited {result.returncode}: "
                          f"{(result.stdout + result.stderr).strip()[-2000:]}")
    return result.stdout


def shared_node_candidates() -> list[str]:
    """Names the machine's own node may have: RABBITMQ_NODENAME, else Debian's env file, rabbit@<host>, rabbit@localhost."""
    if os.environ.get("RABBITMQ_NODENAME"):
        return [os.environ["RABBITMQ_NODENAME"]]
    names = []
    try:
        for line in Path("/etc/rabbitmq/rabbitmq-env.conf").read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key in ("NODENAME", "RABBITMQ_NODENAME") and value:
                names.append(value.strip("\"'"))
    except OSError:
        pass
    names += [f"rabbit@{socket.gethostname().split('.')[0]}", "rabbit@localhost"]
    return list(dict.fromkeys(names))


@dataclass
class RabbitBroker:
    """One run's slice of a broker. `url` includes the vhost; `queue_prefix` is always safe to prepend
    (it is what isolates a run when no vhost could be made, i.e. when `vhost` is None)."""

    url: str
    vhost: str | None
    queue_prefix: str
    node: RabbitNode | None = None  # set for a private node
    admin_node: str | None = None  # the node name rabbitmqctl administers, if any
    ctl_env: dict[str, str] | None = field(default=None, repr=False)
    ctl_binary: str | None = field(default=None, repr=False)

    @property
    def isolation(self) -> str:
        return "vhost" if self.vhost else "prefix"

    def queue_name(self, name: str) -> str:
        return self.queue_prefix + name

    def ctl(self, *args: str, timeout: float = 60) -> str:
        if not self.admin_node:
            raise BrokerError(f"cannot administer the broker at {redact(self.url)} with rabbitmqctl")
        return rabbitmqctl(self.admin_node, *args, env=self.ctl_env, binary=self.ctl_binary, timeout=timeout)

    def _own_node(self) -> RabbitNode:
        if self.node is None:
            raise BrokerNotStoppable(f"{redact(self.url)} is a shared broker: it is never stopped by tests; "
                                     "use private_rabbitmq()")
        return self.node

    def stop_app(self) -> None:
        self._own_node().stop_broker_app()

    def start_app(self) -> float:
        node = self._own_node()
        seconds = node.start_broker_app()
        wait_amqp(self.url)  # the vhost too
        return seconds


def _create_vhost(broker: RabbitBroker, vhost: str) -> None:
    """add_vhost + set_permissions for the URL's user, then check AMQP reaches it (raises BrokerError)."""
    broker.ctl("add_vhost", vhost)
    try:
        broker.ctl("set_permissions", "-p", vhost, urlsplit(broker.url).username or "guest", ".*", ".*", ".*")
        # rabbitmqctl may have administered another node than the one AMQP_URL reaches: check.
        amqp_ready(with_vhost(broker.url, vhost))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"; re-raised as BrokerError
        _delete_vhost(broker, vhost)
        raise BrokerError(f"vhost {vhost} on {broker.admin_node} unusable through {redact(broker.url)}: {exc!r}")
    broker.vhost, broker.url = vhost, with_vhost(broker.url, vhost)


def _delete_vhost(broker: RabbitBroker, vhost: str) -> None:
    try:
        broker.ctl("delete_vhost", vhost)
    except BrokerError as exc:
        log.warning("could not delete vhost %s: %s", vhost, exc)


def start_node(workdir: Path, tries: int = 3) -> RabbitNode:
    """A started private node. Its ports are chosen free, but an outgoing connection elsewhere on
    the machine can take one (they are ephemeral) before the node binds it: then again, with new
    ports (seen in CI: dist_port_already_used)."""
    for attempt in range(1, tries + 1):
        try:
            return RabbitNode(workdir).start()
        except BrokerError as exc:
            text = str(exc).lower()
            if attempt == tries or not ("already_used" in text or "eaddrinuse" in text):
                raise
            log.warning("RabbitMQ could not bind a port chosen free; starting again with new ones")
    raise AssertionError("unreachable")


@contextmanager
def private_rabbitmq(workdir: Path) -> Iterator[RabbitBroker]:
    """A private node just for this context, with a vhost of its own; stopped afterwards."""
    node = start_node(workdir)
    try:
        broker = RabbitBroker(url=node.url, vhost=None, queue_prefix=run_id() + ".", node=node, admin_node=node.node,
                              ctl_env=node.env, ctl_binary=rabbit_binary("rabbitmqctl"))
        _create_vhost(broker, broker.queue_prefix.rstrip("."))
        yield broker  # no need to delete the vhost: the node and its data go
    finally:
        node.stop()


@contextmanager
def rabbitmq(workdir: Path) -> Iterator[RabbitBroker]:
    """AMQP_URL's broker when set (a vhost of our own if it is this machine's and rabbitmqctl can
    administer it, else a queue prefix on the URL's vhost), otherwise a private node."""
    url = os.environ.get(AMQP_URL_ENV)
    if not url:
        with private_rabbitmq(workdir) as broker:
            yield broker
        return
    broker = RabbitBroker(url=url, vhost=None, queue_prefix=run_id() + ".")
    if urlsplit(url).hostname in LOCAL_HOSTS and shutil.which("rabbitmqctl"):
        for name in shared_node_candidates():
            broker.admin_node = name
            try:
                _create_vhost(broker, broker.queue_prefix.rstrip("."))
                break
            except BrokerError as exc:
                log.info("no vhost through rabbitmqctl -n %s: %s", name, exc)
                broker.admin_node = None
    if broker.vhost is None:
        log.warning("RabbitMQ at %s: cannot administer it with rabbitmqctl; isolating by queue prefix %r "
                    "on vhost %r", redact(url), broker.queue_prefix, url_vhost(url))
    try:
        yield broker
    finally:
        if broker.vhost:
            _delete_vhost(broker, broker.vhost)
