"""A private virtual host on the machine's RabbitMQ, never its default vhost.

RabbitMQ is a system service here (one node, ``127.0.0.1:5672``, user guest),
not a throwaway server like the private Redis: starting a node per test run
costs seconds and an Erlang cookie dance. Isolation comes from a uniquely named
vhost instead: every queue, exchange and message a run declares lives in it,
and deleting the vhost removes them all. ``rabbitmqctl`` does the admin work
(the management plugin is not enabled on this machine), so no credentials
beyond the broker's own guest account are needed.

If the node is not running it is started (``rabbitmq-server -detached``) and
left running afterwards, like the service it stands in for.
"""

import json
import secrets
import shutil
import subprocess
from typing import Any, Dict, List, Optional
from urllib.parse import quote

from tests.servers.base import Server, ServerError, port_open, wait_for

HOST = "127.0.0.1"
PORT = 5672
USER = "guest"
PASSWORD = "guest"


def rabbitmqctl(*args: str, timeout: float = 60.0, check: bool = True) -> str:
    """Run ``rabbitmqctl ARGS`` quietly; fail with its output when it fails."""
    if shutil.which("rabbitmqctl") is None:
        raise ServerError("rabbitmqctl is not installed (Debian package rabbitmq-server)")
    argv = ["rabbitmqctl", "-q"] + list(args)
    try:
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ServerError("%s did not finish in %.0f s" % (" ".join(argv), timeout)) from None
    if check and result.returncode != 0:
        raise ServerError("%s failed (%d):\n%s" % (" ".join(argv), result.returncode,
                                                   result.stdout[-3000:]))
    return result.stdout


def _node_running() -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    result = subprocess.run(["rabbitmqctl", "-q", "status"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=60)
    return result.returncode == 0


def ensure_running(port: int = PORT, timeout: float = 120.0) -> bool:
    """Make sure the node is up and listening; True if this call had to start it."""
    if port_open(port) and _node_running():
        return False
    started = False
    if not _node_running():
        if shutil.which("rabbitmq-server") is None:
            raise ServerError("RabbitMQ is not running and rabbitmq-server is not installed")
        result = subprocess.run(["rabbitmq-server", "-detached"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        if result.returncode != 0:
            raise ServerError("rabbitmq-server -detached failed:\n%s" % result.stdout[-3000:])
        started = True
    rabbitmqctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
    wait_for(lambda: port_open(port), 30, "RabbitMQ AMQP listener on port %d" % port)
    return started


class RabbitVhost(Server):
    """A vhost the guest user may use; ``stop()`` (or leaving ``with``) deletes it."""

    def __init__(self, name: str, host: str = HOST, port: int = PORT,
                 user: str = USER, password: str = PASSWORD) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.user = user
        self.url = "amqp://%s:%s@%s:%d/%s" % (quote(user, safe=""), quote(password, safe=""),
                                               host, port, quote(name, safe=""))
        self.stopped = False

    def ctl(self, command: str, *args: str) -> str:
        """``rabbitmqctl COMMAND -p <this vhost> ARGS``."""
        return rabbitmqctl(command, "-p", self.name, *args)

    def list_queues(self, *fields: str) -> List[Dict[str, Any]]:
        """Queues of this vhost as dicts (default fields: name, type, arguments, messages)."""
        fields = fields or ("name", "type", "arguments", "messages")
        out = self.ctl("list_queues", *(list(fields) + ["--formatter", "json"]))
        return _json_rows(out)

    def list_exchanges(self, *fields: str) -> List[Dict[str, Any]]:
        fields = fields or ("name", "type")
        return _json_rows(self.ctl("list_exchanges", *(list(fields) + ["--formatter", "json"])))

    def list_bindings(self) -> List[Dict[str, Any]]:
        return _json_rows(self.ctl("list_bindings", "source_name", "destination_name",
                                   "destination_kind", "routing_key", "--formatter", "json"))

    def stop(self) -> None:
        """Delete the vhost and with it every queue, exchange and message in it."""
        if self.stopped:
            return
        try:
            rabbitmqctl("delete_vhost", self.name)
        except ServerError:
            if self.name in vhost_names():
                raise
        self.stopped = True

    def __repr__(self) -> str:
        return "RabbitVhost(%r)" % self.name


def _json_rows(out: str) -> List[Dict[str, Any]]:
    text = out.strip()
    if not text:
        return []
    return list(json.loads(text))


def vhost_names() -> List[str]:
    return [row["name"] for row in _json_rows(rabbitmqctl("list_vhosts", "name",
                                                          "--formatter", "json"))]


def private_vhost(prefix: str = "novahooks", host: str = HOST, port: int = PORT,
                  user: str = USER, password: str = PASSWORD,
                  name: Optional[str] = None) -> RabbitVhost:
    """Create ``<prefix>-<random>`` with full permissions for ``user``; start RabbitMQ if down."""
    ensure_running(port)
    vhost = RabbitVhost(name or "%s-%s" % (prefix, secrets.token_hex(6)), host, port, user,
                        password)
    rabbitmqctl("add_vhost", vhost.name)
    try:
        rabbitmqctl("set_permissions", "-p", vhost.name, user, ".*", ".*", ".*")
    except BaseException:
        vhost.stop()
        raise
    return vhost
