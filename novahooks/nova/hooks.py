"""Nova hook classes, registered under the ``nova.hooks`` entry-point group.

Nova (Grizzly to Ussuri 21.x) calls ``pre(*args, **kwargs)`` before and
``post(rv, *args, **kwargs)`` after the decorated function, on the service's
request or green thread, and instantiates each class on every hooked call.
So: ``__init__`` does nothing, each method reads what it needs from the
arguments while Nova holds them (its objects mutate afterwards), appends one
event to the local outbox and returns. Nothing here waits on the network and
nothing raises into Nova: a failure is logged, never propagated. The one
exception is opt-in: a configured pre-boot gate (``gate.py``) makes
``build_instance``'s pre-hook wait, bounded, and, under policy ``abort``,
raise Nova's ``FatalHookException``.

Only these four hook points ever existed; resize, rebuild and rename arrive
through Nova's notifications instead (``novahooks listen``).
"""

import functools
import logging
import threading
from typing import Any, Callable, Dict, Optional

from novahooks.nova import extract, gate
from novahooks.event import InstanceEvent, new_event
from novahooks.nova.outbox import HOOK_CHECKPOINT_PAGES, Outbox

LOG = logging.getLogger("novahooks.hooks")

_outbox = None  # type: Optional[Outbox]
_outbox_lock = threading.Lock()


def outbox() -> Outbox:
    """The process-wide outbox, configured on first use rather than at import."""
    global _outbox
    if _outbox is None:
        with _outbox_lock:
            if _outbox is None:
                from novahooks.nova.config import load_hook_settings
                settings = load_hook_settings()
                _outbox = Outbox(settings.outbox.path, settings.outbox.busy_timeout_ms,
                                 HOOK_CHECKPOINT_PAGES)
    return _outbox


def reset_outbox() -> None:
    """Forget the cached outbox and gate configuration (tests and config reloads)."""
    global _outbox
    with _outbox_lock:
        if _outbox is not None:
            _outbox.close()
        _outbox = None
    gate.reset()


def emit(event: InstanceEvent) -> None:
    outbox().append(event.uuid, event.kind, event.to_json())


def _event_for(kind: str, instance: Any, source: str, **overrides: Any) -> Optional[InstanceEvent]:
    uuid = extract.field(instance, "uuid")
    if not uuid:
        LOG.warning("novahooks: %s hook saw an instance without uuid; skipped", source)
        return None
    fields = extract.instance_fields(instance)
    fields.update(overrides)
    return new_event(kind, str(uuid), extract.field(instance, "hostname"), source=source,
                     **fields)


class _Hook(object):
    """Catch-all boundary: a hook must never break the Nova operation it observes."""

    name = ""

    def _guard(self, phase: str, func: Any, *args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:  # noqa: BLE001 - Nova must never see our failures
            LOG.exception("novahooks: %s %s-hook failed; event not recorded", self.name, phase)


class _PairedHook(_Hook):
    """A hook whose ``pre`` notes something of the instance that its ``post`` needs.

    Nova makes one hook object per hooked call and runs ``pre`` and ``post`` on it,
    so ``_held`` (instance uuid -> what ``pre`` saw) lives exactly as long as one call.
    """

    def __init__(self) -> None:
        self._held = {}  # type: Dict[str, Any]

    def pre(self, *args: Any, **kwargs: Any) -> None:
        self._guard("pre", self._pre, args, kwargs)

    def post(self, rv: Any, *args: Any, **kwargs: Any) -> None:
        self._guard("post", self._post, args, kwargs)

    def _pre(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _post(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        raise NotImplementedError


class CreateInstanceHook(_Hook):
    """nova-api ``API.create``: the instance has a uuid and hostname but no host or address.

    Starts the steps that need no address (directory entry, planned inventory
    record, audit) so that a Windows VM's computer object can exist before boot.
    """

    name = "create_instance"

    def post(self, rv: Any, *args: Any, **kwargs: Any) -> None:
        self._guard("post", self._post, rv, args, kwargs)

    def _post(self, rv: Any, args: tuple, kwargs: Dict[str, Any]) -> None:
        instances = rv[0] if isinstance(rv, tuple) and rv else rv
        flavor = extract.flavor(extract.arg(args, kwargs, 2, "instance_type"))
        image = extract.arg(args, kwargs, 3, "image_href")
        for instance in instances or []:
            overrides = {"addresses": None}  # type: Dict[str, Any]
            if extract.field(instance, "flavor") is None and flavor is not None:
                overrides["flavor"] = flavor
            if not extract.field(instance, "image_ref") and image:
                overrides["image"] = str(image)
            event = _event_for("create", instance, "hook:create_instance", **overrides)
            if event is not None:
                emit(event)


class BuildInstanceHook(_Hook):
    """nova-compute ``_do_build_and_run_instance``: on ``'active'`` the VM has its addresses.

    With ``[gate] steps`` configured, ``pre`` holds the build until those
    pre-boot steps finished (see novahooks/nova/gate.py). Without, the object
    has no ``pre`` at all: Nova looks it up with ``getattr(obj, 'pre', None)``
    and neither calls nor logs anything, so builds run exactly as before.
    """

    name = "build_instance"

    @property
    def pre(self) -> Callable[..., None]:
        cfg = gate.config()
        if cfg is None:
            raise AttributeError("pre")
        return functools.partial(self._gated_pre, cfg)

    def _gated_pre(self, cfg: gate.GateConfig, *args: Any, **kwargs: Any) -> None:
        """May raise FatalHookException (policy abort): the one exception Nova is meant to see."""
        instance = extract.arg(args, kwargs, 2, "instance")
        gate.hold(cfg, lambda kind: _event_for(kind, instance, "hook:build_instance:gate",
                                               addresses=None), emit)

    def post(self, rv: Any, *args: Any, **kwargs: Any) -> None:
        self._guard("post", self._post, rv, args, kwargs)

    def _post(self, rv: Any, args: tuple, kwargs: Dict[str, Any]) -> None:
        if rv != "active":
            return
        instance = extract.arg(args, kwargs, 2, "instance")
        event = _event_for("build", instance, "hook:build_instance",
                           addresses=extract.cached_addresses(instance) or [])
        if event is not None:
            emit(event)


class NetworkInfoHook(_PairedHook):
    """``update_instance_cache_with_nw_info``: addresses appear, change or go away.

    ``pre`` remembers what the cache held, ``post`` compares with what it holds
    now and emits only on a change. During a build or a delete the build and
    delete hooks carry the addresses, so those phases are left to them.
    """

    name = "instance_network_info"

    def _skip(self, instance: Any) -> bool:
        return bool(extract.field(instance, "deleted")) or \
            extract.field(instance, "vm_state") in ("building", "deleted") or \
            extract.field(instance, "task_state") == "deleting"

    def _pre(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        instance = extract.arg(args, kwargs, 2, "instance")
        uuid = extract.field(instance, "uuid")
        if uuid and not self._skip(instance):
            self._held[uuid] = extract.cached_addresses(instance)

    def _post(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        instance = extract.arg(args, kwargs, 2, "instance")
        uuid = extract.field(instance, "uuid")
        if not uuid or uuid not in self._held:
            return
        before = self._held.pop(uuid)
        nw_info = extract.arg(args, kwargs, 3, "nw_info")
        after = extract.addresses(nw_info) if nw_info is not None else \
            extract.cached_addresses(instance)
        if after is None or (before is not None and sorted(before) == sorted(after)):
            return
        event = _event_for("network", instance, "hook:instance_network_info", addresses=after)
        if event is not None:
            emit(event)


class DeleteInstanceHook(_PairedHook):
    """nova-compute ``_delete_instance``: capture addresses before, emit after success.

    ``post`` runs only if the delete succeeded, so a failed delete removes
    nothing from the company's systems.
    """

    name = "delete_instance"

    def _pre(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        instance = extract.arg(args, kwargs, 2, "instance")
        event = _event_for("delete", instance, "hook:delete_instance",
                           addresses=extract.cached_addresses(instance))
        if event is not None:
            self._held[event.uuid] = event

    def _post(self, args: tuple, kwargs: Dict[str, Any]) -> None:
        instance = extract.arg(args, kwargs, 2, "instance")
        uuid = extract.field(instance, "uuid")
        event = self._held.pop(uuid, None) if uuid else None
        if event is None:
            event = _event_for("delete", instance, "hook:delete_instance")
        if event is not None:
            emit(event)
