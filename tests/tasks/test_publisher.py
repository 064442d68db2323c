"""ChainPublisher sends Celery's own messages, and real workers run every step of them."""

import base64
import json
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytest
import redis
from celery import Celery

from tests.servers.redis import RedisServer
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, with_uuid
from bench.inline import event_of
from tasks import chains, signing
from tasks.publisher import ChainPublisher
from tests.conftest import mac, make_event, unique_v4
from tests.helpers import audit_lines, until

#: fields that differ between two publishes of the same chain by design
PER_MESSAGE = {"id", "root_id", "task_id", "correlation_id", "delivery_tag", "argsrepr",
               "uuid", "clock", "timestamp", "args", "novahooks_signature"}
#: the message signing key of these tests (tasks/signing.py)
SECRET = b"publisher-test-signing-key-0123456789"


def app_on(url: str) -> Celery:
    app = Celery("publisher-test")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = url
    return app


def decode(raw: bytes) -> Tuple[Dict[str, Any], Any]:
    envelope = json.loads(raw)
    return envelope, json.loads(base64.b64decode(envelope["body"]))


def without(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without(v) for k, v in value.items() if k not in PER_MESSAGE}
    if isinstance(value, list):
        return [without(v) for v in value]
    return value


def sent_events(pubsub: Any, count: int) -> List[Dict[str, Any]]:
    events: List[Dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(events) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "pmessage":
            events.append(decode(message["data"])[1])
    return events


@pytest.mark.parametrize("kind", sorted(chains.PLANS))
def test_template_messages_are_the_ones_celery_sends(broker: RedisServer, kind: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "key", lambda: SECRET)
    app = app_on(broker.url)
    client = redis.Redis.from_url(broker.url)
    pubsub = client.pubsub()
    pubsub.psubscribe("*celeryev*")
    pubsub.get_message(timeout=1)
    event = make_event(kind, addresses=None).to_dict()
    first_queue = chains.PLANS[kind][0][0].split(".")[0]
    chains.build(app, event).apply_async(retry=False)
    publisher = ChainPublisher(app)
    with app.producer_or_acquire() as producer:
        roots = [publisher.publish(producer, kind, json.dumps(event), retry=False)
                 for _ in range(2)]
    celerys, *ours = [decode(raw) for raw in reversed(client.lrange(first_queue, 0, -1))]
    assert len(ours) == 2
    for (envelope, body), root in zip(ours, roots):
        assert without(dict(envelope, body=None)) == without(dict(celerys[0], body=None))
        assert without(body) == without(celerys[1])
        assert body[0] == [event]
        assert envelope["headers"]["id"] == envelope["headers"]["root_id"] == root
        assert envelope["properties"]["correlation_id"] == root
        steps = [sig["task"] for sig in reversed(body[2]["chain"] or [])]
        assert steps == [name for name, _ in chains.PLANS[kind]][1:]
        assert all(sig["args"] == [event] for sig in body[2]["chain"] or [])
    for envelope, _ in ours + [celerys]:
        # what workers verify, on Celery's messages and the template's alike
        received = SimpleNamespace(body=base64.b64decode(envelope["body"]),
                                   headers=envelope["headers"])
        assert signing.refusal(received, SECRET, 1 << 20) is None
        received.headers = dict(envelope["headers"], task="ldap.deregister")
        assert signing.refusal(received, SECRET, 1 << 20)[0] == "forged"
    ids = [[env["headers"]["id"]] + [s["options"]["task_id"] for s in body[2]["chain"] or []]
           for env, body in ours + [celerys]]
    flat = [i for group in ids for i in group]
    assert len(flat) == len(set(flat)), "every task of every chain gets an id of its own"
    sent = sent_events(pubsub, 3)
    assert [e["type"] for e in sent] == ["task-sent"] * 3
    assert [e["uuid"] for e in sent[1:]] == roots
    assert without(sent[1]) == without(sent[0]) == without(sent[2])


def test_a_chain_from_a_template_runs_every_step_on_real_workers(
        stack: Stack, processes: Processes) -> None:
    from tests.demo import holdings, registered
    from tasks.app import app
    vm = with_uuid(Vm("tmpl-" + mac().replace(":", "")[-6:], ((unique_v4(), mac()),)))
    event = event_of(vm)
    with app.producer_or_acquire() as producer:
        with producer.batch(4):
            ChainPublisher(app).publish(producer, "build", event.to_json(), retry=False)
    until(lambda: any(r["stage"] == "done" and r["kind"] == "build"
                      for r in audit_lines(stack.audit_path, vm.uuid)), 180,
          "the build chain's closing audit record")
    held = holdings(vm)
    assert registered(vm, held), held
