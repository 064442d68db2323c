"""Someone who can write to the broker, against the session's real Redis and worker pools.

Each attack is what a local user with the broker's address sent in issue 19: hand-made
task messages (unsigned, with a made-up signature, a genuine signature moved from
``ldap.register`` onto ``ldap.deregister``, a signed but oversized body, pickle labelled
JSON) and raw queue entries (not JSON, JSON that is no kombu envelope, an envelope whose
body is not JSON and whose headers lack an id). None may act: the VM's LDAP entry stays,
each is logged and counted in ``novahooks_messages_refused_total``, undecodable entries
are in ``novahooks.poison``, and the ldap pool is the same process and still works: the
genuine deregister that follows removes the entry.
"""

import base64
import json
import os
import pickle
import re
import signal
import uuid
from typing import Any, Dict, Iterator, List, NamedTuple, Tuple

import pytest
import redis
import requests
from kombu import Connection

from tests.conftest import make_event
from tests.helpers import until
from tests.servers.stack import Processes, Stack


def _metric(processes: Processes, queue: str, reason: str) -> float:
    text = requests.get("http://127.0.0.1:%d/metrics" % processes.metrics_ports["ldap"],
                        timeout=10).text
    pattern = r'^novahooks_messages_refused_total\{queue="%s",reason="%s"\} ([0-9.e+]+)$' % (
        re.escape(queue), re.escape(reason))
    found = re.search(pattern, text, re.M) or re.search(
        r'^novahooks_messages_refused_total\{reason="%s",queue="%s"\} ([0-9.e+]+)$' % (
            re.escape(reason), re.escape(queue)), text, re.M)
    return float(found.group(1)) if found else 0.0


def _entries(uuid_: str) -> List[str]:
    from tasks import drivers
    return list(drivers.directory().describe(uuid_)["entries"])


def _message(task: str, payload: Dict[str, Any]) -> Any:
    """(headers, properties, body bytes) of a protocol-2 task message, as Celery makes it."""
    from kombu.serialization import dumps

    from tasks.app import app
    headers, properties, body, _ = app.amqp.as_task_v2(str(uuid.uuid4()), task,
                                                       args=(payload,), kwargs={})
    _, _, data = dumps(body, serializer="json")
    return headers, properties, data.encode("utf-8")


def _publish(url: str, queue: str, headers: Dict[str, Any], properties: Dict[str, Any],
             body: bytes, content_type: str = "application/json") -> None:
    with Connection(url, connect_timeout=5) as conn:
        conn.Producer().publish(body, exchange="", routing_key=queue, headers=headers,
                                content_type=content_type, content_encoding="utf-8",
                                retry=False, **properties)


def _envelope(body: bytes, headers: Dict[str, Any], queue: str) -> str:
    """A queue entry as kombu's Redis transport writes one."""
    return json.dumps({"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": headers,
                       "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                                      "delivery_info": {"exchange": "", "routing_key": queue},
                                      "priority": 0, "delivery_mode": 2}})


def test_broker_refuses_clients_without_its_password(stack: Stack) -> None:
    assert stack.redis.password and stack.redis.password not in stack.config_path.read_text()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=stack.redis.port, socket_timeout=5).llen("ldap")
    assert redis.Redis.from_url(stack.redis.url, socket_timeout=5).ping()


def test_hand_made_messages_are_refused_and_the_pool_keeps_working(
        stack: Stack, processes: Processes) -> None:
    from tasks import signing
    from tasks.app import app
    pool = processes.workers["ldap"]
    pid = pool.proc.pid
    offset = pool.log.stat().st_size
    url = stack.redis.url
    client = redis.Redis.from_url(url)
    before = {reason: _metric(processes, "ldap", reason)
              for reason in ("unsigned", "forged", "oversized", "undecodable")}
    poisoned = client.llen("novahooks.poison")

    victim = make_event(kind="create", hostname="hostile-%s" % uuid.uuid4().hex[:6]).to_dict()
    app.send_task("ldap.register", args=[victim], queue="ldap")
    until(lambda: _entries(victim["uuid"]), 60, "the victim's LDAP entry")

    # 1. unsigned deregister, straight from kombu
    headers, properties, body = _message("ldap.deregister", victim)
    _publish(url, "ldap", headers, properties, body)
    # 2. a made-up signature
    headers, properties, body = _message("ldap.deregister", victim)
    headers[signing.HEADER] = "v1:" + os.urandom(32).hex()
    _publish(url, "ldap", headers, properties, body)
    # 3. a genuine signature, read off the broker with an ldap.register, put on a deregister
    headers, properties, body = _message("ldap.register", victim)
    signing.sign(headers, body)
    headers["task"] = "ldap.deregister"
    _publish(url, "ldap", headers, properties, body)
    # 4. signed with the real key (a key holder's bug), but above max_message_bytes
    huge = dict(victim, metadata={"blob": "x" * (1024 * 1024 + 10)})
    headers, properties, body = _message("ldap.deregister", huge)
    signing.sign(headers, body)
    _publish(url, "ldap", headers, properties, body)
    # 5. pickle labelled JSON, and pickle as pickle, both unsigned
    headers, properties, _ = _message("ldap.deregister", victim)
    pickled = pickle.dumps(((victim,), {}, {}))
    _publish(url, "ldap", headers, properties, pickled)
    headers, properties, _ = _message("ldap.deregister", victim)
    _publish(url, "ldap", headers, properties, pickled,
             content_type="application/x-python-serialize")
    # 6. raw entries kombu cannot read: each used to end the whole pool
    raw = ["not json", "[1, 2]", json.dumps({"properties": {}}), "\x1b[2J" + "{" * 50,
           _envelope(b"not json either", {"task": "no.such.task"}, "ldap")]
    for entry in raw:
        client.lpush("ldap", entry)

    def handled() -> bool:
        text = pool.log.read_bytes()[offset:].decode("utf-8", "replace")
        return client.llen("ldap") == 0 and text.count("Received invalid task message") >= 6 \
            and text.count("no.such.task") >= 1
    until(handled, 60, "the ldap pool handling every hand-made message")
    assert _entries(victim["uuid"]), "a hand-made message removed the victim's entry"

    # The genuine removal still works: the same pool process, still consuming.
    app.send_task("ldap.deregister", args=[victim], queue="ldap")
    until(lambda: not _entries(victim["uuid"]), 60, "the genuine deregister")

    assert pool.proc.poll() is None and pool.proc.pid == pid, "the ldap pool went away"
    log = pool.log.read_bytes()[offset:].decode("utf-8", "replace")
    assert log.count("Received invalid task message") >= 6, log[-4000:]
    assert '"reason": "forged"' in log and '"reason": "unsigned"' in log
    assert '"reason": "oversized"' in log
    assert "Unrecoverable error" not in log
    assert client.llen("novahooks.poison") - poisoned >= 4
    kept = [json.loads(e) for e in client.lrange("novahooks.poison", 0, 10)]
    assert {"not json", "[1, 2]"} <= {e["entry"] for e in kept}
    assert all(e["queue"] == "ldap" and e["reason"] for e in kept[:4])
    after = {reason: _metric(processes, "ldap", reason) for reason in before}
    assert after["unsigned"] - before["unsigned"] >= 3  # 1 and both pickles
    assert after["forged"] - before["forged"] >= 2       # 2 and 3
    assert after["oversized"] - before["oversized"] >= 1
    assert after["undecodable"] - before["undecodable"] >= 4
    assert _metric(processes, "ldap", "unknown-task") >= 1


def _cli(config: Any, *args: str, **env: str) -> Any:
    import subprocess
    import sys
    full = dict(os.environ, NOVAHOOKS_CONFIG=str(config), **env)
    return subprocess.run([sys.executable, "-m", "novahooks.cli"] + list(args), env=full,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def test_check_and_status_fail_when_a_step_queue_has_no_live_consumer(
        stack: Stack, tmp_path: Any) -> None:
    """A broker database no worker consumes (every pool of a site down)."""
    alone = stack.clone(tmp_path, stack.redis.url.rsplit("/", 1)[0] + "/13")
    status = _cli(alone.config_path, "status", "--json")
    assert status.returncode == 1, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["unconsumed"] == ["ipam", "dns", "ldap", "inventory", "audit"]
    text = _cli(alone.config_path, "status")
    assert text.returncode == 1 and "no live worker consumes ipam, dns" in text.stdout
    check = _cli(alone.config_path, "check", "--json")
    assert check.returncode == 1
    rows = {row["check"]: row for row in json.loads(check.stdout)}
    assert not rows["consumers"]["ok"] and "ipam" in rows["consumers"]["detail"]
    assert rows["broker"]["ok"], rows["broker"]


def test_check_fails_on_an_open_broker_and_without_the_signing_key(
        stack: Stack, tmp_path: Any) -> None:
    from tests.servers.redis import start_redis
    open_broker = start_redis(tmp_path / "open-redis")
    try:
        (tmp_path / "open").mkdir()
        config = stack.clone(tmp_path / "open", open_broker.url).config_path
        rows = {row["check"]: row for row in json.loads(
            _cli(config, "check", "--json").stdout)}
        assert not rows["broker"]["ok"]
        assert "answers clients without a password" in rows["broker"]["detail"]
    finally:
        open_broker.stop()
    result = _cli(stack.config_path, "check", "--json", NOVAHOOKS_BROKER_SIGNING_KEY="")
    rows = {row["check"]: row for row in json.loads(result.stdout)}
    assert result.returncode == 1 and not rows["broker"]["ok"]
    assert "signing_key is not set" in rows["broker"]["detail"]


class Rotated(NamedTuple):
    """A cloned stack on a broker database of its own, mid-rotation: its processes sign
    with ``new`` and accept ``old`` (this test process's key) too."""

    stack: Stack
    processes: Processes
    url: str
    old: bytes
    new: bytes


@pytest.fixture(scope="module")
def rotated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotated]:
    workdir = tmp_path_factory.mktemp("rotated")
    new = "new-" + os.urandom(24).hex()
    keys = {}
    for name, value in (("new", new), ("old", stack.signing_key)):
        path = workdir / ("%s.key" % name)
        path.write_text(value)
        path.chmod(0o600)
        keys[name] = str(path)
    url = stack.redis.url.rsplit("/", 1)[0] + "/12"
    clone = stack.clone(workdir, url, broker={"signing_key_file": keys["new"],
                                              "previous_signing_key_file": keys["old"]})
    redis.Redis.from_url(url).flushdb()
    procs = Processes(clone, progress=lambda line: None)
    try:
        worker = procs.start_worker("ldap", concurrency=2)
        until(lambda: "ready." in worker.log.read_text(errors="replace"), 60,
              "the rotated stack's ldap pool")
        yield Rotated(clone, procs, url, stack.signing_key.encode(), new.encode())
    finally:
        procs.stop()


def _signed(task: str, payload: Dict[str, Any], secret: bytes) -> Tuple[Any, Any, bytes]:
    from tasks import signing
    headers, properties, body = _message(task, payload)
    signing.sign(headers, body, secret)
    return headers, properties, body


def _rotated_metric(rotated: Rotated, name: str, labels: str) -> float:
    text = requests.get("http://127.0.0.1:%d/metrics" % rotated.processes.metrics_ports["ldap"],
                        timeout=10).text
    found = [float(value) for line, value in re.findall(r"^(%s\{[^}]*\}) ([0-9.e+]+)$" % name,
                                                        text, re.M)
             if all(part in line for part in labels.split(","))]
    return sum(found)


def test_during_a_key_rotation_workers_take_old_and_new_and_relays_sign_with_the_new(
        rotated: Rotated) -> None:
    """Messages queued under the old key still act; the relay already signs with the new
    one; a key that is neither is refused."""
    from novahooks.nova.outbox import Outbox
    from tasks import signing
    victim = make_event(kind="create", hostname="rotate-%s" % uuid.uuid4().hex[:6]).to_dict()
    _publish(rotated.url, "ldap", *_signed("ldap.register", victim, rotated.old))
    until(lambda: _entries(victim["uuid"]), 60, "a register signed with the previous key")
    _publish(rotated.url, "ldap", *_signed("ldap.deregister", victim, os.urandom(32)))
    worker = rotated.processes.workers["ldap"]
    until(lambda: '"reason": "forged"' in worker.log.read_text(errors="replace"), 60,
          "the deregister under a third key refused")
    assert _entries(victim["uuid"]), "a message under neither key acted"
    _publish(rotated.url, "ldap", *_signed("ldap.deregister", victim, rotated.new))
    until(lambda: not _entries(victim["uuid"]), 60, "a deregister signed with the new key")
    assert _rotated_metric(rotated, "novahooks_messages_previous_key_total",
                           'queue="ldap"') >= 1

    # The relay of the rotated stack signs with the new key only: its build chain's first
    # message waits on the dns queue, which nothing consumes in this broker database.
    event = make_event(kind="build")
    Outbox(str(rotated.stack.outbox_path)).append(event.uuid, "build", event.to_json())
    rotated.processes.start_relay()
    client = redis.Redis.from_url(rotated.url)
    until(lambda: client.llen("dns") > 0, 60, "the relay publishing the build chain")
    rotated.processes.relay.stop(signal.SIGINT)
    entry = json.loads(client.lrange("dns", 0, 0)[0])
    body, headers = base64.b64decode(entry["body"]), entry["headers"]
    assert headers[signing.HEADER] == signing.digest(rotated.new, headers, body)
    assert headers[signing.HEADER] != signing.digest(rotated.old, headers, body)


def test_remote_control_without_the_key_has_no_effect(rotated: Rotated) -> None:
    """Hand-made pidbox broadcasts (shutdown, pool_shrink) from someone who reaches the
    broker but has no key: unsigned, under a wrong key, or a genuine one replayed after it
    expired. The pool keeps its processes, logs and counts each, and answers signed
    control as before (``novahooks status`` depends on it)."""
    from kombu import pidbox

    from tasks import signing
    worker = rotated.processes.workers["ldap"]
    pid, offset = worker.proc.pid, worker.log.stat().st_size
    plain = pidbox.Mailbox("celery", type="fanout", accept=["json"], serializer="json")
    signed = signing.Mailbox("celery", type="fanout", accept=["json"], serializer="json")
    with Connection(rotated.url, connect_timeout=5) as conn:
        def stats() -> Dict[str, Any]:
            (reply,) = signed(conn)._broadcast("stats", reply=True, timeout=10, limit=1)
            return reply["ldap@novahooks"]
        before = stats()["pool"]["processes"]
        assert len(before) == 2
        refused_before = _rotated_metric(rotated, "novahooks_messages_refused_total",
                                         'queue="celery.pidbox"')
        plain(conn)._broadcast("pool_shrink", {"n": 1})
        plain(conn)._broadcast("shutdown")
        forger = signing._Signing(conn.Producer(), os.urandom(32))
        plain(conn)._publish("shutdown", {}, timeout=1, producer=forger)
        signed(conn)._publish("shutdown", {}, timeout=-3600)  # genuine, an hour stale

        def refused() -> str:
            return worker.log.read_bytes()[offset:].decode("utf-8", "replace")
        until(lambda: refused().count("control command") >= 4, 30,
              "the four control messages refused")
        assert worker.proc.poll() is None and worker.proc.pid == pid, "the pool shut down"
        assert stats()["pool"]["processes"] == before, "the pool was shrunk"
    log = refused()
    for reason in ("unsigned", "forged", "expired"):
        assert '"reason": "%s"' % reason in log, log[-3000:]
    assert 'control command \\"shutdown\\"' in log or 'control command "shutdown"' in log
    assert "pool_shrink" in log and "Warm shutdown" not in log
    assert _rotated_metric(rotated, "novahooks_messages_refused_total",
                           'queue="celery.pidbox"') - refused_before >= 4
