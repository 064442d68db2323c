"""Security properties of the running system, checked end to end on real processes.

* Workers refuse pickle: a pickle-serialized task message on the broker never runs.
* Flower's API needs its basic-auth credentials (and what Flower 2.2 leaves open).
* Configured secrets never leave the secret files: not in logs, the audit trail, the
  outbox or ledger databases, Flower's task list, nor anything sent to the broker.
* A dns worker holding a wrong TSIG key fails the chain permanently at dns.register,
  audited and kept as a dead letter (the driver-level refusals of unsigned updates,
  wrong keys and untrusted LDAP certificates are in tests/tasks/backends/).
* Every NetBox started gets a fresh API token; the cached template token opens none
  of them, and its cache file is 0600.
"""

import base64
import json
import re
import secrets
import signal
import subprocess
import sys
import threading
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import redis
import requests

from novahooks.event import Address
from tests.servers.base import Process
from tests.servers.stack import Processes, Stack
from novahooks.settings import load_settings
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.helpers import audit_lines, until


pytestmark = pytest.mark.usefixtures("hook_outbox")


def _get(url: str, auth: Any = None, headers: Any = None) -> requests.Response:
    return requests.get(url, auth=auth, headers=headers, timeout=15)


def _log_after(path: Path, offset: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", "replace")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "novahooks.cli"] + list(args),
                          env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


# --------------------------------------------------------------------------- 1. pickle


def test_pickle_message_is_refused_and_the_worker_keeps_working(
        stack: Stack, processes: Processes) -> None:
    from kombu import Connection
    from kombu.serialization import dumps

    from tasks.app import app
    audit_worker = processes.workers["audit"]
    assert audit_worker.proc.poll() is None
    log_offset = _size(audit_worker.log)
    broker_url = load_settings(str(stack.config_path)).broker.connection_url()
    assert broker_url == stack.redis.url

    # (a) a genuine protocol-2 Celery task message, body pickled by hand, published with kombu
    #     straight to the audit queue: what anyone with write access to the broker can send.
    raw = make_event(hostname="pickle-raw").to_dict()
    raw_id = str(uuid.uuid4())
    headers, properties, body, _ = app.amqp.as_task_v2(raw_id, "audit.record", args=(raw,),
                                                       kwargs={})
    content_type, encoding, data = dumps(body, serializer="pickle")
    assert content_type == "application/x-python-serialize"
    with Connection(broker_url, connect_timeout=5) as conn:
        conn.Producer().publish(data, exchange="", routing_key="audit",
                                content_type=content_type, content_encoding=encoding,
                                headers=headers, retry=False, **properties)
    # (b) the same through Celery's own client: it does not stop a producer from choosing
    #     pickle (accept_content only governs what is accepted on receipt).
    sent = make_event(hostname="pickle-send-task").to_dict()
    sent_id = app.send_task("audit.record", args=[sent], queue="audit",
                            serializer="pickle").id

    # Refused before Celery reads the body: (a) carries no signature; (b) is signed (Celery
    # signs what it publishes) over the JSON the body would have been, not the pickle.
    refused = "Received invalid task message"
    until(lambda: _log_after(audit_worker.log, log_offset).count(refused) >= 2, 10,
          "the audit worker refusing both pickle messages")
    text = _log_after(audit_worker.log, log_offset)
    assert '"reason": "unsigned"' in text and '"reason": "forged"' in text, text[-3000:]

    # The worker survived and still does its job with an ordinary JSON message.
    assert audit_worker.proc.poll() is None
    ok = make_event(hostname="json-after-pickle").to_dict()
    app.send_task("audit.record", args=[ok], queue="audit")
    until(lambda: audit_lines(stack.audit_path, ok["uuid"]), 20, "the JSON message audited")
    assert audit_worker.proc.poll() is None
    # Processed in order on a single-slot worker: had the pickled ones run, they'd be there.
    assert audit_lines(stack.audit_path, raw["uuid"]) == []
    assert audit_lines(stack.audit_path, sent["uuid"]) == []
    audit_text = stack.audit_path.read_text()
    assert raw["uuid"] not in audit_text and sent["uuid"] not in audit_text
    # Refused messages are acknowledged and dropped, not redelivered for ever.
    client = redis.Redis.from_url(broker_url)
    try:
        unacked = b"".join(client.hvals("unacked"))
        assert raw_id.encode() not in unacked and sent_id.encode() not in unacked
        queued = b"".join(client.lrange("audit", 0, -1))
        assert raw_id.encode() not in queued and sent_id.encode() not in queued
    finally:
        client.close()


# --------------------------------------------------------------------------- 2. Flower


def test_flower_api_needs_basic_auth_but_metrics_are_open(processes: Processes,
                                                         flower: str) -> None:
    user, password = processes.flower_auth
    for path in ("/api/workers", "/api/tasks", "/"):
        assert _get(flower + path).status_code == 401, path
        assert _get(flower + path, (user, password + "x")).status_code == 401, path
        assert _get(flower + path, ("root", password)).status_code == 401, path
    names = {"%s@novahooks" % q for q in ("ipam", "dns", "ldap", "inventory", "audit")}
    until(lambda: (lambda r: r.status_code == 200 and names <= set(r.json()))(
        _get(flower + "/api/workers?refresh=1", (user, password))), 20,
        "Flower listing every worker")
    tasks = _get(flower + "/api/tasks", (user, password))
    assert tasks.status_code == 200 and isinstance(tasks.json(), dict)
    # FINDING (Flower 2.2, documented as actual behaviour): /metrics (Prometheus) and
    # /healthcheck do not check credentials even with FLOWER_BASIC_AUTH set. /metrics names
    # the workers and task types and counts events; it does not carry task arguments.
    metrics = _get(flower + "/metrics")
    assert metrics.status_code == 200
    assert "flower_" in metrics.text
    assert password not in metrics.text
    assert _get(flower + "/healthcheck").status_code == 200


# --------------------------------------------------------------------------- 3. secrets


class BrokerTap(object):
    """Every command the stack's Redis receives, through MONITOR, in a background thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.monitor = self.client.monitor()
        self.monitor.__enter__()  # MONITOR is on once this returns
        self.commands = []  # type: List[str]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                command = self.monitor.next_command()
                if command is not None:
                    self.commands.append(command["command"])
        except Exception as exc:  # noqa: BLE001 - the connection closes on stop
            if not self._stop.is_set():
                self.commands.append("<<monitor failed: %r>>" % exc)

    def stop(self) -> List[str]:
        self._stop.set()
        poke = redis.Redis.from_url(self.url)
        poke.ping()  # one more line for MONITOR, so the blocked read returns
        poke.close()
        self._thread.join(10)
        self.monitor.__exit__(None, None, None)
        self.client.close()
        return self.commands


def _base64_forms(secret: str) -> List[str]:
    """The secret as it reads inside any base64 text, at each of the three alignments."""
    data = secret.encode()
    forms = []
    for offset in range(3):
        enc = base64.b64encode(b"\0" * offset + data).decode().rstrip("=")
        if (offset + len(data)) % 3:
            enc = enc[:-1]  # its last character also depends on what follows
        core = enc[(0, 2, 3)[offset]:]  # the first ones also depend on what precedes
        forms.extend([core, core.replace("+", "-").replace("/", "_")])
    return forms


def _forms(secret: str) -> List[Tuple[str, str]]:
    """(label, text) for every spelling of the secret looked for; labels never show it."""
    forms = [("plain", secret), ("url-quoted", urllib.parse.quote(secret, safe="")),
             ("json-escaped", json.dumps(secret)[1:-1])]
    forms.extend(("base64 #%d" % i, form) for i, form in enumerate(_base64_forms(secret)))
    return forms


_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


def _decoded(text: str, depth: int = 2) -> str:
    """The text plus whatever its base64 runs decode to (kombu base64s message bodies)."""
    out = [text]
    for blob in _B64.findall(text):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                plain = decode(blob + "=" * (-len(blob) % 4)).decode("utf-8")
            except Exception:  # noqa: BLE001 - not base64 text: nothing to add
                continue
            out.append(_decoded(plain, depth - 1) if depth > 1 else plain)
            break
    return "\n".join(out)


def _leaks(places: Dict[str, str], secrets_: Dict[str, str]) -> List[Tuple[str, str, str]]:
    found = []
    for where, text in places.items():
        for name, secret in secrets_.items():
            for label, form in _forms(secret):
                if form in text:
                    found.append((where, name, label))
    return found


def test_secrets_never_leak_through_a_full_create_and_delete(
        stack: Stack, processes: Processes, flower: str) -> None:
    from tests.demo import gone, holdings, registered
    configured = {"tsig": stack.bind.key_secret, "ldap bind": stack.slapd.bind_password,
                  "ldap admin": stack.slapd.admin_password, "netbox token": stack.netbox.token,
                  "flower": processes.flower_auth[1]}
    assert all(len(s) >= 16 for s in configured.values())
    vm = with_uuid(Vm("sec-leak", ((unique_v4(), mac()), (unique_v6(), mac()))))
    tap = BrokerTap(stack.redis.url)
    try:
        create(vm)
        until(lambda: registered(vm, holdings(vm)), 90, "registered")
        delete(vm)
        until(lambda: gone(vm, holdings(vm)), 90, "removed")
        until(lambda: any(r["kind"] == "delete" and r["stage"] == "done"
                          for r in audit_lines(stack.audit_path, vm.uuid)), 30, "audit of delete")
        tasks = until(lambda: (lambda r: vm.uuid in r.text and r)(
            _get(flower + "/api/tasks", processes.flower_auth)), 20,
            "Flower showing the VM's tasks")
        flower_workers = _get(flower + "/api/workers?refresh=1", processes.flower_auth).text
        flower_metrics = _get(flower + "/metrics").text
    finally:
        traffic = tap.stop()
    broker = _decoded("\n".join(traffic))
    assert not any(c.startswith("<<monitor failed") for c in traffic), traffic[-3:]
    assert vm.uuid in broker, "the tap saw the chains the relay published"
    assert any(c.upper().startswith(("LPUSH", "RPUSH")) for c in traffic)

    places = {"broker traffic (%d commands)" % len(traffic): broker,
              "Flower /api/tasks": _decoded(tasks.text),
              "Flower /api/workers": _decoded(flower_workers),
              "Flower /metrics": flower_metrics,
              "audit file": stack.audit_path.read_text(errors="replace"),
              "config file": stack.config_path.read_text()}
    logs = sorted((stack.workdir / "logs").glob("*.log"))
    assert {"relay.log", "flower.log", "worker-dns.log"} <= {p.name for p in logs}
    for log in logs:
        places["log " + log.name] = _decoded(log.read_text(errors="replace"))
    databases = [stack.outbox_path, stack.workdir / "ledger.sqlite"]
    for db in databases:
        assert db.exists(), db
        for part in (db, Path(str(db) + "-wal"), Path(str(db) + "-journal")):
            if part.exists():
                places[part.name] = part.read_bytes().decode("latin-1")
    assert vm.uuid in places["audit file"] and vm.uuid in places["Flower /api/tasks"]
    assert _leaks(places, configured) == []


# --------------------------------------------------------------------------- 4. wrong TSIG


def test_wrong_tsig_key_fails_the_chain_at_dns_register_as_a_dead_letter(
        stack: Stack, processes: Processes, tmp_path: Path) -> None:
    from tasks import chains
    from tasks.app import app
    wrong = tmp_path / "tsig.wrong"
    wrong.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    wrong.chmod(0o600)
    config = stack.config_path.read_text()
    assert re.search(r"^tsig_secret_file = .+$", config, re.M)
    bad_config = tmp_path / "novahooks-wrong-tsig.conf"
    bad_config.write_text(re.sub(r"^tsig_secret_file = .+$", "tsig_secret_file = %s" % wrong,
                                 config, flags=re.M))
    env = stack.env()
    env["NOVAHOOKS_CONFIG"] = str(bad_config)
    log = processes.logs / "worker-dns-wrong-tsig.log"

    session_dns = processes.workers["dns"]
    session_dns.stop(signal.SIGTERM, timeout=20)
    impostor = None
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    try:
        impostor = Process("worker-dns-wrong-tsig", [
            sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-Q", "dns", "-c", "1",
            "-n", "dns-wrong-tsig@novahooks", "-E", "--loglevel=INFO", "--without-gossip",
            "--without-mingle", "--without-heartbeat"], log, env=env, cwd=stack.workdir)
        until(lambda: impostor.proc.poll() is not None or "ready." in log.read_text(
            errors="replace"), 60, "the wrong-key dns worker")
        assert impostor.proc.poll() is None, log.read_text(errors="replace")[-3000:]

        chains.build(app, ev.to_dict()).apply_async()
        (record,) = until(lambda: [r for r in audit_lines(stack.audit_path, ev.uuid)
                                   if r["stage"] == "failed"], 45, "failure audited")
        assert record["step"] == "dns.register"
        assert "AuthFailed" in record["error"] and "TSIG" in record["error"], record
        assert record["attempts"] == 1, "a wrong key is permanent: no retries"
        assert not any(r["stage"] == "done" for r in audit_lines(stack.audit_path, ev.uuid))
        worker_log = log.read_text(errors="replace")
        assert ev.uuid in worker_log and '"outcome": "failed"' in worker_log
        assert '"outcome": "retry"' not in worker_log

        listing = _cli(stack, "dead-letters", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        (letter,) = [r for r in json.loads(listing.stdout) if r["instance_uuid"] == ev.uuid]
        assert letter["step"] == "dns.register" and "TSIG" in letter["error"], letter
    finally:
        if impostor is not None:
            impostor.stop(signal.SIGTERM, timeout=20)
        offset = _size(processes.workers["dns"].log)
        restored = processes.start_worker("dns")
        until(lambda: restored.proc.poll() is not None
              or "ready." in _log_after(restored.log, offset), 60, "session dns worker back")
        assert restored.proc.poll() is None, _log_after(restored.log, offset)[-3000:]

    # dns.register is the first writer, so nothing should be left; the delete proves the
    # real key works again.
    from tests.demo import gone, holdings
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    delete(vm)
    until(lambda: gone(vm, holdings(vm)), 60, "the failed VM's leftovers removed")


# --------------------------------------------------------------------------- NetBox token

def test_each_netbox_gets_its_own_token_and_the_cached_one_is_private(stack: Stack) -> None:
    """The cached template token opens no running NetBox; the cache file is the owner's."""
    from tests.servers import netbox
    assert netbox.TOKEN_FILE.stat().st_mode & 0o777 == 0o600
    template_token = json.loads(netbox.TOKEN_FILE.read_text())["token"]
    assert stack.netbox.token != template_token
    url = f"{stack.netbox.url}/api/status/"
    assert _get(url, headers={"Authorization": f"Token {stack.netbox.token}"}).status_code == 200
    assert _get(url, headers={"Authorization": f"Token {template_token}"}).status_code == 403
