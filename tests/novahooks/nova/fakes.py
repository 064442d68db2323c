"""Objects shaped like Nova's, for argument shapes real Nova 21 no longer produces.

``NovaObject`` raises on any unset field, as Nova's lazy-loading would try a
database round trip there: a hook that reads one fails these tests.
"""

from typing import Any, Dict, List


class NovaObject(object):
    def __init__(self, **fields: Any) -> None:
        self.__dict__["_fields"] = dict(fields)

    def obj_attr_is_set(self, name: str) -> bool:
        return name in self._fields

    def __getattr__(self, name: str) -> Any:
        if name in self._fields:
            return self._fields[name]
        raise AssertionError("hook lazy-loaded %r from Nova's database" % name)


def vif(mac: str, label: str, *ips: str, port: str = "p-1") -> Dict[str, Any]:
    return {"id": port, "address": mac, "type": "ovs",
            "network": {"id": "n-1", "label": label, "subnets": [
                {"cidr": None, "ips": [{"address": ip, "type": "fixed",
                                        "version": 6 if ":" in ip else 4,
                                        "floating_ips": [{"address": "203.0.113.9",
                                                          "type": "floating", "version": 4}]}
                                       for ip in ips]}]}}


def flavor() -> NovaObject:
    return NovaObject(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20, ephemeral_gb=0,
                      swap=0, flavorid="2")


def instance(uuid: str, hostname: str, nw: List[Dict[str, Any]] = None, **extra: Any) -> NovaObject:
    fields = dict(uuid=uuid, hostname=hostname, display_name=hostname.upper(),
                  project_id="p1", user_id="u1", availability_zone="nova", host="compute1",
                  vm_state="active", task_state=None, flavor=flavor(), image_ref="img-1",
                  os_type=None, metadata={"role": "web"}, deleted=False)
    if nw is not None:
        fields["info_cache"] = NovaObject(network_info=nw)
    fields.update(extra)
    return NovaObject(**fields)
