"""bench/multihost/hosts.py, the hosts the multi-host benches run on, brought up and down
by the same code: names and addresses per host, RabbitMQ reached across hosts through the
svc host, and the faults the benches apply (a pulled cable, a stopped service) seen from
a host as a client sees them. The bursts themselves are bench/multihost/faults.py's."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from bench.multihost.hosts import HOSTS, Hosts, Router, address, fqdn
from tests.servers.rabbitmq import RabbitVhost, private_vhost

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

ROOT = Path(__file__).resolve().parent.parent.parent

#: from a host: publish one message to the svc host's RabbitMQ, read it back
ROUND_TRIP = r"""
import sys, kombu
with kombu.Connection(sys.argv[1], connect_timeout=3) as conn:
    conn.ensure_connection(max_retries=1)
    queue = conn.SimpleQueue("nh-probe-" + sys.argv[2])
    queue.put({"from": sys.argv[2]})
    message = queue.get(timeout=5)
    message.ack()
    print(message.payload["from"])
"""


@pytest.fixture(scope="module")
def deployed() -> Iterator[Tuple[Hosts, Router, RabbitVhost]]:
    hosts = Hosts().up()
    router = Router("svc")
    router.start()
    vhost = private_vhost("novahooks-netns")
    try:
        router.add("rabbitmq", 5672, 5672)
        yield hosts, router, vhost
    finally:
        router.stop()
        vhost.stop()
        hosts.down()


def round_trip(hosts: Hosts, vhost: RabbitVhost, host: str) -> subprocess.CompletedProcess:
    url = "amqp://guest:guest@%s:5672/%s" % (fqdn("svc"), vhost.url.rsplit("/", 1)[1])
    return subprocess.run(hosts.argv(host, [sys.executable, "-c", ROUND_TRIP, url, host]),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60, cwd=str(ROOT))


def test_every_host_has_its_name_and_address_and_reaches_the_broker_host(
        deployed: Tuple[Hosts, Router, RabbitVhost]) -> None:
    hosts, _, vhost = deployed
    for host in HOSTS:
        names = subprocess.run(hosts.argv(host, ["getent", "hosts", fqdn("svc"), fqdn(host)]),
                               stdout=subprocess.PIPE, universal_newlines=True).stdout
        assert names.split() == [address("svc"), fqdn("svc"), "svc",
                                 address(host), fqdn(host), host], names
        shown = subprocess.run(hosts.argv(host, ["ip", "-4", "-o", "addr", "show", "eth0"]),
                               stdout=subprocess.PIPE, universal_newlines=True).stdout
        assert address(host) + "/24" in shown
    done = round_trip(hosts, vhost, "worker1")
    assert (done.returncode, done.stdout.strip()) == (0, "worker1"), done.stderr


def test_a_pulled_cable_cuts_one_host_and_mending_it_restores_it(
        deployed: Tuple[Hosts, Router, RabbitVhost]) -> None:
    hosts, _, vhost = deployed
    hosts.link("worker1", up=False)
    try:
        cut = round_trip(hosts, vhost, "worker1")
        other = round_trip(hosts, vhost, "worker2")
    finally:
        hosts.link("worker1", up=True)
    assert cut.returncode != 0 and "worker1" not in cut.stdout
    assert other.returncode == 0 and other.stdout.strip() == "worker2", other.stderr
    again = round_trip(hosts, vhost, "worker1")
    assert again.returncode == 0 and again.stdout.strip() == "worker1", again.stderr


def test_a_blocked_service_refuses_every_host_until_unblocked(
        deployed: Tuple[Hosts, Router, RabbitVhost]) -> None:
    hosts, router, vhost = deployed
    router.block("rabbitmq")
    try:
        refused = round_trip(hosts, vhost, "compute1")
    finally:
        router.unblock("rabbitmq")
    assert refused.returncode != 0 and "refused" in refused.stderr.lower(), refused.stderr
    back = round_trip(hosts, vhost, "compute1")
    assert back.returncode == 0 and back.stdout.strip() == "compute1", back.stderr


def test_down_removes_every_namespace_and_its_names(
        deployed: Tuple[Hosts, Router, RabbitVhost]) -> None:
    """Last in this module: what a crashed run leaves, ``down`` removes."""
    hosts, _, _ = deployed
    hosts.down()
    try:
        listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                                universal_newlines=True).stdout
        assert [line for line in listed.splitlines() if line.startswith("nh-")] == [], listed
        assert list(Path("/etc/netns").glob("nh-*")) == []
    finally:
        hosts.up()  # as the module's fixture left it, for its own teardown
