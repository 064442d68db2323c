"""Bad input, property-based, no servers: every event is either valid for the backends as it
comes out of validation, or refused with an error that names the wrong field.

The oracle below (``faults``) restates the rules independently of ``tasks.validate``
(no shared regexes): RFC 1123 host label from ASCII letters, digits and inner hyphens, at
most 63 characters; addresses that ``ipaddress`` reads, written back canonically, with the
version the event claims and neither a zone id nor an IPv4-mapped form (their reverse name
would be an IPv4 PTR another instance may own); MACs as six colon-separated hex pairs;
every other field of the type ``InstanceEvent`` declares. A generated event with no fault
must be accepted and normalised; one with faults must raise ``EventFormatError`` or
``InvalidEvent`` whose ``.field`` is one of them (or the list item that holds it).
"""

import ipaddress
import json
import string
from typing import Any, Dict, List, Optional, Set

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from novahooks.event import (KINDS, SCHEMA_VERSION, Address, EventFormatError, Flavor,
                                  InstanceEvent, event_from_dict, event_from_json)
from tasks import validate
from tasks.errors import InvalidEvent, PermanentError

ZONE = "cloud.example.test"
MISSING = object()  # a key left out of the dict

#: Characters with a meaning in LDAP DNs or filters, plus NUL.
LDAP_SPECIALS = list(',+"\\<>;=#*()') + ["\x00"]
#: Characters that look harmless or case-fold into ASCII under re.IGNORECASE.
TRICKY = LDAP_SPECIALS + [
    "\n", "\r", "\t", " ", ".", "_", "/", "@", ":", "%", "'", "`", "-",
    "\u017f",  # LATIN SMALL LETTER LONG S: re.I matches [a-z]; IDNA maps it to "s"
    "\u212a",  # KELVIN SIGN: re.I matches [a-z]; lower() is "k"
    "\u0131",  # LATIN SMALL LETTER DOTLESS I
    "\u0130",  # LATIN CAPITAL LETTER I WITH DOT ABOVE: lower() is two characters
    "\u00e9", "\u00df", "\uff10", "\u0661", "\u200b", "\ufeff", "\u00a0", "\U0001f600",
]
ALNUM = string.ascii_letters + string.digits
STRING_FIELDS = ("display_name", "project_id", "user_id", "availability_zone", "host",
                 "vm_state", "image", "os_type")
FLAVOR_INTS = ("vcpus", "memory_mb", "root_gb", "ephemeral_gb", "swap")
#: No deadline (shared CI machines), no example database written into the work tree.
BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# --- the oracle ---------------------------------------------------------------------------

def is_label(value: Any) -> bool:
    return (isinstance(value, str) and 1 <= len(value) <= 63
            and all(c in ALNUM or c == "-" for c in value)
            and value[0] != "-" and value[-1] != "-")


def is_uuid(value: Any) -> bool:
    return (isinstance(value, str) and len(value) == 36
            and all(value[i] == "-" if i in (8, 13, 18, 23) else value[i] in string.hexdigits
                    for i in range(36)))


def is_mac(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 17:
        return False
    parts = value.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in string.hexdigits for c in p)
                                   for p in parts)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_ip(value: Any) -> Optional[Any]:
    """The address if the event may carry it, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if ip.version == 6 and (ip.scope_id is not None or ip.ipv4_mapped is not None):
        return None
    return ip


def faults(d: Any, needs_hostname: bool) -> Set[str]:
    """Every field of ``d`` that must make validation fail (empty: must be accepted)."""
    if not isinstance(d, dict):
        return {"<root>"}
    bad = set()  # type: Set[str]
    if not (is_int(d.get("version")) and d["version"] == SCHEMA_VERSION):
        bad.add("version")
    if not (isinstance(d.get("kind"), str) and d["kind"] in KINDS):
        bad.add("kind")
    if not is_uuid(d.get("uuid")):
        bad.add("uuid")
    if "hostname" not in d:
        bad.add("hostname")
    elif needs_hostname and not is_label(d["hostname"]):
        bad.add("hostname")
    elif not needs_hostname and not (d["hostname"] is None or isinstance(d["hostname"], str)):
        bad.add("hostname")
    for name in STRING_FIELDS:
        if d.get(name) is not None and not isinstance(d[name], str):
            bad.add(name)
    for name in ("source", "event_id"):
        if name in d and not isinstance(d[name], str):
            bad.add(name)
    if "emitted_at" in d and not (is_int(d["emitted_at"]) or isinstance(d["emitted_at"], float)):
        bad.add("emitted_at")
    bad |= flavor_faults(d.get("flavor"))
    metadata = d.get("metadata")
    if metadata and not isinstance(metadata, dict):  # a falsy non-object reads as {}
        bad.add("metadata")
    return bad | addresses_faults(d.get("addresses"), d.get("kind"))


def flavor_faults(flavor: Any) -> Set[str]:
    if flavor is None:
        return set()
    if not isinstance(flavor, dict):
        return {"flavor"}
    bad = {"flavor." + name for name in FLAVOR_INTS
           if flavor.get(name) is not None and not (is_int(flavor[name]) and flavor[name] >= 0)}
    if flavor.get("name") is not None and not isinstance(flavor["name"], str):
        bad.add("flavor.name")
    return bad


def addresses_faults(addresses: Any, kind: Any) -> Set[str]:
    if addresses is None:
        return set()
    if not isinstance(addresses, list):
        return {"addresses"}
    bad = set()  # type: Set[str]
    seen = set()  # type: Set[Any]
    for i, item in enumerate(addresses):
        found = item_faults(item, "addresses[%d]" % i)
        if kind == "delete" and isinstance(item, dict) and item.get("address") and \
                "version" in item:
            continue  # a delete leaves out an address it cannot use, and goes on
        if not found:
            canonical = parse_ip(item["address"])
            if canonical in seen:  # one VM holds an address once
                found = {"addresses[%d].address" % i}
            seen.add(canonical)
        bad |= found
    return bad


def item_faults(item: Any, prefix: str) -> Set[str]:
    if not isinstance(item, dict):
        return {prefix}
    bad = set()  # type: Set[str]
    ip = parse_ip(item.get("address"))
    if ip is None:
        bad.add(prefix + ".address")
    if not is_int(item.get("version")) or (ip is not None and item["version"] != ip.version):
        bad.add(prefix + ".version")
    if item.get("mac") is not None and not is_mac(item["mac"]):
        bad.add(prefix + ".mac")
    for name in ("network", "port_id"):
        if item.get(name) is not None and not isinstance(item[name], str):
            bad.add(prefix + "." + name)
    return bad


def names_a_fault(field: str, bad: Set[str]) -> bool:
    """The error names a faulty field, or the list item / object that holds it."""
    return any(b == field or b.startswith(field + ".") for b in bad)


def check_accepted(d: Dict[str, Any], out: InstanceEvent, needs_hostname: bool) -> None:
    """What comes out of validation is exactly what the backends may use as is."""
    assert isinstance(out, InstanceEvent)
    assert out.uuid == d["uuid"] and out.kind == d["kind"]
    if needs_hostname:
        assert out.hostname == d["hostname"].lower()
        assert is_label(out.hostname)
        assert validate.fqdn(out.hostname, ZONE) == "%s.%s" % (out.hostname, ZONE)
    else:
        assert out.hostname == d["hostname"]
    if d.get("addresses") is None:
        assert out.addresses is None
    else:
        usable = [item for item in d["addresses"] if not item_faults(item, "a")]
        if d["kind"] != "delete":
            assert usable == d["addresses"]
        assert len(out.addresses) == len(usable)
        for item, got in zip(usable, out.addresses):
            assert isinstance(got, Address)
            parsed = ipaddress.ip_address(item["address"])
            assert got.address == str(parsed)                      # canonical
            assert str(ipaddress.ip_address(got.address)) == got.address
            assert "%" not in got.address
            assert is_int(got.version) and got.version == parsed.version
            assert got.mac == (item["mac"].lower() if item.get("mac") else None)
            assert got.network == item.get("network") and got.port_id == item.get("port_id")
    for name in STRING_FIELDS:
        assert getattr(out, name) is None or isinstance(getattr(out, name), str), name
    assert isinstance(out.source, str) and isinstance(out.event_id, str)
    assert isinstance(out.emitted_at, (int, float)) and not isinstance(out.emitted_at, bool)
    assert isinstance(out.metadata, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.metadata.items())
    if out.flavor is not None:
        assert isinstance(out.flavor, Flavor)
        for name in FLAVOR_INTS:
            value = getattr(out.flavor, name)
            assert value is None or (is_int(value) and value >= 0)
    # What the worker accepted survives its own JSON round trip unchanged.
    assert event_from_json(out.to_json()) == out


def run_validation(d: Any, needs_hostname: bool = True) -> Any:
    """The worker's parse: event_from_dict then validate.event; the outcome or the error."""
    try:
        return validate.event(event_from_dict(d), needs_hostname=needs_hostname)
    except (EventFormatError, InvalidEvent) as exc:
        return exc


def check(d: Any, needs_hostname: bool = True) -> Any:
    bad = faults(d, needs_hostname)
    outcome = run_validation(d, needs_hostname)   # any other exception fails the test
    if isinstance(outcome, Exception):
        note_event("rejected: %s" % type(outcome).__name__)
        assert bad, "valid event refused: %s" % outcome
        assert names_a_fault(outcome.field, bad), \
            "error names %r, the faulty fields are %s" % (outcome.field, sorted(bad))
        assert outcome.field in str(outcome)
        if isinstance(outcome, InvalidEvent):
            assert isinstance(outcome, PermanentError)
    else:
        note_event("accepted")
        assert not bad, "accepted an event with faulty %s: %r" % (sorted(bad), outcome)
        check_accepted(d, outcome, needs_hostname)
    return outcome


# --- strategies -------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
wrong_scalars = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False),
                          st.lists(st.text(max_size=3), min_size=0, max_size=2),
                          st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))

valid_labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)


@st.composite
def injected(draw: Any) -> str:
    """A valid label with one character from TRICKY put somewhere in it."""
    base = draw(valid_labels)
    pos = draw(st.integers(0, len(base)))
    return base[:pos] + draw(st.sampled_from(TRICKY)) + base[pos:]


hostnames = st.one_of(
    valid_labels,
    valid_labels.map(str.upper),
    st.integers(58, 70).map(lambda n: ("x" * n)[:n]),          # around the 63 limit
    st.from_regex(r"[a-z0-9][a-z0-9-]{62,90}[a-z0-9]", fullmatch=True),  # too long
    injected(),
    valid_labels.map(lambda h: h + "\n"),
    valid_labels.map(lambda h: "-" + h),
    valid_labels.map(lambda h: h + "-"),
    st.lists(valid_labels, min_size=2, max_size=6).map(".".join),
    st.text(alphabet=st.sampled_from(TRICKY + list(ALNUM)), max_size=70),
    st.text(max_size=70),
    st.just(""),
)
hostname_values = st.one_of(hostnames, st.none(), wrong_scalars)

v4s = st.ip_addresses(v=4).map(str)
v6s = st.ip_addresses(v=6).map(str)


def embedded(pair: Any) -> str:
    v6, v4 = pair
    return ":".join(ipaddress.IPv6Address(v6).exploded.split(":")[:6]) + ":" + str(v4)


address_texts = st.one_of(
    v4s, v6s,
    v6s.map(lambda a: ipaddress.IPv6Address(a).exploded.upper()),      # leading zeros, case
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=4)).map(embedded),
    v4s.map(lambda a: ".".join("%03d" % int(o) for o in a.split("."))),  # octal-looking
    v4s.map(lambda a: "::ffff:" + a),                                  # IPv4-mapped
    v4s.map(lambda a: str(ipaddress.IPv6Address("::ffff:" + a))),
    st.tuples(v6s, st.text(max_size=8)).map(lambda t: "%s%%%s" % t),   # zone id
    st.sampled_from(["fe80::1%eth0", "10.0.0.1%eth0", "", " 10.0.0.1", "10.0.0.1\n",
                     "10.0.0.256", "1.2.3", "::1::", "10.0.0.1/32", "2001:db8::/64",
                     "0x0a.0.0.1", "\uff11\uff10.0.0.1", "010.020.200.005", "10.020.200.5",
                     "2001:DB8:0020:0000:0000:0000:0000:FF01", "::", "0.0.0.0"]),
    st.text(max_size=40),
)
address_values = st.one_of(address_texts, st.one_of(
    st.integers(min_value=-1, max_value=2 ** 129), st.booleans(), st.none(), wrong_scalars))
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join("%02x" % x for x in b))
mac_values = st.one_of(
    st.none(), macs, macs.map(str.upper),
    st.sampled_from(["", "fa:16:3e:00:00:0", "fa-16-3e-00-00-00", "fa:16:3e:00:00:00\n",
                     "fa:16:3e:00:00:00:00", "gg:16:3e:00:00:00", "fa16.3e00.0000",
                     "\uff46a:16:3e:00:00:00"]),
    st.text(max_size=18), wrong_scalars)
AUTO = "auto"
version_values = st.sampled_from([AUTO] * 8 + [4, 6, "4", "6", 4.0, 6.0, True, None, 0, 5,
                                               MISSING])


# Strategies are built once here, not inside the composites: building them per draw
# cost more than drawing from them.
rare_items = st.one_of(st.none(), st.text(max_size=10), st.integers(),
                       st.lists(st.integers(), max_size=2))
networks = st.one_of(st.none(), st.text(max_size=10))
odd_networks = st.one_of(st.none(), st.text(max_size=10), wrong_scalars)
port_ids = st.one_of(st.none(), st.uuids().map(str))
item_extras = st.dictionaries(st.text(max_size=6).filter(lambda k: k not in Address._fields),
                              json_scalars, max_size=2)


@st.composite
def address_items(draw: Any) -> Any:
    # Rare branches test "== <middle value>": Hypothesis favours 0 and the bounds.
    if draw(st.integers(0, 24)) == 13:
        return draw(rare_items)
    address = draw(address_values)
    version = draw(version_values)
    if version is AUTO:
        try:
            version = ipaddress.ip_address(address).version
        except (ValueError, TypeError):
            version = draw(st.sampled_from([4, 6]))
    item = {"address": address, "version": version, "mac": draw(mac_values),
            "network": draw(odd_networks if draw(st.integers(0, 9)) == 7 else networks),
            "port_id": draw(port_ids)}
    for key in ("address", "version"):
        if item[key] is MISSING or draw(st.integers(0, 29)) == 17:
            del item[key]
    item.update(draw(item_extras))
    return item


def _flavor(name: Any, numbers: List[Any]) -> Dict[str, Any]:
    return dict({"name": name}, **dict(zip(FLAVOR_INTS, numbers)))


#: field -> (strategy for a good value, strategy for a bad one); MISSING leaves the key out.
FIELD_STRATEGIES = {
    "version": (st.just(SCHEMA_VERSION),
                st.sampled_from([0, -1, SCHEMA_VERSION + 1, 99, "1", 1.0, True, None,
                                 MISSING])),
    "kind": (st.sampled_from(KINDS),
             st.sampled_from(["", "Build", "boot", 5, None, ["build"], MISSING])),
    "uuid": (st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())),
             st.one_of(st.sampled_from(["", "*", "(cn=*)", "not-a-uuid", 5, None, MISSING]),
                       st.uuids().map(lambda u: str(u) + "\n"), st.uuids().map(lambda u: u.hex),
                       st.text(max_size=40))),
    "flavor": (st.one_of(st.none(), st.builds(
        _flavor, st.one_of(st.none(), st.text(max_size=10)),
        st.lists(st.one_of(st.none(), st.integers(0, 10 ** 6)), min_size=5, max_size=5))),
        st.one_of(st.sampled_from(["m1.small", 5, [], MISSING]),
                  st.builds(lambda key, value: {"name": "m1", key: value},
                            st.sampled_from(FLAVOR_INTS + ("name",)),
                            st.sampled_from([-1, "2", 1.5, True, None, [], 3])),
                  st.dictionaries(st.text(max_size=6), json_scalars, max_size=3))),
    "metadata": (st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
                 st.one_of(st.sampled_from(["os=linux", 5, ["a"], {}, None, MISSING]),
                           st.dictionaries(st.text(max_size=4), json_values, max_size=3))),
    "addresses": (st.one_of(st.none(), st.lists(address_items(), max_size=4)),
                  st.sampled_from(["10.0.0.1", {"address": "10.0.0.1"}, 5, True, MISSING])),
    "source": (st.sampled_from(["hook", "test", "notification"]),
               st.one_of(st.none(), wrong_scalars, st.just(MISSING))),
    "event_id": (st.uuids().map(str), st.one_of(st.none(), wrong_scalars, st.just(MISSING))),
    "emitted_at": (st.floats(0, 2e9) | st.integers(0, 2 ** 31),
                   st.one_of(st.none(), st.text(max_size=5), st.booleans(), st.just(MISSING))),
}
_text_field = (st.one_of(st.none(), st.text(max_size=12)),
               st.one_of(wrong_scalars, st.just(MISSING)))
FIELD_STRATEGIES.update({name: _text_field for name in STRING_FIELDS})
FIELDS = tuple(FIELD_STRATEGIES)
broken_fields = st.one_of(st.just(frozenset()),
                          st.frozensets(st.sampled_from(FIELDS), max_size=3))
any_hostnames = st.one_of(hostname_values, st.just(MISSING))
top_extras = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in
                                                         InstanceEvent._fields),
                             json_values, max_size=3)


@st.composite
def event_dicts(draw: Any) -> Dict[str, Any]:
    """An event as ``InstanceEvent.to_dict()`` writes it, with up to three fields broken,
    any hostname, any addresses, and keys a newer writer might have added."""
    broken = draw(broken_fields)
    d = {}  # type: Dict[str, Any]
    hostname = draw(any_hostnames if draw(st.integers(0, 19)) == 11 else hostnames)
    if hostname is not MISSING:
        d["hostname"] = hostname
    for name in FIELDS:
        good, bad = FIELD_STRATEGIES[name]
        value = draw(bad if name in broken else good)
        if value is not MISSING:
            d[name] = value
    d.update(draw(top_extras))
    return d


# --- properties ---------------------------------------------------------------------------

@settings(BASE, max_examples=1000)
@given(d=event_dicts(), needs_hostname=st.sampled_from([True, True, True, False]))
def test_every_event_is_normalised_or_refused_naming_the_field(d: Dict[str, Any],
                                                               needs_hostname: bool) -> None:
    check(d, needs_hostname)


@settings(BASE, max_examples=1000)
@given(host=hostname_values)
@example(host="abc\n")
@example(host="\u017f")      # ſ: IDNA would publish it as "s"
@example(host="\u212a")      # Kelvin sign
@example(host="\u0131")
@example(host="\u0130")
@example(host="a" * 63)
@example(host="a" * 64)
@example(host="a,b=c+d")
@example(host="x\x00y")
@example(host="*")
@example(host="(cn=*)")
def test_hostname_is_an_rfc1123_label_or_refused(host: Any) -> None:
    try:
        got = validate.hostname(host)
    except InvalidEvent as exc:
        assert exc.field == "hostname"
        assert not is_label(host), "refused a valid label %r: %s" % (host, exc)
        return
    assert is_label(host), "accepted %r as %r" % (host, got)
    assert got == host.lower() and got.isascii()
    assert validate.fqdn(got, ZONE) == got + "." + ZONE
    # The same label under a zone long enough to push the name past 253 characters.
    long_zone = ".".join(["z" * 60] * 3)  # 182 characters
    expected = "%s.%s" % (got, long_zone)
    if len(expected) <= 253:
        assert validate.fqdn(got, long_zone) == expected
    else:
        with pytest.raises(InvalidEvent) as caught:
            validate.fqdn(got, long_zone)
        assert caught.value.field == "hostname"


@settings(BASE, max_examples=300)
@given(labels=st.lists(st.one_of(valid_labels, hostnames), min_size=1, max_size=8),
       zone=st.sampled_from([ZONE, ZONE + ".", "a" * 63 + "." + "b" * 63 + ".example.test"]))
def test_fqdn_is_at_most_253_valid_labels_or_refused(labels: List[str], zone: str) -> None:
    host = ".".join(labels)
    name = "%s.%s" % (host, zone.rstrip("."))
    ok = len(name) <= 253 and all(is_label(label) for label in name.split("."))
    try:
        got = validate.fqdn(host, zone)
    except InvalidEvent as exc:
        assert exc.field == "hostname" and not ok, exc
    else:
        assert ok and got == name


@settings(BASE, max_examples=500)
@given(item=address_items(), index=st.integers(0, 3))
@example(item={"address": "::ffff:10.20.200.5", "version": 6}, index=0)
@example(item={"address": "fe80::1%eth0", "version": 6}, index=0)
@example(item={"address": "010.020.200.005", "version": 4}, index=0)
@example(item={"address": 167772161, "version": 4}, index=0)
@example(item={"address": "10.0.0.1", "version": True}, index=0)
@example(item={"address": "10.0.0.1", "version": 4.0}, index=0)
@example(item={"address": "10.0.0.1", "version": 4, "mac": "fa:16:3e:00:00:00\n"}, index=0)
@example(item={"address": "10.0.0.1", "version": 4, "mac": 5}, index=0)
@example(item={"address": "2001:0DB8:0000::0001", "version": 6, "mac": "FA:16:3E:0A:0B:0C"},
         index=1)
def test_one_address_is_canonical_or_refused(item: Any, index: int) -> None:
    d = {"version": 1, "kind": "build", "uuid": "3c9a1f56-8a3e-4b7e-9c51-0f0f0f0f0f0f",
         "hostname": "vm-1", "addresses": [{"address": "10.1.2.3", "version": 4}] * index
         + [item]}
    check(d)


@settings(BASE, max_examples=300)
@given(text=st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                      event_dicts().map(lambda d: json.dumps(d))))
def test_event_json_is_read_or_refused_never_crashes(text: str) -> None:
    try:
        ev = event_from_json(text)
    except EventFormatError as exc:
        assert exc.field in str(exc)
        return
    assert isinstance(ev, InstanceEvent)


# --- the cases the properties found, kept as plain regressions ---------------------------

def base(**changes: Any) -> Dict[str, Any]:
    d = {"version": 1, "kind": "build", "uuid": "3c9a1f56-8a3e-4b7e-9c51-0f0f0f0f0f0f",
         "hostname": "vm-1", "display_name": "vm 1", "project_id": None, "user_id": None,
         "availability_zone": None, "host": None, "vm_state": "active", "flavor": None,
         "image": None, "os_type": None, "metadata": {},
         "addresses": [{"address": "10.1.2.3", "version": 4, "mac": None, "network": None,
                        "port_id": None}],
         "source": "test", "event_id": "", "emitted_at": 0.0}
    d.update(changes)
    return {k: v for k, v in d.items() if v is not MISSING}


def item(**changes: Any) -> Dict[str, Any]:
    data = {"address": "10.1.2.3", "version": 4}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not MISSING}


@pytest.mark.parametrize("d, field", [
    (base(hostname="\u017f"), "hostname"),          # would be published in DNS as "s"
    (base(hostname="\u212a"), "hostname"),
    (base(hostname="\u0131"), "hostname"),
    (base(hostname="\u0130"), "hostname"),
    (base(hostname="vm-1\n"), "hostname"),
    (base(hostname=42), "hostname"),
    (base(hostname=MISSING), "hostname"),
    (base(uuid="3c9a1f56-8a3e-4b7e-9c51-0f0f0f0f0f0f\n"), "uuid"),
    (base(version=True), "version"),
    (base(version=SCHEMA_VERSION + 1), "version"),
    (base(vm_state=["active"]), "vm_state"),
    (base(flavor={"vcpus": True}), "flavor.vcpus"),
    (base(addresses=[item(address=167772161)]), "addresses[0].address"),
    (base(addresses=[item(address="::ffff:10.1.2.3", version=6)]), "addresses[0].address"),
    (base(addresses=[item(address="fe80::1%eth0", version=6)]), "addresses[0].address"),
    (base(addresses=[item(address="010.001.002.003")]), "addresses[0].address"),
    (base(addresses=[item(version=MISSING)]), "addresses[0].version"),
    (base(addresses=[item(version=4.0)]), "addresses[0].version"),
    (base(addresses=[item(mac="fa:16:3e:00:00:00\n")]), "addresses[0].mac"),
    (base(addresses=[item(mac=5)]), "addresses[0].mac"),
    (base(addresses=[item(network=["net"])]), "addresses[0].network"),
])
def test_known_bad_inputs_are_refused_naming_the_field(d: Dict[str, Any], field: str) -> None:
    outcome = run_validation(d)
    assert isinstance(outcome, (EventFormatError, InvalidEvent)), outcome
    assert outcome.field == field, outcome


def test_canonical_forms_are_accepted() -> None:
    out = run_validation(base(hostname="VM-Upper", addresses=[
        item(address="2001:0DB8:0020:0000:0000:0000:0000:FF01", version=6,
             mac="FA:16:3E:0A:0B:0C"),
        item(address="2001:db8:20::10.20.200.5", version=6)]))
    assert out.hostname == "vm-upper"
    assert [(a.address, a.mac) for a in out.addresses] == [
        ("2001:db8:20::ff01", "fa:16:3e:0a:0b:0c"), ("2001:db8:20::a14:c805", None)]


def test_delete_without_a_usable_hostname_is_still_readable() -> None:
    """A delete needs only the UUID: an unusable hostname string must not block it."""
    out = run_validation(base(kind="delete", hostname="a,b"), needs_hostname=False)
    assert isinstance(out, InstanceEvent) and out.hostname == "a,b"
    out = run_validation(base(kind="delete", hostname=None), needs_hostname=False)
    assert isinstance(out, InstanceEvent) and out.hostname is None
