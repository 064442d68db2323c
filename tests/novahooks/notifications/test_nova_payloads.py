"""Every documented Nova sample, the legacy format and broken notifications, translated.

No servers: translation is pure. (Named apart from tests/nova/test_nova.py: test
modules here are not packages, so basenames must be unique.)
"""

import json
import uuid as uuidlib

import pytest

from novahooks.notifications import message, nova
from tasks.notifications.explain import explain
from novahooks.notifications.message import Malformed
from novahooks.notifications.plan import decide
from tests.novahooks.notifications import samples

SAMPLE_UUID = "178b0921-8f85-4257-88b6-2e743b5a975c"
PORT = "ce531f90-199f-48c0-816c-13e38010b442"

#: sample -> (kind enqueued, or None when ignored; words the ignored reason must contain)
EXPECTED = {
    "instance-create-start": (None, "instance.create.end"),
    "instance-create-end": ("build", None),
    "instance-create-error": (None, "build failed"),
    "instance-delete-start": (None, "captured"),
    "instance-delete-end": ("delete", None),
    "instance-resize-end": (None, "instance.resize_finish.end"),
    "instance-resize_finish-end": ("resize", None),
    "instance-update": (None, "task running"),
    "instance-power_off-end": (None, "changes nothing"),
}


def test_every_sample_is_covered() -> None:
    assert samples.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "envelope"])
def test_sample(name: str, wrapped: bool) -> None:
    body = samples.load(name)
    answer = explain(json.dumps(samples.envelope(body) if wrapped else body))
    kind, words = EXPECTED[name]
    assert answer["notification"]["event_type"] == body["event_type"]
    assert answer["malformed"] is False
    if kind is None:
        assert answer["event"] is None and answer["steps"] == []
        assert words in answer["ignored"]
        return
    event = answer["event"]
    assert answer["ignored"] is None
    assert event["kind"] == kind and event["uuid"] == SAMPLE_UUID
    assert event["hostname"] == "some-server"
    assert event["project_id"] == "6f70656e737461636b20342065766572"
    assert event["source"] == "notification:" + body["event_type"]
    assert answer["steps"][-1] == "audit.record"


def test_create_end_carries_fixed_address_and_flavor() -> None:
    event = decide(message.from_dict(samples.load("instance-create-end"))).events[0]
    assert [a._asdict() for a in event.addresses] == [
        {"address": "192.168.1.3", "version": 4, "mac": "fa:16:3e:4c:2c:30",
         "network": "private", "port_id": PORT}]
    assert event.flavor.vcpus == 1 and event.flavor.memory_mb == 512
    assert event.vm_state == "active" and event.host == "compute"
    assert event.image == "155d900f-4e14-4e4c-a73d-069cbf4541e6"


def test_resize_finish_carries_the_new_flavor() -> None:
    event = decide(message.from_dict(samples.load("instance-resize_finish-end"))).events[0]
    assert event.flavor.name == "other_flavor" and event.flavor.memory_mb == 256


def test_delete_end_alone_has_no_addresses_to_tell() -> None:
    event = decide(message.from_dict(samples.load("instance-delete-end"))).events[0]
    assert event.addresses is None and event.hostname == "some-server"


def test_varied_sample_with_v4_and_v6() -> None:
    uuid = str(uuidlib.uuid4())
    body = samples.vary("instance-create-end", uuid, "web-7", [
        ("10.20.5.7", "fa:16:3e:00:00:07", "p-1"), ("2001:db8:20::7", "fa:16:3e:00:00:07", "p-1")])
    event = decide(message.read(json.dumps(samples.envelope(body)))).events[0]
    assert event.uuid == uuid and event.hostname == "web-7"
    assert [(a.address, a.version) for a in event.addresses] == [
        ("10.20.5.7", 4), ("2001:db8:20::7", 6)]


def test_same_notification_twice_is_one_event_id() -> None:
    body = samples.vary("instance-create-end", str(uuidlib.uuid4()), "vm-1")
    first = decide(message.from_dict(body)).events[0]
    again = decide(message.from_dict(body)).events[0]
    assert first.event_id == again.event_id


def test_legacy_create_end() -> None:
    uuid = str(uuidlib.uuid4())
    body = samples.legacy_create_end(uuid, "legacy-1", [("10.20.9.1", "fa:16:3e:09:00:01"),
                                                        ("2001:db8:20::901", "fa:16:3e:09:00:01")])
    answer = explain(samples.envelope(body))
    event = answer["event"]
    assert event["kind"] == "build" and event["uuid"] == uuid and event["hostname"] == "legacy-1"
    assert [(a["address"], a["version"], a["mac"], a["network"]) for a in event["addresses"]] == [
        ("10.20.9.1", 4, "fa:16:3e:09:00:01", "private"),
        ("2001:db8:20::901", 6, "fa:16:3e:09:00:01", "private")]
    assert event["flavor"]["vcpus"] == 1 and event["flavor"]["memory_mb"] == 2048
    assert event["image"] == "155d900f-4e14-4e4c-a73d-069cbf4541e6"
    assert answer["steps"][0] == "dns.register"


def test_legacy_create_start_is_ignored() -> None:
    body = samples.legacy_create_end(str(uuidlib.uuid4()), "legacy-2", [])
    body["event_type"] = "compute.instance.create.start"
    assert "compute.instance.create.end" in explain(body)["ignored"]


def test_other_services_notifications_are_ignored() -> None:
    answer = explain({"event_type": "volume.create.end", "payload": {}, "priority": "INFO"})
    assert answer["ignored"] == "volume.create.end is not an instance notification"


def _broken(mutate) -> dict:  # type: ignore[no-untyped-def]
    body = samples.vary("instance-create-end", str(uuidlib.uuid4()), "vm-x")
    mutate(body)
    return body


@pytest.mark.parametrize("raw, field, words", [
    ("{not json", "<root>", "not valid JSON"),
    ("[1, 2]", "<root>", "expected a JSON object"),
    (json.dumps({"oslo.version": "3.0", "oslo.message": "{}"}), "oslo.version", "3.0"),
    (json.dumps({"oslo.version": "2.0", "oslo.message": "{oops"}), "oslo.message",
     "not valid JSON"),
    (json.dumps({"event_type": "instance.create.end"}), "payload", "missing"),
    (json.dumps({"payload": {}}), "event_type", "missing"),
    (_broken(lambda b: b["payload"]["nova_object.data"].pop("uuid")), "payload.uuid", "missing"),
    (_broken(lambda b: [b["payload"]["nova_object.data"].pop(k)
                        for k in ("host_name", "display_name")]), "payload.host_name",
     "no display_name to derive it from"),
    (_broken(lambda b: b["payload"].update({"nova_object.version": "3.0"})),
     "payload.nova_object.version", "major version 3 is unknown"),
    (_broken(lambda b: b["payload"].update({"nova_object.name": "InstanceFuturePayload"})),
     "payload.nova_object.name", "not a payload this listener reads"),
    (_broken(lambda b: b["payload"]["nova_object.data"]["ip_addresses"][0]
              ["nova_object.data"].pop("address")), "payload.ip_addresses[0].address", "missing"),
    (_broken(lambda b: b["payload"]["nova_object.data"]["ip_addresses"][0]
              .update({"nova_object.version": "2.0"})),
     "payload.ip_addresses[0].nova_object.version", "IpPayload 2.0"),
    (_broken(lambda b: b["payload"]["nova_object.data"].update({"ip_addresses": "10.0.0.1"})),
     "payload.ip_addresses", "expected a list"),
    (json.dumps({"event_type": "instance.create.end", "payload": {
        "$ref": "common_payloads/InstanceCreatePayload.json#"}}), "payload", "unresolved $ref"),
])
def test_malformed_names_the_field(raw, field, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Malformed) as caught:
        decide(message.read(raw if isinstance(raw, str) else json.dumps(raw)))
    assert caught.value.field == field and words in str(caught.value)
    answer = explain(raw)
    assert answer["malformed"] is True and answer["event"] is None and field in answer["ignored"]


def test_translate_names_each_action() -> None:
    change = nova.translate(message.from_dict(samples.load("instance-delete-start")))
    assert isinstance(change, nova.Change) and change.action == "capture"
    assert [a.address for a in change.event.addresses] == ["192.168.1.3"]


@pytest.mark.parametrize("display_name,hostname", [
    ("My Web_Server.01", "my-web-server-01"),       # spaces, _ and . become -
    ("-db (primary)-", "db-primary"),              # other characters go, ends stripped
    ("caf\u00e9-\u4e2d\u6587", "caf\u00e9"),          # outside Latin-1 dropped, then "-" stripped
    ("\u4e2d\u6587", "Server-%s" % SAMPLE_UUID),     # nothing left: Nova's default
    ("x" * 70, "x" * 63),                           # truncated to 63 first
])
def test_payload_without_hostname_gets_novas_name_for_it(display_name: str,
                                                         hostname: str) -> None:
    """Very old legacy payloads carry no hostname: Nova's own rule (nova.utils
    sanitize_hostname, Server-<uuid> when nothing is left) gives it."""
    body = samples.legacy_create_end(SAMPLE_UUID, "ignored", [("10.20.9.9", "fa:16:3e:09:00:09")])
    del body["payload"]["hostname"]
    body["payload"]["display_name"] = display_name
    event = decide(message.from_dict(body)).events[0]
    assert event.hostname == hostname
    versioned = samples.load("instance-create-end")
    data = versioned["payload"]["nova_object.data"]
    del data["host_name"]
    data["display_name"] = display_name
    assert decide(message.from_dict(versioned)).events[0].hostname == hostname


@pytest.mark.parametrize("stamp,micros", [
    ("2026-12-01 23:08:48.523874", 1796166528523874),   # oslo.messaging's str(utcnow())
    ("2026-12-01 23:08:48", 1796166528000000),          # str() drops a zero fraction
    ("2026-12-01T23:08:48.523874Z", 1796166528523874),
    ("2026-12-02T00:08:48.523874+01:00", 1796166528523874),
])
def test_event_order_is_the_notifications_own_time_and_action_rank(stamp: str,
                                                                   micros: int) -> None:
    body = dict(samples.load("instance-resize_finish-end"), timestamp=stamp)
    event = decide(message.from_dict(body)).events[0]
    assert event.order == (micros, nova.RANK["resize"])
    again = decide(message.from_dict(body)).events[0]
    assert again.order == event.order and again.emitted_at >= event.emitted_at


def test_event_without_timestamp_leaves_the_order_to_the_relay() -> None:
    event = decide(message.from_dict(samples.load("instance-create-end"))).events[0]
    assert event.order is None
    assert event.ordering() == (round(event.emitted_at * 1000000), 0)
