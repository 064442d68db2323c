"""1,000+ generated hostile events through the validation every step shares, no servers.

Each event goes where a register step's event goes before any backend call:
``event_from_dict``, ``tasks.validate.event`` (fields and ``[limits]``), the policy
decision (names), the directory drivers' prechecks (LDAP host entry and AD computer
name, reserved names) and the DNS contract's static preflight (reserved first labels).
Tenants choose names (Unicode that folds into ASCII, control characters, LDAP and DNS
specials, reserved names, 63/253 limits), addresses (every spelling, zone ids,
IPv4-mapped, wrong types), sizes (metadata, address counts, long fields) and encodings
(escape sequences, NUL, invalid surrogates, right-to-left marks).

Every event must end in one of two ways: accepted, with a host name and DNS name that
are plain RFC 1123 ASCII inside the zone; or refused with a PermanentError (or
EventFormatError) whose message names the field and quotes the value escaped and
bounded: no control character, at most MESSAGE_MAX characters, whatever was sent.
The same events against the real servers: tests/tasks/backends/test_bad_input_backends.py
(a sample, with BIND and slapd asked afterwards) and tests/test_hostile_chain.py.
"""

import collections
import string
from pathlib import Path
from typing import Any, Counter, Dict, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novahooks.event import EventFormatError, event_from_dict, new_event
from novahooks.settings import Settings, load_settings
from tasks import policy, validate
from tasks.backends.directory.ad import AdDirectory
from tasks.backends.directory.ldap import LdapDirectory
from tasks.backends.dns.base import DnsDriver
from tasks.errors import PermanentError

ZONE = "cloud.example.test"
MESSAGE_MAX = 700
EXAMPLES = 1200
OUTCOMES: Counter[str] = collections.Counter()

HOSTILE = ["\x1b[2J", "\x1b]0;owned\x07", "\x00", "\n", "\r", "\t", "\u202e", "\u200b",
           "\ufeff", "\u017f", "\u212a", "\u0131", "\u0130", "\udcff", "\U0001f600", "%s",
           "{hostname}", "'", '"', "\\", ",", "=", "+", "*", "(", ")", "<", ">", ";", "#",
           ".", "_", "/", "@", "$", " ", "-", "..", "xn--", "\u00e9"]
RESERVED = ["wpad", "WPAD", "localhost", "isatap", "krbtgt", "Administrator", "guest",
            "KRBTGT$", "ns1"]


class _Dns(DnsDriver):
    """The contract's own preflight (the static part every driver shares)."""

    def register(self, *a: Any) -> Dict[str, Any]:
        raise AssertionError("no backend call here")

    deregister = describe = register

    def check(self) -> str:
        raise AssertionError("no backend call here")

    def managed(self) -> Dict[str, Dict[str, Any]]:
        raise AssertionError("no backend call here")


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    path = tmp_path_factory.mktemp("hostile") / "novahooks.conf"
    path.write_text("[dns]\nzone = %s\nreverse_zones = 10.in-addr.arpa\n"
                    "[directory]\ndriver = ad\ndns_domain = corp.example.test\n"
                    "ou = OU=Nova,DC=corp,DC=example,DC=test\n"
                    "[limits]\nmax_event_bytes = 16384\nmax_addresses = 8\n"
                    "max_metadata_bytes = 4096\n" % ZONE)
    yield load_settings(str(Path(path)), environ={})
    print("\nhostile events: %d, outcomes %s" % (sum(OUTCOMES.values()),
                                                 dict(sorted(OUTCOMES.items()))))
    if OUTCOMES:  # the generated test ran (not deselected): it saw at least 1,000 events
        assert sum(OUTCOMES.values()) >= 1000


fragment = st.one_of(st.text(alphabet=string.ascii_letters + string.digits + "-",
                             max_size=10),
                     st.sampled_from(HOSTILE),
                     st.text(max_size=6),
                     st.integers(55, 300).map(lambda n: "x" * n))
names = st.one_of(
    st.sampled_from(RESERVED),
    st.builds(lambda a, b, c: a + b + c, fragment, fragment, fragment),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
    st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2))
addresses = st.one_of(
    st.integers(1, 254).map(lambda n: "10.20.0.%d" % n),
    st.sampled_from(["::ffff:10.20.0.9", "fe80::1%eth0", "10.20.0.256", "010.020.000.011",
                     " 10.20.0.7", "10.20.0.7\n", "10.20.0.0/24", "", "2001:db8::1\x00",
                     "\x1b[31m10.20.0.1", "x" * 5000, "192.0.2.1", "::", "0.0.0.0"]),
    st.text(max_size=40), st.integers(), st.none(), st.booleans())
items = st.fixed_dictionaries({
    "address": addresses,
    "version": st.one_of(st.sampled_from([4, 6]), st.sampled_from(["4", 4.0, None, True])),
    "mac": st.one_of(st.none(), st.just("fa:16:3e:00:00:01"), st.text(max_size=20)),
    "network": st.one_of(st.none(), st.sampled_from(["private", "dmz"]), fragment),
    "port_id": st.one_of(st.none(), st.text(max_size=40))})
metadata = st.one_of(
    st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
    st.integers(100, 20000).map(lambda n: {"blob": "y" * n}),
    st.just({"novahooks:register": "\x1b[2Jmaybe"}))


@st.composite
def events(draw: Any) -> Dict[str, Any]:
    payload = new_event(draw(st.sampled_from(["build", "network", "create", "resize"])),
                        "6f1c2a6e-1b7d-4c1e-9d3a-%012x" % draw(st.integers(0, 2 ** 48 - 1)),
                        "placeholder", source="test", vm_state="active").to_dict()
    payload["hostname"] = draw(names)
    payload["display_name"] = draw(st.one_of(st.none(), fragment))
    payload["os_type"] = draw(st.sampled_from(["windows", "linux", None, "WINDOWS", "\x00"]))
    payload["metadata"] = draw(metadata)
    if payload["kind"] != "create":
        payload["addresses"] = draw(st.one_of(
            st.lists(items, max_size=3),
            st.integers(9, 40).map(lambda n: [{"address": "10.20.1.%d" % (i + 1),
                                               "version": 4} for i in range(n)])))
    if draw(st.integers(0, 9)) == 0:
        payload[draw(st.sampled_from(["project_id", "image", "host"]))] = draw(st.one_of(
            st.text(max_size=20), st.integers(), st.integers(20000, 40000).map(
                lambda n: "z" * n)))
    return payload


def shared_validation(payload: Dict[str, Any], conf: Settings) -> Any:
    """What StepTask.parse and StepTask.admit run before a register step's backend call."""
    try:
        event = event_from_dict(payload)
    except EventFormatError:
        raise
    event = validate.event(event, needs_hostname=False, bounds=conf.limits)
    decision = policy.decide(event, conf)
    named = event._replace(hostname=decision.hostname)
    LdapDirectory.precheck(conf.directory, named)
    AdDirectory.precheck(conf.directory, named)
    if decision.fqdn is not None:
        _Dns(conf.dns).preflight(decision.fqdn, named.uuid, named.addresses or [])
    return named, decision


def _clear(message: str) -> bool:
    return len(message) <= MESSAGE_MAX and all(c.isprintable() for c in message)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(payload=events())
def test_every_hostile_event_is_refused_clearly_or_accepted_clean(
        payload: Dict[str, Any], conf: Settings) -> None:
    try:
        named, decision = shared_validation(payload, conf)
    except (PermanentError, EventFormatError) as exc:
        field = getattr(exc, "field", None)
        OUTCOMES["refused %s" % type(exc).__name__] += 1
        message = str(exc)
        assert _clear(message), "unclear message (%d characters): %r" % (len(message),
                                                                          message[:300])
        if field is not None:
            assert field.split("[")[0].split(".")[0] in message or field == "<root>", message
        return
    OUTCOMES["accepted"] += 1
    assert named.hostname.isascii() and validate.hostname(named.hostname) == named.hostname
    assert named.hostname.lower() not in {r.lower().rstrip("$") for r in RESERVED[:-1]}
    if decision.fqdn is not None:
        assert decision.fqdn.isascii() and decision.fqdn.endswith("." + ZONE)
        assert validate.dns_name_problem(decision.fqdn) is None
    assert len(named.to_json().encode()) <= conf.limits.max_event_bytes
    assert len(named.addresses or []) <= conf.limits.max_addresses


def test_limits_name_the_key(conf: Settings) -> None:
    base = new_event("build", "6f1c2a6e-1b7d-4c1e-9d3a-000000000001", "vm-1", source="t")
    cases = [(dict(metadata={"blob": "y" * 5000}), "max_metadata_bytes"),
             (dict(addresses=[{"address": "10.20.1.%d" % i, "version": 4}
                              for i in range(1, 10)]), "max_addresses"),
             (dict(image="z" * 20000), "max_event_bytes")]
    for fields, key in cases:
        payload = dict(base.to_dict(), **fields)
        with pytest.raises(PermanentError, match=r"\[limits\] %s" % key):
            validate.event(event_from_dict(payload), bounds=conf.limits)


def test_a_delete_goes_on_without_the_addresses_it_cannot_use(conf: Settings) -> None:
    payload = new_event("delete", "6f1c2a6e-1b7d-4c1e-9d3a-000000000002", "vm-2",
                        source="t").to_dict()
    payload["addresses"] = [{"address": "::ffff:10.20.8.9", "version": 6},
                            {"address": "fe80::1%eth0", "version": 6},
                            {"address": "10.20.8.10", "version": 4}]
    event = validate.event(event_from_dict(payload), needs_hostname=False, bounds=conf.limits)
    assert [a.address for a in event.addresses] == ["10.20.8.10"]


def test_error_messages_quote_values_escaped_and_bounded() -> None:
    with pytest.raises(PermanentError) as caught:
        validate.hostname("\x1b[2J" + "a" * 10000)
    message = str(caught.value)
    assert "\x1b" not in message and "\\u001b[2J" in message
    assert len(message) < 300 and "(10004 characters)" in message


def test_an_address_given_twice_is_refused(conf: Settings) -> None:
    """Issue 19: one address twice made IPAM conflict with itself, retried six times."""
    payload = new_event("build", "6f1c2a6e-1b7d-4c1e-9d3a-000000000003", "vm-3",
                        source="t").to_dict()
    payload["addresses"] = [{"address": "2001:db8:20::5", "version": 6},
                            {"address": "2001:DB8:20:0::5", "version": 6}]
    with pytest.raises(PermanentError, match=r"addresses\[1\].address.*also addresses\[0\]"):
        validate.event(event_from_dict(payload), bounds=conf.limits)
