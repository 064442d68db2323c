"""Inventory step: the VM record with flavor, project, addresses and status."""

from typing import Any, Dict

from tasks import drivers
from tasks.app import app
from tasks.base import StepTask, book
from tasks.drift import REPAIR
from tasks.errors import InvalidEvent


def _register(task: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev, _ = task.admit(event)
    if ev.flavor is None or ev.flavor.vcpus is None or ev.flavor.memory_mb is None:
        raise InvalidEvent("flavor", "unknown flavor (vcpus and memory_mb are required)")
    # The ledger is read under the step's lock (inside the action): every step's notes,
    # since the IPAM step's hold the ids of the addresses this step assigns; a first run
    # marks its note pending, so a run that dies after creating the VM is not followed
    # by a second VM under a later event's name. A reconcile repairs what someone
    # changed behind the ledger: it reads the backend.
    return task.register(ev, lambda: drivers.inventory().register_with(
        ev, None if ev.source == REPAIR else book().made_claiming(ev.uuid, "inventory")))


@app.task(base=StepTask, bind=True, name="inventory.register", backend_kind="inventory")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    return _register(self, event)


@app.task(base=StepTask, bind=True, name="inventory.update", backend_kind="inventory")
def update(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    return _register(self, event)


@app.task(base=StepTask, bind=True, name="inventory.deregister", backend_kind="inventory")
def deregister(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    return self.deregister(ev, lambda: drivers.inventory().deregister_with(
        ev, book().made(ev.uuid)), undo)
