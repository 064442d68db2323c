"""Settings: file, environment, secret files, and errors that name the key."""

from pathlib import Path

import pytest

from novahooks.settings import SettingsError, load_settings


def test_file_env_and_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    conf = tmp_path / "n.conf"
    conf.write_text("[directory]\nurl = ldaps://x\npassword_file = %s\n[dns]\nport = 5300\n"
                    "reverse_zones = 10.in-addr.arpa, 8.b.d.0.1.0.0.2.ip6.arpa\n" % secret)
    settings = load_settings(str(conf), {"NOVAHOOKS_DNS_PORT": "5301"})
    assert settings.directory.password.reveal() == "s3cret"
    assert "s3cret" not in repr(settings.directory)
    assert settings.dns.port == 5301
    assert settings.dns.reverse_zones == ["10.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"]


def test_inline_comments_are_not_part_of_values(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text("[retry]\nmax_retries = 8   ; why eight\n")
    assert load_settings(str(conf), {}).retry.max_retries == 8


def test_every_wrong_key_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text("[dns]\nport = fifty\nzon = x\n[dnss]\n[directory]\nstarttls = maybe\n"
                    "[ledger]\non_permanent_failure = retry\nsqlite_synchronous = off\n"
                    "[inventory]\non_delete = archive\n")
    with pytest.raises(SettingsError) as info:
        load_settings(str(conf), {})
    text = str(info.value)
    assert "[dns] port: 'fifty' is not a valid int" in text
    assert "[dns] zon: unknown key" in text
    assert "unknown section [dnss]" in text
    assert "[directory] starttls: 'maybe' is not a boolean" in text
    assert "[ledger] on_permanent_failure: 'retry' is not keep or undo" in text
    assert "[ledger] sqlite_synchronous: 'off' is not normal or full" in text
    assert "[inventory] on_delete: 'archive' is not delete or decommission" in text


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text("[ipam]\ntoken_file = %s\n" % (tmp_path / "nope"))
    with pytest.raises(SettingsError, match=r"\[ipam\] token_file: cannot read"):
        load_settings(str(conf), {})


def test_a_batch_below_one_vm_or_a_negative_wait_is_refused_naming_the_key() -> None:
    assert load_settings(None, {}).inventory.batch_size == 50
    with pytest.raises(SettingsError) as refused:
        load_settings(None, {"NOVAHOOKS_IPAM_BATCH_SIZE": "0",
                             "NOVAHOOKS_INVENTORY_BATCH_WAIT": "-1"})
    assert "[ipam] batch_size: 0 is below 1" in str(refused.value)
    assert "[inventory] batch_wait: -1 is below 0" in str(refused.value)


def test_the_preflight_watch_is_off_by_default_and_not_negative() -> None:
    assert load_settings(None, {}).ipam.preflight_watch == 0.0
    assert load_settings(None, {"NOVAHOOKS_IPAM_PREFLIGHT_WATCH": "2"}).ipam.preflight_watch \
        == 2.0
    with pytest.raises(SettingsError) as refused:
        load_settings(None, {"NOVAHOOKS_IPAM_PREFLIGHT_WATCH": "-1",
                             "NOVAHOOKS_IPAM_BATCH_SIZE": "0"})
    assert "[ipam] preflight_watch: -1.0 is below 0" in str(refused.value)
    assert "[ipam] batch_size: 0 is below 1" in str(refused.value)
