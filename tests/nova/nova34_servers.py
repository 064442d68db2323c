"""Drive real Nova 34.0.0 in-process and publish its notifications to a real RabbitMQ.

Run with the Python 3.12 interpreter of the venv ``tests/nova/venv.py`` builds (``NOVA_34``)::

    <venv>/bin/python tests/nova/nova34_servers.py --transport-url rabbit://guest:guest@\
127.0.0.1:5672/<vhost> --format versioned --notify-on-state-change vm_and_task_state

Nova 34 has no hooks: a deployment learns about its VMs only from Nova's notifications. Nova's
functional-test harness (``_IntegratedTestBase``: API, conductor, scheduler, two computes
``compute`` and ``compute2`` on the fake virt driver, real Placement, Neutron/Glance/Cinder
fixtures) runs here with casts left as casts, so the notification order is a deployment's. The
harness captures notifications in fake notifiers; this script tees each one to a real
``oslo_messaging.Notifier`` (driver ``messagingv2``, exchange ``nova``, topics
``versioned_notifications`` and ``notifications``), publishing only what ``nova.rpc.init``
would publish under ``--format`` (the fakes record legacy notifications whatever the format).

Protocol: that of ``harness_protocol.py`` (Nova 21's ``boot_servers.py`` speaks it too). After
``ready`` every command gets one reply: ``{"event": "done", "command", "server", "seconds",
"notifications": [{"event_type", "priority", "publisher_id", "topic"}, ...]}`` once the API
shows the command's outcome and Nova published the command's last notification (the list is
every notification published meanwhile), or ``{"event": "error", "command", "message"}``.

Commands (``<id>`` is a server uuid; JSON arguments):

* ``boot {"name", "v4", "v6"?, "metadata"?}`` - a port with these fixed IPs (IPv4, and IPv6
  for dual stack), then a server on it. The reply fails if the server has no address.
* ``rename <id> {"name", "hostname"?}`` (hostname defaults to the name).
* ``resize <id> <flavor id>``, ``confirm <id>``, ``rebuild <id> <image id>|other``.
* ``attach <id> {"v4"}`` (a new port) -> ``port_id`` in the reply; ``detach <id> <port id>``.
* ``shelve <id>`` (stays SHELVED: ``shelved_offload_time = -1``), ``shelve_offload <id>``,
  ``unshelve <id>``, ``delete <id>``, ``show <id>``, ``ping``, ``quit``.
* ``notify_on_state_change vm_state|vm_and_task_state|unset`` - change that setting from now.

``server`` is ``{"id", "name", "hostname", "host", "status", "vm_state", "task_state",
"addresses": {label: [{"addr", "version", "mac"}]}, "flavor", "image"}``.
"""

import time

T0 = time.monotonic()

import os  # noqa: E402
import sys  # noqa: E402

from harness_protocol import (CommandError, emit, guarded, importing_nova,  # noqa: E402
                              log_to_file, restore_caller_environment, serve, stdin_lines,
                              wait)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport-url", required=True,
                        help="oslo.messaging URL of the RabbitMQ the notifications go to")
    parser.add_argument("--format", choices=("versioned", "unversioned", "both"),
                        default="unversioned", help="[notifications] notification_format")
    parser.add_argument("--notify-on-state-change", default="",
                        choices=("", "vm_state", "vm_and_task_state"),
                        help="[notifications] notify_on_state_change (empty: Nova's default)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for one command (default 60)")
    parser.add_argument("--log", default=None, help="write Nova's log records to this file")
    return parser.parse_args(argv)


ARGS = parse_args()

with importing_nova():
    # The harness must be the first Nova module imported: with nova.tests.fixtures first,
    # servers boot with an empty network info cache (no addresses anywhere, no error).
    from nova.tests.functional import integrated_helpers  # noqa: E402
    import eventlet.patcher  # noqa: E402
    import fixtures  # noqa: E402
    import oslo_messaging  # noqa: E402
    import pbr.version  # noqa: E402

    import nova.conf  # noqa: E402
    from nova import rpc  # noqa: E402
    from nova.tests import fixtures as nova_fixtures  # noqa: E402
    from nova.tests.fixtures import notifications as fake_notifications  # noqa: E402
    from nova.tests.functional.api import client as api_client  # noqa: E402

T_IMPORTED = time.monotonic()
CONF = nova.conf.CONF
TOPICS = {"versioned": "versioned_notifications", "legacy": "notifications"}

#: command -> (API status it ends in, last versioned notification, last legacy one).
#: None: Nova sends no such notification (then the API state and a quiet tee decide).
ENDS = {
    "boot": ("ACTIVE", "instance.create.end", "compute.instance.create.end"),
    "rename": (None, "instance.update", "compute.instance.update"),
    "resize": ("VERIFY_RESIZE", "instance.resize_finish.end",
               "compute.instance.finish_resize.end"),
    "confirm": ("ACTIVE", "instance.resize_confirm.end", "compute.instance.resize.confirm.end"),
    "rebuild": ("ACTIVE", "instance.rebuild.end", "compute.instance.rebuild.end"),
    "attach": (None, "instance.interface_attach.end", None),
    "detach": (None, "instance.interface_detach.end", None),
    "shelve": ("SHELVED", "instance.shelve.end", "compute.instance.shelve.end"),
    "shelve_offload": ("SHELVED_OFFLOADED", "instance.shelve_offload.end",
                       "compute.instance.shelve_offload.end"),
    "unshelve": ("ACTIVE", "instance.unshelve.end", "compute.instance.unshelve.end"),
    "delete": (None, "instance.delete.end", "compute.instance.delete.end"),
}


class Tee(object):
    """Nova's notifications, as the fake notifiers capture them, onto a real RabbitMQ."""

    def __init__(self, notification_format):
        self.transport = None
        self.notifiers = {}
        # What nova.rpc.init enables: the other notifier gets the noop driver there.
        self.enabled = {"versioned": notification_format in ("versioned", "both"),
                        "legacy": notification_format in ("unversioned", "both")}
        self.published = []
        self.lock = threading.Lock()

    def open(self, url):
        """Once the harness configured oslo.messaging: the exchange is the transport's
        ``control_exchange``, which Nova's configuration sets to ``nova``."""
        if CONF.control_exchange != "nova":
            raise RuntimeError("control_exchange is %r, not nova" % CONF.control_exchange)
        self.transport = oslo_messaging.get_notification_transport(CONF, url=url)
        serializer = rpc.RequestContextSerializer(rpc.JsonPayloadSerializer())
        self.notifiers = {
            kind: oslo_messaging.Notifier(self.transport, driver="messagingv2",
                                          topics=[topic], serializer=serializer, retry=10)
            for kind, topic in TOPICS.items()}

    def publish(self, kind, publisher_id, priority, ctxt, event_type, payload):
        if not self.enabled[kind] or self.transport is None:
            return
        notifier = self.notifiers[kind].prepare(publisher_id=publisher_id)
        getattr(notifier, priority.lower())(ctxt, event_type, payload)
        with self.lock:
            self.published.append({"event_type": event_type, "priority": priority,
                                   "publisher_id": publisher_id, "topic": TOPICS[kind],
                                   "at": time.monotonic()})

    def since(self, mark):
        with self.lock:
            return list(self.published[mark:])

    def mark(self):
        with self.lock:
            return len(self.published)

    def close(self):
        if self.transport is not None:
            self.transport.cleanup()


def _teed(original, kind, tee):
    """A fake notifier's ``_notify`` that also publishes what it captured."""
    def _notify(fake, priority, ctxt, event_type, payload):
        original(fake, priority, ctxt, event_type, payload)
        tee.publish(kind, fake.publisher_id, priority, ctxt, event_type, payload)
    return _notify


def _random_mac():
    return "fa:16:3e:%02x:%02x:%02x" % tuple(random.randint(0, 255) for _ in range(3))


class Nova34(integrated_helpers._IntegratedTestBase):
    """One long 'test' that serves the protocol while Nova's services run."""

    api_major_version = "v2.1"
    microversion = "latest"
    CAST_AS_CALL = False        # casts stay casts: notifications come in a deployment's order

    def setUp(self):
        self.tee = Tee(ARGS.format)
        self.addCleanup(self.tee.close)
        # Before the fakes exist: each binds its _notify when it is built (prepare() too).
        self.useFixture(fixtures.MonkeyPatch(
            "nova.tests.fixtures.notifications.FakeNotifier._notify",
            _teed(fake_notifications.FakeNotifier._notify, "legacy", self.tee)))
        self.useFixture(fixtures.MonkeyPatch(
            "nova.tests.fixtures.notifications.FakeVersionedNotifier._notify",
            _teed(fake_notifications.FakeVersionedNotifier._notify, "versioned", self.tee)))
        super().setUp()
        restore_caller_environment(self, fixtures)
        self._subnets_in_the_stacks_prefixes()
        self.ports = {}
        if ARGS.log:
            log_to_file(self, ARGS.log)

    def _setup_services(self):
        self.flags(notification_format=ARGS.format,
                   notify_on_state_change=ARGS.notify_on_state_change or None,
                   group="notifications")
        self.flags(shelved_offload_time=-1)   # shelve and shelve_offload are two steps
        self.tee.open(ARGS.transport_url)
        super()._setup_services()

    def _setup_compute_service(self):
        first = self._start_compute("compute")
        self._start_compute("compute2")       # a resize moves the server to the other host
        return first

    def _subnets_in_the_stacks_prefixes(self):
        """The fixture's subnets (192.168.1.0/24, fd37:44e8:ad06::/64) become the test stack's
        prefixes, so the addresses a test asks for lie in the subnets Nova reports."""
        fixture = nova_fixtures.NeutronFixture
        for subnet, cidr, gateway in ((fixture.subnet_1, "10.20.0.0/16", "10.20.0.1"),
                                      (fixture.subnet_ipv6_1, "2001:db8:20::/64",
                                       "2001:db8:20::1")):
            mine = copy.deepcopy(subnet)
            mine.update(cidr=cidr, gateway_ip=gateway, allocation_pools=[])
            self.neutron._subnets[mine["id"]] = mine

    # -- the servers --------------------------------------------------------------------------

    def _port(self, v4, v6=None):
        """A Neutron port with these fixed IPs and a MAC of its own (the fixture's template
        port gives every port 192.168.1.30)."""
        fixture = nova_fixtures.NeutronFixture
        port = self.neutron.create_port({"port": {"network_id": fixture.network_1["id"]}})
        port_id = port["port"]["id"]
        fixed = [{"ip_address": v4, "subnet_id": fixture.subnet_1["id"]}]
        if v6:
            fixed.append({"ip_address": v6, "subnet_id": fixture.subnet_ipv6_1["id"]})
        self.neutron._ports[port_id].update(fixed_ips=fixed, mac_address=_random_mac())
        return port_id

    def _describe(self, server_id):
        server = self.admin_api.get_server(server_id)
        addresses = {label: [{"addr": a["addr"], "version": a["version"],
                              "mac": a.get("OS-EXT-IPS-MAC:mac_addr")} for a in entries]
                     for label, entries in server.get("addresses", {}).items()}
        return {
            "id": server["id"],
            "name": server["name"],
            "hostname": server.get("OS-EXT-SRV-ATTR:hostname"),
            "host": server.get("OS-EXT-SRV-ATTR:host"),
            "status": server["status"],
            "vm_state": server.get("OS-EXT-STS:vm_state"),
            "task_state": server.get("OS-EXT-STS:task_state"),
            "addresses": addresses,
            "flavor": server.get("flavor", {}),
            "image": (server.get("image") or {}).get("id"),
        }

    def _status(self, server_id):
        try:
            return self.admin_api.get_server(server_id)
        except api_client.OpenStackApiNotFoundException:
            return None

    def _finish(self, verb, server_id, mark, started, settled=None):
        """Wait until the API shows the outcome and Nova published the command's last
        notification, then until the tee is quiet; the reply."""
        status, versioned, legacy = ENDS[verb]
        last = versioned if self.tee.enabled["versioned"] else legacy
        if verb == "rename" and not ARGS.notify_on_state_change:
            last = None                          # Nova's default: a rename sends nothing

        def outcome():
            server = self._status(server_id)
            if verb == "delete":
                api_done = server is None
            else:
                if server is not None and server["status"] == "ERROR":
                    raise CommandError("%s: server %s went to ERROR: %s" % (
                        verb, server_id, server.get("fault")), self._describe(server_id))
                api_done = (server is not None and server.get("OS-EXT-STS:task_state") is None
                            and (status is None or server["status"] == status)
                            and (settled is None or settled(server)))
            published = last is None or any(
                n["event_type"] == last for n in self.tee.since(mark))
            return api_done and published

        wait(outcome, ARGS.timeout, "%s of %s" % (verb, server_id))

        def quiet():
            notes = self.tee.since(mark)
            return not notes or time.monotonic() - notes[-1]["at"] > 0.5
        wait(quiet, ARGS.timeout, "Nova's notifications of %s to stop" % verb)
        notes = [{k: v for k, v in n.items() if k != "at"} for n in self.tee.since(mark)]
        server = None if verb == "delete" else self._describe(server_id)
        return {"command": verb, "server": server, "notifications": notes,
                "seconds": round(time.monotonic() - started, 3)}

    def boot(self, spec):
        if not spec.get("name") or not spec.get("v4"):
            raise CommandError("boot needs a name and a v4 address: %r" % (spec,))
        mark, started = self.tee.mark(), time.monotonic()
        port_id = self._port(spec["v4"], spec.get("v6"))
        body = self._build_server(name=spec["name"], networks=[{"port": port_id}])
        if spec.get("metadata"):
            body["metadata"] = spec["metadata"]
        server_id = self.api.post_server({"server": body})["id"]
        self.ports[port_id] = server_id
        reply = self._finish("boot", server_id, mark, started)
        wanted = sorted(a for a in (spec["v4"], spec.get("v6")) if a)
        got = sorted(a["addr"] for entries in reply["server"]["addresses"].values()
                     for a in entries)
        if got != wanted:
            raise CommandError("server %s has addresses %s, not %s (Nova's harness imported "
                               "in the wrong order?)" % (spec["name"], got, wanted),
                               reply["server"])
        reply["port_id"] = port_id
        return reply

    def rename(self, server_id, spec):
        mark, started = self.tee.mark(), time.monotonic()
        self.api.put_server(server_id, {"server": {
            "name": spec["name"], "hostname": spec.get("hostname", spec["name"])}})
        return self._finish("rename", server_id, mark, started,
                            lambda server: server["name"] == spec["name"])

    def action(self, verb, server_id, body, settled=None):
        mark, started = self.tee.mark(), time.monotonic()
        self.admin_api.post_server_action(server_id, body)   # shelve_offload is admin's
        return self._finish(verb, server_id, mark, started, settled)

    def attach(self, server_id, spec):
        mark, started = self.tee.mark(), time.monotonic()
        port_id = self._port(spec["v4"])
        self.api.attach_interface(server_id, {"interfaceAttachment": {"port_id": port_id}})
        reply = self._finish("attach", server_id, mark, started,
                             lambda server: _has_address(server, spec["v4"]))
        reply["port_id"] = port_id
        return reply

    def detach(self, server_id, port_id):
        mark, started = self.tee.mark(), time.monotonic()
        fixed = [ip["ip_address"] for ip in self.neutron._ports[port_id]["fixed_ips"]]
        self.api.detach_interface(server_id, port_id)
        return self._finish("detach", server_id, mark, started,
                            lambda server: not any(_has_address(server, a) for a in fixed))

    def delete(self, server_id):
        mark, started = self.tee.mark(), time.monotonic()
        self.api.delete_server(server_id)
        return self._finish("delete", server_id, mark, started)

    def run_command(self, line):
        verb, _, rest = line.strip().partition(" ")
        server_id, _, arg = rest.strip().partition(" ")
        arg = arg.strip()
        if verb == "boot":
            return self.boot(json.loads(rest))
        if verb == "rename":
            return self.rename(server_id, json.loads(arg))
        if verb == "resize":
            return self.action("resize", server_id, {"resize": {"flavorRef": arg}})
        if verb == "confirm":
            return self.action("confirm", server_id, {"confirmResize": None})
        if verb == "rebuild":
            image = (nova_fixtures.GlanceFixture.image2["id"] if arg == "other" else arg)
            return self.action("rebuild", server_id, {"rebuild": {"imageRef": image}},
                               lambda server: server["image"]["id"] == image)
        if verb == "attach":
            return self.attach(server_id, json.loads(arg))
        if verb == "detach":
            return self.detach(server_id, arg)
        if verb == "shelve":
            return self.action("shelve", server_id, {"shelve": None})
        if verb == "shelve_offload":
            return self.action("shelve_offload", server_id, {"shelveOffload": None},
                               lambda server: server.get("OS-EXT-SRV-ATTR:host") is None)
        if verb == "unshelve":
            return self.action("unshelve", server_id, {"unshelve": None})
        if verb == "delete":
            return self.delete(server_id)
        if verb == "notify_on_state_change":
            # Nova reads it at each notification: one harness serves both settings.
            ARGS.notify_on_state_change = "" if server_id == "unset" else server_id
            self.flags(notify_on_state_change=ARGS.notify_on_state_change or None,
                       group="notifications")
            return {"command": verb, "server": None, "notifications": [], "seconds": 0,
                    "notify_on_state_change": ARGS.notify_on_state_change or None}
        if verb == "show":
            return {"command": "show", "server": self._describe(server_id),
                    "notifications": [], "seconds": 0}
        raise CommandError("unknown command %r" % line.strip())

    def test_serve(self):
        emit("ready", pid=os.getpid(), nova=pbr.version.VersionInfo("nova").version_string(),
             python=platform.python_version(), format=ARGS.format,
             notify_on_state_change=ARGS.notify_on_state_change or None,
             cast_as_call=self.CAST_AS_CALL, control_exchange=CONF.control_exchange,
             monkey_patched=eventlet.patcher.is_monkey_patched("socket"),
             computes=sorted(self.computes), startup_seconds=round(time.monotonic() - T0, 3),
             import_seconds=round(T_IMPORTED - T0, 3))
        for line in stdin_lines():
            line = line.strip()
            if not line:
                continue
            if line == "quit":
                break
            if line == "ping":
                emit("pong")
                continue
            reply = guarded(line, self.run_command, line)
            if reply is not None:
                emit("done", **reply)
        emit("bye")


def _has_address(server, address):
    return any(a["addr"] == address for entries in server.get("addresses", {}).values()
               for a in entries)


if __name__ == "__main__":
    sys.exit(serve(Nova34("test_serve")))
