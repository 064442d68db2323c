"""Nova's documented notification samples, expanded and varied for tests.

The files in ``tests/data/nova-notification-samples`` (vendored from Nova's
``doc/notification_samples/``; origin and licence in that folder's README) reference shared payload
fragments with ``$ref``; :func:`load` expands them as that folder's README
(and Nova's ``nova/tests/json_ref.py``) describes: whole-file refs relative to
the referring file, referenced document expanded first, then the other keys of
the referring dict deep-merged over it (dicts merged, everything else replaced).
"""

import copy
import json
import uuid as uuidlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tests.conftest import ROOT

SAMPLES = ROOT / "tests" / "data" / "nova-notification-samples"


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return override


def _expand(node: Any, directory: Path) -> Any:
    if isinstance(node, list):
        return [_expand(item, directory) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" not in node:
        return {key: _expand(value, directory) for key, value in node.items()}
    path, _, pointer = node["$ref"].partition("#")
    if pointer:
        raise ValueError("JSON pointers are not supported in $ref %r" % node["$ref"])
    target = (directory / path).resolve()
    base = _expand(json.loads(target.read_text()), target.parent)
    overrides = {key: _expand(value, directory) for key, value in node.items() if key != "$ref"}
    return _merge(base, overrides)


def load(name: str) -> Dict[str, Any]:
    """One sample, fully expanded (``name`` without ``.json``)."""
    path = SAMPLES / (name + ".json")
    return _expand(json.loads(path.read_text()), path.parent)


def names() -> List[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


def ip_payload(address: str, mac: str, port: str, label: str = "private") -> Dict[str, Any]:
    return {"nova_object.name": "IpPayload", "nova_object.namespace": "nova",
            "nova_object.version": "1.0",
            "nova_object.data": {"address": address, "version": 6 if ":" in address else 4,
                                 "mac": mac, "port_uuid": port, "label": label,
                                 "device_name": "tap" + port[:11], "meta": {}}}


def vary(name: str, uuid: str, hostname: str,
         addresses: Optional[List[Tuple[str, str, str]]] = None,
         **data: Any) -> Dict[str, Any]:
    """A sample for another instance: uuid, host_name, and (address, mac, port) triples.

    ``addresses`` None keeps the sample's list; the sample's own empty list stays empty.
    """
    body = copy.deepcopy(load(name))
    fields = body["payload"]["nova_object.data"]
    fields.update(uuid=uuid, host_name=hostname, display_name=hostname, **data)
    if addresses is not None:
        fields["ip_addresses"] = [ip_payload(*item) for item in addresses]
    body["message_id"] = str(uuidlib.uuid4())
    return body


def envelope(body: Dict[str, Any]) -> Dict[str, Any]:
    """As oslo.messaging's messagingv2 driver puts it on the wire."""
    return {"oslo.version": "2.0", "oslo.message": json.dumps(body)}


def legacy_create_end(uuid: str, hostname: str,
                      addresses: List[Tuple[str, str]]) -> Dict[str, Any]:
    """compute.instance.create.end as nova/notifications/base.py::info_from_instance builds
    it (keys per shared/nova-facts.md section 4)."""
    return {
        "event_type": "compute.instance.create.end", "priority": "INFO",
        "publisher_id": "compute.compute1", "message_id": str(uuidlib.uuid4()),
        "timestamp": "2026-11-26 12:34:56.789012",
        "payload": {
            "tenant_id": "6f70656e737461636b20342065766572", "user_id": "fake",
            "instance_id": uuid, "display_name": hostname, "reservation_id": "r-1",
            "hostname": hostname, "instance_type": "m1.small", "instance_type_id": 5,
            "instance_flavor_id": "2", "architecture": "x86_64", "memory_mb": 2048,
            "disk_gb": 20, "vcpus": 1, "root_gb": 20, "ephemeral_gb": 0,
            "host": "compute1", "node": "compute1", "availability_zone": "nova",
            "cell_name": "", "created_at": "2026-11-26 12:34:50+00:00",
            "terminated_at": "", "deleted_at": "", "launched_at": "2026-11-26T12:34:56.000000",
            "image_ref_url": "http://glance:9292/images/155d900f-4e14-4e4c-a73d-069cbf4541e6",
            "os_type": "linux", "kernel_id": "", "ramdisk_id": "", "state": "active",
            "state_description": "", "progress": "", "access_ip_v4": None,
            "access_ip_v6": None,
            "fixed_ips": [{"address": a, "type": "fixed", "version": 6 if ":" in a else 4,
                           "floating_ips": [], "meta": {}, "label": "private", "vif_mac": m}
                          for a, m in addresses],
            "image_meta": {}, "metadata": {}, "message": "Success"}}


def floatingip(event: str, floating_id: str, address: str, port: Optional[str],
               fixed: Optional[str]) -> Dict[str, Any]:
    """Neutron's floatingip.create/update.end (neutron/api/v2/base.py notifies the
    resource's view) or delete.end (``floatingip_id`` plus the view)."""
    view = {"id": floating_id, "floating_ip_address": address, "port_id": port,
            "fixed_ip_address": fixed, "router_id": "r-1" if port else None,
            "status": "ACTIVE" if port else "DOWN", "tenant_id": "p", "project_id": "p",
            "floating_network_id": "0b5a9c1c-5b8a-4a5b-9e0a-7d0b3f3f0c11", "description": ""}
    payload = {"floatingip": view}  # type: Dict[str, Any]
    if event == "floatingip.delete.end":
        payload["floatingip_id"] = floating_id
    return {"event_type": event, "priority": "INFO", "publisher_id": "network.controller",
            "message_id": str(uuidlib.uuid4()), "payload": payload}
