"""Real Nova 34's metadata API asking ``novahooks vendordata``, read as a guest reads it.

Run with the Python 3.12 interpreter of the venv tests/nova/venv.py builds (NOVA_34)::

    <venv>/bin/python nova34_metadata.py --target https://127.0.0.1:P/ --ca-file CA \
        --username nova --password-file F --servers '[{"name": "w1", "metadata": {...}}]'

Nova's functional harness (API, conductor, scheduler, a compute on the fake virt
driver, Placement; Glance and Neutron fixtures) boots each server; Nova's own
metadata WSGI app (``nova_fixtures.OSMetadataServer``, the app nova-api-metadata
serves) then answers ``GET openstack/latest/vendor_data2.json`` for it with
``[api] vendordata_providers = StaticJSON, DynamicJSON`` pointed at the target,
``vendordata_dynamic_ssl_certfile`` = the CA and ``[vendordata_dynamic_auth]
auth_type = http_basic``: Nova's own DynamicJSON code and keystoneauth session
make the HTTPS call. ``[api] metadata_cache_expiration = 0`` so every read asks
again, as reads outside Nova's cache do.

A read answered ``retry`` (the service's over_budget on a loaded machine) is read
again a second later, as the guest's recipe does, until ``--reads`` answers have
come. Each read prints one line ``{"event": "read", "server", "name", "hostname",
"status", "vendor_data2"}``; the end ``{"event": "done"}`` or ``{"event": "error"}``.
"""

import argparse
import json
import logging
import sys
import time
import unittest


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--servers", required=True, help="JSON list of {name, metadata}")
    parser.add_argument("--reads", type=int, default=2)
    return parser.parse_args(argv)


ARGS = parse_args()


def emit(event, **fields):
    fields["event"] = event
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


# The harness must be the first Nova module imported (see ../../nova/nova34_servers.py).
from nova.tests.functional import integrated_helpers  # noqa: E402
import fixtures  # noqa: E402
import requests  # noqa: E402
import urllib3.connection  # noqa: E402
import urllib3.connectionpool  # noqa: E402
from keystoneauth1 import loading as ks_loading  # noqa: E402

import nova.conf  # noqa: E402
from nova import test  # noqa: E402
from nova.tests import fixtures as nova_fixtures  # noqa: E402
from nova.tests.functional import fixtures as func_fixtures  # noqa: E402

CONF = nova.conf.CONF
AUTH_GROUP = "vendordata_dynamic_auth"


def real_https():
    """Give HTTPS back to urllib3 after the harness's wsgi-intercept took it.

    The harness serves its own APIs on intercepted http:// URLs; wsgi-intercept 1.13
    replaces urllib3's HTTPS connection class too, and its replacement fails for
    every real HTTPS host under urllib3 2 ("unexpected keyword argument
    'cert_reqs'"). Nothing of the harness is served over https://, so the real
    class goes back; Nova's DynamicJSON code and keystoneauth are untouched.
    """
    urllib3.connectionpool.HTTPSConnectionPool.ConnectionCls = \
        urllib3.connection.HTTPSConnection


class GuestReads(test.TestCase, integrated_helpers.InstanceHelperMixin):
    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.GlanceFixture(self))
        self.useFixture(nova_fixtures.NeutronFixture(self))
        self.useFixture(func_fixtures.PlacementFixture())
        self.start_service("conductor")
        self.start_service("scheduler")
        self.api = self.useFixture(nova_fixtures.OSAPIFixture(api_version="v2.1")).api
        self.start_service("compute")
        self.flags(vendordata_providers=["StaticJSON", "DynamicJSON"],
                   vendordata_dynamic_targets=["novahooks@" + ARGS.target],
                   vendordata_dynamic_ssl_certfile=ARGS.ca_file,
                   metadata_cache_expiration=0, group="api")
        # keystoneauth registers a plugin's own options (username, password) only when
        # it loads the plugin; register them first so they can be set like Nova's.
        plugin_opts = ks_loading.get_auth_plugin_conf_options("http_basic")
        CONF.register_opts(plugin_opts, group=AUTH_GROUP)
        with open(ARGS.password_file) as handle:
            password = handle.read().strip()
        self.flags(auth_type="http_basic", username=ARGS.username, password=password,
                   group=AUTH_GROUP)

    def test_reads(self):
        metadata_server = None
        for spec in json.loads(ARGS.servers):
            server = self._build_server(name=spec["name"])
            server["metadata"] = spec.get("metadata", {})
            server = self._wait_for_state_change(self.api.post_server({"server": server}),
                                                 "ACTIVE")
            uuid = server["id"]
            # The metadata API finds the instance by the guest's address; the harness's
            # Neutron gives every server the same one, so say which is asking.
            self.useFixture(fixtures.MonkeyPatch(
                "nova.network.neutron.API.get_fixed_ip_by_address",
                lambda _self, _ctxt, _address, uuid=uuid: {"instance_uuid": uuid}))
            if metadata_server is None:
                metadata_server = self.useFixture(nova_fixtures.OSMetadataServer())
            real_https()
            answered = 0
            for _ in range(ARGS.reads + 30):
                res = requests.get(metadata_server.md_url
                                   + "openstack/latest/vendor_data2.json", timeout=30)
                data = res.json() if res.status_code == 200 else res.text
                emit("read", server=uuid, name=spec["name"],
                     hostname=server.get("OS-EXT-SRV-ATTR:hostname"),
                     status=res.status_code, vendor_data2=data)
                error = data.get("novahooks", {}).get("error") if isinstance(data, dict) \
                    else None
                if not (error and error.get("retry")):
                    answered += 1
                    if answered == ARGS.reads:
                        break
                else:
                    time.sleep(1)  # as the guest's recipe: read again (Nova's cache is off)


class Relay(logging.Handler):
    """Nova's DynamicJSON warnings (it swallows the call's errors) as protocol lines."""

    def emit(self, record):
        emit("nova_log", level=record.levelname, message=record.getMessage())


def main():
    logging.getLogger("nova.api.metadata.vendordata_dynamic").addHandler(Relay(logging.INFO))
    suite = unittest.TestSuite([GuestReads("test_reads")])
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
    if result.wasSuccessful():
        emit("done")
        return 0
    emit("error", message="\n".join(text for _, text in result.errors + result.failures))
    return 1


if __name__ == "__main__":
    sys.exit(main())
