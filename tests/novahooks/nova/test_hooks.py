"""The hook classes, loaded through stevedore exactly as Nova loads them, with the
argument shapes of every release from Grizzly to Ussuri."""

import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, List

import pytest
from stevedore.hook import HookManager

from novahooks.nova import hooks
from tests.novahooks.nova.fakes import NovaObject, flavor, instance, vif

UUID = "7d1f5e2a-4b3c-4d5e-8f60-123456789abc"


@pytest.fixture
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "outbox.sqlite"
    monkeypatch.setenv("NOVAHOOKS_OUTBOX_PATH", str(path))
    hooks.reset_outbox()
    yield path
    hooks.reset_outbox()


def events(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(str(path)) as conn:
        rows = conn.execute("SELECT body FROM events ORDER BY seq")
        return [json.loads(body) for (body,) in rows]


def call(name: str, args: tuple, kwargs: Dict[str, Any], rv: Any = None) -> None:
    """What nova.hooks.add_hook does around the decorated function."""
    manager = HookManager("nova.hooks", name, invoke_on_load=True)
    assert manager.names() == [name], "entry point %s not installed" % name
    for ext in manager.extensions:
        pre = getattr(ext.obj, "pre", None)
        if pre:
            pre(*args, **kwargs)
    for ext in manager.extensions:
        post = getattr(ext.obj, "post", None)
        if post:
            post(rv, *args, **kwargs)


def test_create_instance_rest_shape_emits_create_without_addresses(outbox: Path) -> None:
    inst = instance(UUID, "web-1")
    call("create_instance", (object(), object(), flavor(), "img-1"),
         {"display_name": "Web 1", "metadata": {"role": "web"}, "min_count": 1},
         rv=([inst], "r-123"))
    (ev,) = events(outbox)
    assert ev["kind"] == "create" and ev["uuid"] == UUID and ev["hostname"] == "web-1"
    assert ev["addresses"] is None
    assert ev["flavor"]["vcpus"] == 1 and ev["image"] == "img-1"


def test_build_instance_active_emits_fixed_addresses_only(outbox: Path) -> None:
    inst = instance(UUID, "web-1", [vif("fa:16:3e:00:00:01", "private", "10.20.0.5",
                                        "2001:db8:20::5")])
    args = (object(), object(), inst, {}, object(), {}, None, [], None, None, None,
            "node1", None, None, None)
    call("build_instance", args, {}, rv="active")
    (ev,) = events(outbox)
    assert ev["kind"] == "build"
    assert [(a["address"], a["version"], a["mac"], a["network"]) for a in ev["addresses"]] == [
        ("10.20.0.5", 4, "fa:16:3e:00:00:01", "private"),
        ("2001:db8:20::5", 6, "fa:16:3e:00:00:01", "private")]


@pytest.mark.parametrize("rv", ["failed", "rescheduled"])
def test_build_instance_not_active_emits_nothing(outbox: Path, rv: str) -> None:
    inst = instance(UUID, "web-1", [])
    call("build_instance", (object(), object(), inst), {}, rv=rv)
    assert events(outbox) == []


@pytest.mark.parametrize("shape", ["keyword", "positional", "absent"])
def test_network_info_change_in_every_argument_shape(outbox: Path, shape: str) -> None:
    old = [vif("fa:16:3e:00:00:01", "private", "10.20.0.5")]
    new = old + [vif("fa:16:3e:00:00:02", "public", "10.20.1.7", port="p-2")]
    inst = instance(UUID, "web-1", old)
    manager = HookManager("nova.hooks", "instance_network_info", invoke_on_load=True)
    hook = manager.extensions[0].obj
    args = (object(), object(), inst)  # type: tuple
    kwargs = {}  # type: Dict[str, Any]
    if shape == "keyword":
        kwargs = {"nw_info": new}
    elif shape == "positional":
        args = args + (new,)
    hook.pre(*args, **kwargs)
    inst._fields["info_cache"] = NovaObject(network_info=new)  # what Nova's function does
    hook.post(None, *args, **kwargs)
    (ev,) = events(outbox)
    assert ev["kind"] == "network"
    assert sorted(a["address"] for a in ev["addresses"]) == ["10.20.0.5", "10.20.1.7"]


def test_network_info_unchanged_or_during_build_or_delete_emits_nothing(outbox: Path) -> None:
    nw = [vif("fa:16:3e:00:00:01", "private", "10.20.0.5")]
    call("instance_network_info", (object(), object(), instance(UUID, "web-1", nw)),
         {"nw_info": nw})
    call("instance_network_info", (object(), object(),
                                   instance(UUID, "web-1", [], vm_state="building")),
         {"nw_info": nw})
    call("instance_network_info", (object(), object(),
                                   instance(UUID, "web-1", nw, task_state="deleting"), []), {})
    assert events(outbox) == []


@pytest.mark.parametrize("extra", [(), ("quotas",), ("reservations",)],
                         ids=["pike-ussuri", "kilo-ocata", "grizzly-icehouse"])
def test_delete_captures_addresses_in_pre_and_emits_in_post(outbox: Path, extra: tuple) -> None:
    inst = instance(UUID, "web-1", [vif("fa:16:3e:00:00:01", "private", "10.20.0.5")],
                    task_state="deleting")
    manager = HookManager("nova.hooks", "delete_instance", invoke_on_load=True)
    hook = manager.extensions[0].obj
    args = (object(), object(), inst, []) + extra
    hook.pre(*args)
    assert events(outbox) == [], "nothing leaves before the delete succeeded"
    inst._fields["info_cache"] = NovaObject(network_info=[])
    hook.post(None, *args)
    (ev,) = events(outbox)
    assert ev["kind"] == "delete" and ev["addresses"][0]["address"] == "10.20.0.5"


def test_hooks_never_raise_into_nova(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NOVAHOOKS_OUTBOX_PATH", str(blocker / "outbox.sqlite"))
    hooks.reset_outbox()
    inst = instance(UUID, "web-1", [vif("fa:16:3e:00:00:01", "private", "10.20.0.5")])
    call("build_instance", (object(), object(), inst), {}, rv="active")
    call("create_instance", (object(), object(), flavor(), "i"), {}, rv="not-a-tuple")
    assert "build_instance post-hook failed" in caplog.text
    hooks.reset_outbox()


def test_hook_init_is_cheap_and_side_effect_free(outbox: Path) -> None:
    for cls in (hooks.CreateInstanceHook, hooks.BuildInstanceHook, hooks.NetworkInfoHook,
                hooks.DeleteInstanceHook):
        cls()
    assert not outbox.exists()
