"""Prometheus metrics scraped from the real relay and worker processes after a run."""

import urllib.request
from typing import Dict, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, with_uuid
from tests.conftest import mac, unique_v4
from tests.helpers import audit_lines, until

Sample = Tuple[str, Tuple[Tuple[str, str], ...]]


pytestmark = pytest.mark.usefixtures("hook_outbox")


def scrape(port: int) -> Dict[Sample, float]:
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_and_relay_metrics_count_what_ran(stack: Stack, processes: Processes) -> None:
    ports = processes.metrics_ports
    until(lambda: all(_answers(p) for p in list(ports.values()) + [processes.relay_metrics_port]),
          30, "metrics endpoints")
    before = {queue: scrape(port) for queue, port in ports.items()}
    relay_before = scrape(processes.relay_metrics_port)
    vms = [with_uuid(Vm("metrics-%d" % i, ((unique_v4(), mac()),))) for i in range(3)]
    for vm in vms:
        create(vm)
    for vm in vms:
        until(lambda vm=vm: any(r["kind"] == "build" and r["stage"] == "done"
                                for r in audit_lines(stack.audit_path, vm.uuid)), 120, vm.hostname)
    after = {queue: scrape(port) for queue, port in ports.items()}
    relay_after = scrape(processes.relay_metrics_port)

    def delta(queue: str, step: str, outcome: str = "ok") -> float:
        name = "novahooks_step_total"
        return value(after[queue], name, step=step, outcome=outcome) - \
            value(before[queue], name, step=step, outcome=outcome)

    assert delta("ipam", "ipam.reserve") == 3
    assert delta("dns", "dns.register") == 3
    assert delta("ldap", "ldap.register") == 6, "create chain and build chain"
    assert delta("inventory", "inventory.register") == 6
    assert delta("audit", "audit.record") == 6
    latency = "novahooks_step_duration_seconds_count"
    assert value(after["dns"], latency, step="dns.register") - \
        value(before["dns"], latency, step="dns.register") == 3
    for kind in ("create", "build"):
        assert value(relay_after, "novahooks_relay_events_total", kind=kind) - \
            value(relay_before, "novahooks_relay_events_total", kind=kind) == 3
    assert value(relay_after, "novahooks_relay_publish_seconds_count") - \
        value(relay_before, "novahooks_relay_publish_seconds_count") == 6
    until(lambda: value(scrape(processes.relay_metrics_port), "novahooks_outbox_depth") == 0,
          10, "outbox drained")


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False
