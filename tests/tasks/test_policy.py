"""tasks/policy.py, pure: which rule registers or leaves out a VM, its names, its reverse zones.

No servers: the decision is a function of the event and the settings, read here from
real INI text through novahooks.settings like the workers read theirs.
"""

import ipaddress
import textwrap
import uuid
from pathlib import Path
from typing import Any, List, Optional

import dns.name
import dns.reversename
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novahooks.event import Address, InstanceEvent, new_event
from novahooks.nova.extract import instance_fields
from novahooks.settings import IPV4_MAPPED, Settings, SettingsError, load_settings
from tasks import policy, validate
from tasks.errors import InvalidEvent, OutOfScope

ZONE = "cloud.example.com"
PROJECT = "6f70656e737461636b20342065766572"
BASE = settings(deadline=None, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def conf(tmp_path: Path) -> Any:
    """Settings from INI text (plus a [dns] zone), as load_settings reads a file."""
    def read(text: str = "", zone: Optional[str] = ZONE) -> Settings:
        path = tmp_path / "novahooks.conf"
        path.write_text(("[dns]\nzone = %s\n" % zone if zone else "") + textwrap.dedent(text))
        return load_settings(str(path), environ={})
    return read


def vm(hostname: Optional[str] = "web-1", networks: Optional[List[str]] = None,
       addresses: Optional[List[str]] = None, **fields: Any) -> InstanceEvent:
    fields.setdefault("project_id", PROJECT)
    fields.setdefault("availability_zone", "az1")
    fields.setdefault("display_name", "Web 1")
    if addresses is None and networks is not None:
        addresses = ["10.20.0.%d" % (i + 5) for i in range(len(networks))]
    found = None
    if addresses is not None:
        found = [Address(a, 6 if ":" in a else 4, None,
                         networks[i] if networks and i < len(networks) else None)
                 for i, a in enumerate(addresses)]
    return new_event("build", "0f3c2a1b-1111-4222-8333-944445555666", hostname,
                     addresses=found, **fields)


# -- names ---------------------------------------------------------------------------------

def test_without_naming_rules_the_name_is_todays_hostname_dot_zone(conf: Any) -> None:
    got = policy.decide(vm(networks=["private"]), conf())
    assert got == policy.Decision(True, "[register] default = true", "web-1",
                                  "web-1.cloud.example.com", "[naming] hostname", "[dns] zone",
                                  {})


def test_every_placeholder_is_filled_from_the_event(conf: Any) -> None:
    settings_ = conf("""
        [naming]
        fqdn = {hostname}-{short_uuid}.{network}.{az}.{project}.cloud.example.com
        [naming project %s]
        hostname = vm-{short_uuid}
        """ % PROJECT)
    got = policy.decide(vm(networks=["blue", "red"]), settings_)
    assert got.hostname == "vm-0f3c2a1b"
    assert got.fqdn == "vm-0f3c2a1b-0f3c2a1b.blue.az1.%s.cloud.example.com" % PROJECT
    assert got.hostname_rule == "[naming project %s] hostname" % PROJECT
    assert got.fqdn_rule == "[naming] fqdn"
    uuid_named = conf("[naming]\nfqdn = {uuid}.cloud.example.com\n")
    assert policy.decide(vm(networks=["n"]), uuid_named).fqdn == \
        "0f3c2a1b-1111-4222-8333-944445555666.cloud.example.com"
    display = conf("[naming]\nhostname = {display_name}\n")
    assert policy.decide(vm(display_name="Db-7"), display).hostname == "db-7"


def test_network_rule_beats_project_rule_beats_default(conf: Any) -> None:
    settings_ = conf("""
        [naming]
        fqdn = {hostname}.cloud.example.com
        [naming project %s]
        fqdn = {hostname}.{project}.cloud.example.com
        [naming network dmz]
        fqdn = {hostname}.dmz.cloud.example.com
        [naming network storage]
        fqdn = {hostname}.{network}.cloud.example.com
        """ % PROJECT)
    assert policy.decide(vm(networks=["private"]), settings_).fqdn == \
        "web-1.%s.cloud.example.com" % PROJECT
    assert policy.decide(vm(networks=["private"], project_id="other"), settings_).fqdn == \
        "web-1.cloud.example.com"
    # the first NIC with a rule wins, in Nova's NIC order
    both = policy.decide(vm(networks=["private", "storage", "dmz"]), settings_)
    assert both.fqdn == "web-1.storage.cloud.example.com"
    assert both.fqdn_rule == "[naming network storage] fqdn"


def test_a_network_name_is_not_known_before_boot(conf: Any) -> None:
    settings_ = conf("[naming]\nfqdn = {hostname}.{network}.cloud.example.com\n")
    before_boot = policy.decide(vm(addresses=None)._replace(kind="create"), settings_)
    assert before_boot.register and before_boot.hostname == "web-1" and before_boot.fqdn is None
    with pytest.raises(InvalidEvent) as error:
        policy.decide(vm(addresses=[]), settings_)
    assert error.value.field == "addresses[].network"
    assert "[naming] fqdn = {hostname}.{network}.cloud.example.com needs {network}" \
        in str(error.value)


@pytest.mark.parametrize("ini,event,field,words", [
    ("[naming]\nhostname = {display_name}\n", dict(display_name="My Web Server"), "hostname",
     ['[naming] hostname = {display_name} gives "My Web Server"', "RFC 1123"]),
    ("[naming project %s]\nfqdn = {hostname}.{network}.cloud.example.com\n" % PROJECT,
     dict(networks=["net_1"]), "fqdn",
     ["[naming project %s] fqdn" % PROJECT, '"net_1"', "not an RFC 1123 label"]),
    ("[naming]\nfqdn = {uuid}{uuid}.cloud.example.com\n", dict(networks=["n"]), "fqdn",
     ["[naming] fqdn", "is 72 characters; DNS allows 63"]),
    ("[naming]\nfqdn = {display_name}.%s.cloud.example.com\n" % ".".join(["a" * 60] * 4),
     dict(networks=["n"], display_name="b" * 20), "fqdn",
     ["[naming] fqdn", "characters; DNS allows 253"]),
    ("[naming]\nfqdn = {hostname}.{az}.cloud.example.com\n",
     dict(networks=["n"], availability_zone=None), "availability_zone",
     ["needs {az}"]),
    ("", dict(hostname="x" * 64, networks=["n"]), "hostname", ["at most 63"]),
])
def test_a_name_that_is_not_valid_dns_is_refused_naming_the_rule(
        conf: Any, ini: str, event: Any, field: str, words: List[str]) -> None:
    with pytest.raises(InvalidEvent) as error:
        policy.decide(vm(**event), conf(ini))
    assert error.value.field == field
    for word in words:
        assert word in str(error.value)


def test_a_name_outside_the_dns_zone_is_out_of_scope_naming_the_rule(conf: Any) -> None:
    settings_ = conf("[naming project %s]\nfqdn = {hostname}.example.org\n" % PROJECT)
    with pytest.raises(OutOfScope) as error:
        policy.decide(vm(networks=["n"]), settings_)
    assert "[naming project %s] fqdn = {hostname}.example.org gives web-1.example.org, " \
        "outside [dns] zone cloud.example.com" % PROJECT in str(error.value)


@pytest.mark.parametrize("ini,problem", [
    ("[naming]\nhostname = {hostname}.x\n", "[naming] hostname: '{hostname}.x' makes more "
     "than one DNS label"),
    ("[naming]\nfqdn = {hostname}..example.com\n", "[naming] fqdn: '{hostname}..example.com' "
     "can never give a valid DNS name"),
    ("[naming project p]\nfqdn = {hostname}.{tenant}.example.com\n",
     "[naming project p] fqdn: {tenant} in '{hostname}.{tenant}.example.com' is not a "
     "placeholder"),
    ("[naming project p]\nfqdn = {hostname!r}.example.com\n", "{hostname!r}"),
    ("[naming project p]\nfqdn = {hostname:>9}.example.com\n", "{hostname:>9}"),
    ("[naming project p]\nfqdn = {hostname.upper}.example.com\n", "{hostname.upper}"),
    ("[naming network n]\nhostname = x\n", "[naming network n] hostname: unknown key"),
    ("[naming zone z]\n", "unknown section [naming zone z]"),
    ("[naming prefix 10.20.0.1/16]\n", "[naming prefix 10.20.0.1/16]: 10.20.0.1/16 has host "
     "bits set"),
    ("[naming prefix 10.20.0.0/16]\nreverse_zone = 0.20.10.in-addr.arpa\n",
     "0.20.10.in-addr.arpa holds only part of 10.20.0.0/16"),
    ("[naming prefix 10.20.0.0/16]\nreverse_zone = 21.10.in-addr.arpa\n",
     "21.10.in-addr.arpa is not a reverse zone of 10.20.0.0/16"),
    ("[naming prefix 192.0.2.0/26]\nreverse_zone = 0/26.2.0.192.in-addr.arpa\n",
     "RFC 2317 classless zones are not supported"),
    ("[register]\nprojects_allow = a, b\nprojects_deny = b\n", "b in both"),
    ("[register]\ndefault = maybe\n", "[register] default: 'maybe' is not a boolean"),
])
def test_a_rule_that_can_never_work_is_refused_when_the_settings_are_read(
        conf: Any, ini: str, problem: str) -> None:
    with pytest.raises(SettingsError) as error:
        conf(ini)
    assert problem in str(error.value)


# -- reverse zones -------------------------------------------------------------------------

def test_reverse_zone_is_the_most_specific_prefix_rule_or_none(conf: Any) -> None:
    settings_ = conf("""
        [naming prefix 10.0.0.0/8]
        [naming prefix 10.20.0.0/16]
        [naming prefix 10.20.4.0/22]
        [naming prefix 10.30.0.0/16]
        reverse_zone = 10.in-addr.arpa.
        [naming prefix 2001:db8::/48]
        [naming prefix 2001:db8:0:1::/64]
        reverse_zone = 8.b.d.0.1.0.0.2.ip6.arpa
        """)
    prefixes = settings_.naming.reverse_prefixes()
    assert policy.reverse_zone("10.20.0.5", prefixes) == "20.10.in-addr.arpa"
    assert policy.reverse_zone("10.20.5.1", prefixes) == "20.10.in-addr.arpa"  # /22 -> its /16
    assert policy.reverse_zone("10.99.0.1", prefixes) == "10.in-addr.arpa"
    assert policy.reverse_zone("10.30.0.1", prefixes) == "10.in-addr.arpa"
    assert policy.reverse_zone("2001:db8::5", prefixes) == "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    assert policy.reverse_zone("2001:db8:0:1::5", prefixes) == "8.b.d.0.1.0.0.2.ip6.arpa"
    assert policy.reverse_zone("192.168.1.1", prefixes) is None  # [dns] reverse_zones decide
    got = policy.decide(vm(addresses=["10.20.0.5", "2001:db8::5", "192.168.1.1"]), settings_)
    assert got.reverse_zones == {"10.20.0.5": "20.10.in-addr.arpa",
                                 "2001:db8::5": "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"}


@given(data=st.data(), version=st.sampled_from([4, 6]))
@settings(BASE, max_examples=300)
def test_every_address_of_a_prefix_has_its_ptr_name_inside_the_chosen_zone(
        conf: Any, data: Any, version: int) -> None:
    bits = 32 if version == 4 else 128
    length = data.draw(st.integers(min_value=8 if version == 4 else 4, max_value=bits))
    base = data.draw(st.integers(min_value=0, max_value=2 ** bits - 1))
    network = ipaddress.ip_network((base >> (bits - length) << (bits - length), length)
                                   if version == 4 else
                                   (ipaddress.IPv6Address(base >> (bits - length)
                                                          << (bits - length)), length))
    address = network.network_address + data.draw(
        st.integers(min_value=0, max_value=network.num_addresses - 1))
    if network.version == 6 and network.subnet_of(IPV4_MAPPED):
        with pytest.raises(SettingsError, match="IPv4-mapped space"):
            conf("[naming prefix %s]\n" % network)
        return
    settings_ = conf("[naming prefix %s]\n" % network)
    zone = policy.reverse_zone(str(address), settings_.naming.reverse_prefixes())
    if version == 6 and address.ipv4_mapped is not None:
        assert zone is None  # its PTR is the IPv4 one; validate refuses the address anyway
        return
    assert zone is not None
    assert dns.reversename.from_address(str(address)).is_subdomain(dns.name.from_text(zone))
    unit = 8 if version == 4 else 4
    assert len(zone.split(".")) - 2 == length // unit  # the zone the prefix ends on


def test_an_ipv4_mapped_address_has_no_ip6_arpa_zone_and_mapped_space_is_no_prefix(
        conf: Any) -> None:
    """Hypothesis found ::ffff:0:0 inside ::/4: dnspython names its PTR under in-addr.arpa."""
    prefixes = conf("[naming prefix ::/4]\n").naming.reverse_prefixes()
    assert policy.reverse_zone("::ffff:0:0", prefixes) is None
    assert policy.reverse_zone("::ffff:10.20.0.5", prefixes) is None
    assert policy.reverse_zone("::1", prefixes) == "0.ip6.arpa"
    with pytest.raises(SettingsError, match=r"\[naming prefix ::ffff:a00:0/104\]: IPv4-mapped"):
        conf("[naming prefix ::ffff:a00:0/104]\n")
    with pytest.raises(InvalidEvent, match="IPv4-mapped IPv6 address; send 10.20.0.5"):
        validate.event(vm(addresses=["::ffff:10.20.0.5"]))


# -- opt-in / opt-out ----------------------------------------------------------------------

REGISTER = """
    [register]
    default = %s
    projects_allow = allowed
    projects_deny = denied
    """


@pytest.mark.parametrize("default,project,metadata,image,register,rule", [
    ("true", PROJECT, {}, {}, True, "[register] default = true"),
    ("false", PROJECT, {}, {}, False, "[register] default = false"),
    ("false", "allowed", {}, {}, True, "[register] projects_allow: project allowed"),
    ("true", "denied", {}, {}, False, "[register] projects_deny: project denied"),
    # a deny list is the operator's: the VM's own metadata cannot override it
    ("true", "denied", {"novahooks:register": "true"}, {}, False,
     "[register] projects_deny: project denied"),
    ("true", PROJECT, {"novahooks:register": "false"}, {}, False,
     "metadata novahooks:register=false"),
    ("false", PROJECT, {"novahooks:register": "True"}, {}, True,
     "metadata novahooks:register=True"),
    ("false", "allowed", {"novahooks:register": "no"}, {}, False,
     "metadata novahooks:register=no"),
    ("true", PROJECT, {}, {"novahooks_register": "false"}, False,
     "image property novahooks_register=false"),
    ("false", PROJECT, {}, {"novahooks_register": "yes"}, True,
     "image property novahooks_register=yes"),
    # the instance is more specific than its image, the image than its project
    ("true", PROJECT, {"novahooks:register": "true"}, {"novahooks_register": "false"}, True,
     "metadata novahooks:register=true"),
    ("false", "allowed", {}, {"novahooks_register": "false"}, False,
     "image property novahooks_register=false"),
])
def test_opt_in_and_opt_out_name_the_rule_that_decided(
        conf: Any, default: str, project: str, metadata: Any, image: Any, register: bool,
        rule: str) -> None:
    got = policy.decide(vm(networks=["n"], project_id=project, metadata=metadata,
                           image_properties=image), conf(REGISTER % default))
    assert (got.register, got.rule) == (register, rule)
    assert (got.fqdn is not None) == register


def test_a_vm_left_out_is_not_named_so_its_bad_name_is_no_error(conf: Any) -> None:
    got = policy.decide(vm(hostname="Not_A_Name!", metadata={"novahooks:register": "false"}),
                        conf())
    assert got == policy.Decision(False, "metadata novahooks:register=false")


def test_a_flag_that_is_not_a_boolean_is_refused_naming_the_key(conf: Any) -> None:
    with pytest.raises(InvalidEvent) as error:
        policy.decide(vm(metadata={"novahooks:register": "nope"}), conf())
    assert error.value.field == "metadata.novahooks:register"
    with pytest.raises(InvalidEvent) as error:
        policy.decide(vm(image_properties={"novahooks_register": ""}), conf())
    assert error.value.field == "image_properties.novahooks_register"


def test_keys_and_lists_are_settings_too(conf: Any) -> None:
    settings_ = conf("""
        [register]
        metadata_key = cmdb:managed
        image_property = cmdb_managed
        """)
    assert not policy.decide(vm(metadata={"cmdb:managed": "false"}), settings_).register
    assert policy.decide(vm(metadata={"novahooks:register": "false"}), settings_).register


def test_image_properties_come_from_nova_system_metadata() -> None:
    """Nova copies image properties into system_metadata as image_<name>."""
    fields = instance_fields({"uuid": str(uuid.uuid4()), "metadata": {"a": 1},
                              "system_metadata": {"image_novahooks_register": "false",
                                                  "image_min_ram": 0, "owner_user_name": "u",
                                                  "image_": "x"}})
    assert fields["image_properties"] == {"novahooks_register": "false", "min_ram": "0"}
    assert fields["metadata"] == {"a": "1"}
    assert instance_fields({"uuid": "u"})["image_properties"] == {}


# -- explain -------------------------------------------------------------------------------

def test_explain_gives_the_decision_or_the_error_as_json(conf: Any) -> None:
    settings_ = conf("[naming project %s]\nfqdn = {hostname}.{project}.cloud.example.com\n"
                     % PROJECT)
    answer = policy.explain(vm(networks=["n"]).to_dict(), settings_)
    assert answer["register"] and answer["fqdn"] == "web-1.%s.cloud.example.com" % PROJECT
    assert answer["fqdn_rule"] == "[naming project %s] fqdn" % PROJECT
    bad = policy.explain(vm(hostname="bad_name", networks=["n"]).to_dict(), settings_)
    assert bad == {"error": "InvalidEvent: invalid hostname: \"bad_name\" is not an RFC 1123 "
                            "host label (letters, digits and inner hyphens only)"}
    assert "error" in policy.explain({"kind": "build"}, settings_)


def test_novahooks_explain_shows_the_rule_and_name_of_a_notification(conf: Any) -> None:
    from tasks.notifications.explain import explain
    from tests.novahooks.notifications import samples
    body = samples.vary("instance-create-end", "0f3c2a1b-1111-4222-8333-944445555666", "web-1")
    project = body["payload"]["nova_object.data"]["tenant_id"]
    settings_ = conf("[naming project %s]\nfqdn = {hostname}.{project}.cloud.example.com\n"
                     "[register]\ndefault = false\nprojects_allow = %s\n" % (project, project))
    answer = explain(samples.envelope(body), settings=settings_)
    assert answer["event"]["kind"] == "build"
    assert answer["policy"]["rule"] == "[register] projects_allow: project %s" % project
    assert answer["policy"]["fqdn"] == "web-1.%s.cloud.example.com" % project
    assert answer["policy"]["fqdn_rule"] == "[naming project %s] fqdn" % project
    assert "policy" not in explain(samples.envelope(body))  # no configuration, no policy


@given(host=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
       project=st.from_regex(r"[a-z0-9]{1,63}", fullmatch=True))
@settings(BASE, max_examples=200)
def test_a_project_template_gives_the_composed_name_or_refuses_it(conf: Any, host: str,
                                                                  project: str) -> None:
    settings_ = conf("[naming project %s]\nfqdn = {hostname}.{project}.{project}.{project}"
                     ".cloud.example.com\n" % project)
    expected = "%s.%s.%s.%s.cloud.example.com" % (host, project, project, project)
    event = vm(hostname=host, networks=["n"], project_id=project)
    if len(expected) <= 253:
        assert policy.decide(event, settings_).fqdn == expected
    else:
        with pytest.raises(InvalidEvent) as error:
            policy.decide(event, settings_)
        assert "[naming project %s] fqdn" % project in str(error.value)
