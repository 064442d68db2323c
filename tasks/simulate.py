"""Call the installed ``nova.hooks`` exactly as Nova 21 calls them, without Nova.

For testing a deployment (``novahooks demo``, ``novahooks simulate``): the
hooks are found through stevedore's HookManager like Nova finds them, and get
Nova's argument shapes, with plain dicts where Nova passes its objects (the
hooks read both alike). Nova's own call order is kept: create_instance pre,
build_instance pre, create_instance post, instance_network_info, build_instance
post; on delete: delete_instance pre, the network info cache emptied, post.
"""

import uuid as uuidlib
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from stevedore.hook import HookManager


class Vm(NamedTuple):
    hostname: str
    addresses: Sequence[Tuple[str, str]] = ()  # (address, mac)
    os_type: str = "linux"
    network: str = "private"
    vcpus: int = 1
    memory_mb: int = 2048
    root_gb: int = 20
    uuid: str = ""
    project_id: str = "demo-project"
    #: Instance metadata and image properties, (key, value) pairs (opt-in/out policy).
    metadata: Tuple[Tuple[str, str], ...] = ()
    image_properties: Tuple[Tuple[str, str], ...] = ()


_managers = {}  # type: Dict[str, HookManager]


def _hooks(name: str) -> HookManager:
    """One manager per hook point for the process, as nova.hooks keeps them: its
    hook objects carry what ``pre`` saw to ``post`` (the delete hook's addresses)."""
    if name not in _managers:
        _managers[name] = HookManager("nova.hooks", name, invoke_on_load=True)
    return _managers[name]


def _run(name: str, phase: str, *args: Any, **kwargs: Any) -> None:
    for ext in _hooks(name).extensions:
        method = getattr(ext.obj, phase, None)
        if method is not None:
            method(*args, **kwargs)


def network_info(vm: Vm) -> List[Dict[str, Any]]:
    vifs = {}  # type: Dict[str, Dict[str, Any]]
    for address, mac in vm.addresses:
        vif = vifs.setdefault(mac, {
            "id": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, mac)), "address": mac, "type": "ovs",
            "network": {"label": vm.network, "subnets": []}})
        vif["network"]["subnets"].append({"ips": [{"address": address, "type": "fixed",
                                                   "version": 6 if ":" in address else 4}]})
    return list(vifs.values())


def instance(vm: Vm, vm_state: str = "active", task_state: Optional[str] = None,
             nw: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    return {
        "uuid": vm.uuid, "hostname": vm.hostname, "display_name": vm.hostname,
        "project_id": vm.project_id, "user_id": "demo-user", "availability_zone": "nova",
        "host": "compute-1", "vm_state": vm_state, "task_state": task_state, "deleted": False,
        "flavor": flavor(vm), "image_ref": "cirros-0.6" if vm.os_type == "linux" else "win2022",
        "os_type": vm.os_type, "metadata": dict(vm.metadata, os_type=vm.os_type),
        "system_metadata": {"image_" + key: value for key, value in vm.image_properties},
        "info_cache": {"network_info": nw if nw is not None else []},
    }


def flavor(vm: Vm) -> Dict[str, Any]:
    return {"name": "m1.c%dm%d" % (vm.vcpus, vm.memory_mb), "vcpus": vm.vcpus,
            "memory_mb": vm.memory_mb, "root_gb": vm.root_gb, "ephemeral_gb": 0, "swap": 0}


def with_uuid(vm: Vm) -> Vm:
    return vm if vm.uuid else vm._replace(uuid=str(uuidlib.uuid4()))


def create(vm: Vm) -> None:
    """A boot, as nova-api and nova-compute would fire the hooks."""
    api, ctx, compute, net = object(), object(), object(), object()
    building = instance(vm, "building")
    create_args = (api, ctx, flavor(vm), building["image_ref"])
    create_kwargs = {"display_name": vm.hostname, "metadata": building["metadata"],
                     "min_count": 1, "max_count": 1}
    build_args = (compute, ctx, building, {}, {}, {}, None, [], None, None, None, "node-1",
                  None, None, None)  # type: Tuple[Any, ...]
    _run("create_instance", "pre", *create_args, **create_kwargs)
    _run("build_instance", "pre", *build_args)
    _run("create_instance", "post", ([building], "r-" + vm.uuid[:8]), *create_args,
         **create_kwargs)
    nw = network_info(vm)
    _run("instance_network_info", "pre", net, ctx, building, nw_info=nw)
    building["info_cache"]["network_info"] = nw
    _run("instance_network_info", "post", None, net, ctx, building, nw_info=nw)
    active = instance(vm, "active", nw=nw)
    build_args = (compute, ctx, active) + build_args[3:]
    _run("build_instance", "post", "active", *build_args)


def delete(vm: Vm) -> None:
    """A delete on the compute host: addresses visible in pre, gone by post."""
    compute, ctx, net = object(), object(), object()
    inst = instance(vm, "active", "deleting", nw=network_info(vm))
    _run("delete_instance", "pre", compute, ctx, inst, [])
    empty = []  # type: List[Dict[str, Any]]
    _run("instance_network_info", "pre", net, ctx, inst, empty)
    inst["info_cache"]["network_info"] = empty
    _run("instance_network_info", "post", None, net, ctx, inst, empty)
    _run("delete_instance", "post", None, compute, ctx, inst, [])


def resize(vm: Vm) -> None:
    """Nova has no resize hook: a resize reaches novahooks as a notification would,
    straight into the outbox as a ``resize`` event with the new flavor."""
    from novahooks.event import new_event
    from novahooks.nova.extract import flavor as flavor_of, instance_fields
    from novahooks.nova.hooks import emit
    inst = instance(vm, "active", nw=network_info(vm))
    fields = instance_fields(inst)
    fields["flavor"] = flavor_of(flavor(vm))
    emit(new_event("resize", vm.uuid, vm.hostname, source="simulate:resize", addresses=None,
                   **fields))
