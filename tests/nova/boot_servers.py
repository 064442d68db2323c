"""Boot and delete servers through real Nova 21.2.4, in-process, so Nova fires its hooks.

Run with the Python 3.8 interpreter of the venv that ``tests/nova/venv.py`` builds::

    <venv>/bin/python tests/nova/boot_servers.py --servers '[{"name": "web-1",
        "metadata": {"os_type": "linux"}}, {"name": "win-1", "metadata": {"os_type": "windows"}}]'

Nova's own functional-test harness (``nova.tests.functional.integrated_helpers.
_IntegratedTestBase``: nova-api over wsgi-intercept, conductor, scheduler, one compute service
``compute`` with the fake virt driver, placement, SQLite and the Neutron fixture) runs in this
process, under eventlet monkey-patching like the real services. Whatever ``nova.hooks``
entry points are installed in the venv are loaded by Nova itself and run in this process, so
environment variables set by the caller (e.g. ``NOVAHOOKS_CONFIG``) reach the hooks.

Protocol
========
(The helpers are in ``harness_protocol.py``, shared with Nova 34's ``nova34_servers.py``.)
stdout carries only protocol lines: one JSON object per line, each with an ``"event"`` key.
Anything else (stray prints, unittest output) goes to stderr. stdin carries one command per
line. After the ``ready`` event, every command gets exactly one reply line, in order.

Events (stdout):

* ``{"event": "ready", "pid", "nova", "python", "monkey_patched": {module: bool},
  "startup_seconds", "import_seconds", "setup_seconds", "servers": N, "env_restored": [...]}``
  - once, when all services run. Nothing else comes first, except ``fatal``.
* ``{"event": "active", "server": {...}, "seconds"}`` - reply to ``next``/``boot``: the server
  is ACTIVE *and* the compute manager's build (with the ``build_instance`` post-hooks) has
  returned. ``server`` = ``{"id", "name", "hostname", "host", "instance_name", "status",
  "addresses", "metadata", "build_result"}``; ``addresses`` is the API's
  ``{"<network label>": [{"addr", "version", "OS-EXT-IPS:type", "OS-EXT-IPS-MAC:mac_addr"}]}``;
  ``build_result`` is what ``_do_build_and_run_instance`` returned (``"active"``).
* ``{"event": "deleted", "id", "seconds"}`` - reply to ``delete <id>``: the API answers 404
  *and* ``ComputeManager._delete_instance`` (with the ``delete_instance`` post-hooks) returned.
* ``{"event": "exhausted"}`` - reply to ``next`` when every ``--servers`` entry was booted.
* ``{"event": "reset"}`` - reply to ``reset`` (``nova.hooks.reset()``: hooks reload on next use).
* ``{"event": "pong"}`` - reply to ``ping``.
* ``{"event": "error", "command", "message", "server"?}`` - a command failed (build went to
  ERROR, timeout, unknown command, ...); the process goes on reading commands.
* ``{"event": "bye"}`` - reply to ``quit`` or end of stdin; then the harness is torn down
  (servers still alive are NOT deleted, so no ``delete_instance`` hooks run for them) and the
  process exits 0.
* ``{"event": "fatal", "message"}`` - the harness could not start (or crashed); exit code 2.

Commands (stdin):

* ``next`` - boot the next server of ``--servers``.
* ``boot <json>`` - boot this server spec (same shape as one ``--servers`` entry).
* ``delete <id>`` - delete a server and wait as above.
* ``reset``, ``ping``, ``quit``.

A server spec is a JSON object: ``name`` (display name; Nova derives the hostname from it),
optional ``metadata`` (dict of strings), optional ``fixed_ip`` (ask the Neutron fixture for
this IPv4 address in 192.168.1.0/24 instead of its default 192.168.1.30, which every server
gets otherwise), optional ``networks`` (default ``"auto"``); any other key is copied into the
API's server body as is (e.g. ``"description"``, ``"flavorRef"``).

With ``--auto`` no stdin is read: each ``--servers`` entry is booted and deleted in turn
(``active``, ``deleted``, ``active``, ...), then ``bye``.

The script is run by Python 3.8: keep it compatible.
"""

import time

T0 = time.monotonic()

import os  # noqa: E402
import sys  # noqa: E402

from harness_protocol import (CommandError, emit, guarded, importing_nova,  # noqa: E402
                              log_to_file, restore_caller_environment, serve, stdin_lines,
                              wait)

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="[]",
                        help="JSON list of server specs, booted one per 'next' command")
    parser.add_argument("--auto", action="store_true",
                        help="boot and delete every server in turn without reading stdin")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for one boot or delete (default 60)")
    parser.add_argument("--log", default=None,
                        help="also write every log record (DEBUG and up) to this file")
    args = parser.parse_args(argv)
    servers = json.loads(args.servers)
    if not isinstance(servers, list) or not all(isinstance(s, dict) for s in servers):
        parser.error("--servers must be a JSON list of objects")
    args.servers = servers
    return args


ARGS = parse_args()

with importing_nova():
    # Importing Nova's test packages runs nova.monkey_patch (eventlet.monkey_patch()) first,
    # exactly as nova/cmd/__init__.py does for the real services.
    import nova.tests.functional  # noqa: F401,E402  (monkey patches)
    import eventlet  # noqa: E402
    import eventlet.patcher  # noqa: E402
    import fixtures  # noqa: E402

    import nova  # noqa: E402
    import nova.hooks  # noqa: E402
    from nova.compute import manager as compute_manager  # noqa: E402
    from nova.tests.functional.api import client as api_client  # noqa: E402
    from nova.tests.functional import integrated_helpers  # noqa: E402
    from nova.tests import fixtures as nova_fixtures  # noqa: E402
    import pbr.version  # noqa: E402

T_IMPORTED = time.monotonic()
MONKEY_MODULES = ("os", "select", "socket", "thread", "time", "subprocess", "builtins")


def _instance_uuid(args, kwargs):
    """The instance argument of ComputeManager._do_build_and_run_instance/_delete_instance."""
    instance = kwargs.get("instance", args[2] if len(args) > 2 else None)
    return getattr(instance, "uuid", None)


def _track(func, finished):
    """Wrap an (already hook-decorated) compute manager method: note when it has returned."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        uuid = _instance_uuid(args, kwargs)
        result = {"rv": None, "error": None}
        try:
            result["rv"] = func(*args, **kwargs)
            return result["rv"]
        except BaseException as exc:
            result["error"] = "%s: %s" % (type(exc).__name__, exc)
            raise
        finally:
            finished[uuid] = result
    return wrapper


class BootServers(integrated_helpers._IntegratedTestBase):
    """One long 'test' that serves the protocol while Nova's services run."""

    api_major_version = "v2.1"
    microversion = "latest"

    def setUp(self):
        self.built = {}      # instance uuid -> {"rv", "error"} once the build has returned
        self.deleted = {}    # instance uuid -> {"rv", "error"} once _delete_instance returned
        self.useFixture(fixtures.MonkeyPatch(
            "nova.compute.manager.ComputeManager._do_build_and_run_instance",
            _track(compute_manager.ComputeManager._do_build_and_run_instance, self.built)))
        self.useFixture(fixtures.MonkeyPatch(
            "nova.compute.manager.ComputeManager._delete_instance",
            _track(compute_manager.ComputeManager._delete_instance, self.deleted)))
        nova.hooks.reset()
        self.addCleanup(nova.hooks.reset)
        super(BootServers, self).setUp()
        self.env_restored = restore_caller_environment(self, fixtures)
        self._honour_fixed_ips()
        if ARGS.log:
            log_to_file(self, ARGS.log)

    def _honour_fixed_ips(self):
        """Let a server ask for its own fixed IP, as real Neutron allows.

        The fixture copies its template port (192.168.1.30) over whatever Nova asked for.
        """
        neutron = self.neutron
        original = neutron.create_port
        subnet_id = nova_fixtures.NeutronFixture.subnet_1["id"]

        def create_port(body=None):
            result = original(body)
            wanted = [ip.get("ip_address") for ip in
                      ((body or {}).get("port", {}).get("fixed_ips") or [])
                      if ip.get("ip_address")]
            if wanted:
                fixed = [{"ip_address": ip, "subnet_id": subnet_id} for ip in wanted]
                port_id = result["port"]["id"]
                neutron._ports[port_id]["fixed_ips"] = fixed
                result["port"]["fixed_ips"] = [dict(ip) for ip in fixed]
            return result

        self.useFixture(fixtures.MockPatchObject(neutron, "create_port", create_port))

    # -- commands -----------------------------------------------------------------------------

    def _describe(self, server_id):
        server = self.admin_api.get_server(server_id)
        return {
            "id": server["id"],
            "name": server["name"],
            "hostname": server.get("OS-EXT-SRV-ATTR:hostname"),
            "host": server.get("OS-EXT-SRV-ATTR:host"),
            "instance_name": server.get("OS-EXT-SRV-ATTR:instance_name"),
            "status": server["status"],
            "addresses": server.get("addresses", {}),
            "metadata": server.get("metadata", {}),
            "fault": server.get("fault"),
        }

    def boot(self, spec):
        if not isinstance(spec, dict) or not spec.get("name"):
            raise CommandError("a server spec needs a name: %r" % (spec,))
        spec = dict(spec)
        name = spec.pop("name")
        fixed_ip = spec.pop("fixed_ip", None)
        networks = spec.pop("networks", "auto")
        if fixed_ip:
            networks = [{"uuid": nova_fixtures.NeutronFixture.network_1["id"],
                         "fixed_ip": fixed_ip}]
        body = self._build_server(name=name, networks=networks)
        body.update(spec)
        started = time.monotonic()
        created = self.api.post_server({"server": body})
        server_id = created["id"]

        def built():
            if server_id not in self.built:
                return None
            if self.built[server_id]["error"]:      # raised out of the compute manager
                return "BUILD RAISED"
            status = self.api.get_server(server_id)["status"]
            return status if status in ("ACTIVE", "ERROR") else None

        status = wait(built, ARGS.timeout, "server %s to build" % name)
        server = self._describe(server_id)
        server["build_result"] = self.built[server_id]["rv"]
        if status != "ACTIVE" or self.built[server_id]["error"]:
            raise CommandError("server %s did not become ACTIVE (status %s, build %r)"
                               % (name, status, self.built[server_id]), server)
        server.pop("fault", None)
        return {"server": server, "seconds": round(time.monotonic() - started, 3)}

    def delete(self, server_id):
        started = time.monotonic()
        try:
            self.api.delete_server(server_id)
        except api_client.OpenStackApiNotFoundException:
            raise CommandError("no server %s" % server_id) from None

        def gone():
            if server_id not in self.deleted:
                return False
            if self.deleted[server_id]["error"]:    # raised: the API may never answer 404
                return True
            try:
                self.api.get_server(server_id)
            except api_client.OpenStackApiNotFoundException:
                return True
            return False

        wait(gone, ARGS.timeout, "server %s to be deleted" % server_id)
        if self.deleted[server_id]["error"]:
            raise CommandError("deleting %s failed: %s" % (server_id, self.deleted[server_id]))
        return {"id": server_id, "seconds": round(time.monotonic() - started, 3)}

    def run_command(self, line, pending):
        verb, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if verb == "next":
            if not pending:
                emit("exhausted")
                return True
            emit("active", **self.boot(pending.pop(0)))
        elif verb == "boot":
            emit("active", **self.boot(json.loads(rest)))
        elif verb == "delete":
            emit("deleted", **self.delete(rest))
        elif verb == "reset":
            nova.hooks.reset()
            emit("reset")
        elif verb == "ping":
            emit("pong")
        elif verb == "quit":
            return False
        else:
            raise CommandError("unknown command %r" % line.strip())
        return True

    def test_serve(self):
        emit("ready", pid=os.getpid(), nova=pbr.version.VersionInfo("nova").version_string(),
             python=platform.python_version(),
             monkey_patched={m: eventlet.patcher.is_monkey_patched(m) for m in MONKEY_MODULES},
             startup_seconds=round(time.monotonic() - T0, 3),
             import_seconds=round(T_IMPORTED - T0, 3),
             setup_seconds=round(time.monotonic() - T_IMPORTED, 3),
             servers=len(ARGS.servers), env_restored=self.env_restored)
        pending = list(ARGS.servers)
        if ARGS.auto:
            for spec in pending:
                booted = guarded("boot %s" % json.dumps(spec), self.boot, spec)
                if booted:
                    emit("active", **booted)
                    deleted = guarded("delete %s" % booted["server"]["id"], self.delete,
                                            booted["server"]["id"])
                    if deleted:
                        emit("deleted", **deleted)
        else:
            for line in stdin_lines():
                if line.strip() and guarded(line, self.run_command, line, pending) is False:
                    break                                       # "quit"
        emit("bye")


if __name__ == "__main__":
    sys.exit(serve(BootServers("test_serve")))
