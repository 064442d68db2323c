"""``novahooks explain`` as an operator runs it: a file or standard input, JSON out."""

import json
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

from tasks.notifications.listener import redacted, transport_url
from novahooks.settings import load_settings
from tests.conftest import ROOT
from tests.novahooks.notifications import samples


def cli(args: List[str], stdin: str = "", config: str = "") -> Tuple[int, Dict[str, Any]]:
    env = {"PATH": "/usr/bin:/bin", "NOVAHOOKS_CONFIG": config}
    result = subprocess.run([sys.executable, "-m", "novahooks.cli", "explain"] + args,
                            input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, cwd=str(ROOT), env=env, timeout=60)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def test_explain_a_file_and_stdin_with_envelope(tmp_path: Path) -> None:
    uuid = str(uuidlib.uuid4())
    body = samples.vary("instance-create-end", uuid, "web-3",
                        [("10.20.3.3", "fa:16:3e:00:03:03", "p-3")])
    path = tmp_path / "n.json"
    path.write_text(json.dumps(body))
    code, answer = cli([str(path)])
    assert code == 0 and answer["event"]["uuid"] == uuid and answer["ignored"] is None
    assert answer["steps"] == ["dns.register", "ldap.register", "ipam.reserve",
                               "inventory.register", "audit.record"]
    code, again = cli(["-"], stdin=json.dumps(samples.envelope(body)))
    assert code == 0 and again["event"]["addresses"] == answer["event"]["addresses"]
    assert again["notification"]["message_id"] == body["message_id"]


def test_explain_malformed_and_unreadable(tmp_path: Path) -> None:
    code, answer = cli(["-"], stdin="{garbage")
    assert code == 1 and answer["malformed"] is True and "not valid JSON" in answer["ignored"]
    code, _ = cli([str(tmp_path / "missing.json")])
    assert code == 2


def test_explain_reads_the_listener_state(tmp_path: Path) -> None:
    """With a configuration, delete.end gets the addresses the listener captured at
    delete.start; explain itself records and forgets nothing."""
    from novahooks.notifications import message
    from novahooks.notifications.plan import decide
    from tasks.notifications.store import State
    config = tmp_path / "novahooks.conf"
    config.write_text("[ledger]\nurl = sqlite:///%s\n" % (tmp_path / "ledger.sqlite"))
    uuid = str(uuidlib.uuid4())
    state = State("sqlite:///%s" % (tmp_path / "ledger.sqlite"))
    start = samples.vary("instance-delete-start", uuid, "db-1",
                         [("10.20.3.4", "fa:16:3e:00:03:04", "p-4")])
    state.apply(decide(message.from_dict(start), state).effects)
    end = json.dumps(samples.vary("instance-delete-end", uuid, "db-1"))
    code, answer = cli(["-"], stdin=end, config=str(config))
    assert code == 0 and [a["address"] for a in answer["event"]["addresses"]] == ["10.20.3.4"]
    assert answer["known"]["addresses"] == ["10.20.3.4"]
    code, alone = cli(["--no-state", "-"], stdin=end, config=str(config))
    assert alone["event"]["addresses"] is None
    assert state.known(uuid) is not None  # explain forgot nothing


def test_transport_url_gets_the_password_from_the_environment() -> None:
    settings = load_settings(environ={
        "NOVAHOOKS_NOTIFICATIONS_TRANSPORT_URL": "rabbit://nova@r1:5672,nova@r2:5672/vh",
        "NOVAHOOKS_NOTIFICATIONS_PASSWORD": "s3cr/t"})
    assert transport_url(settings) == "rabbit://nova:s3cr%2Ft@r1:5672,nova:s3cr%2Ft@r2:5672/vh"
    assert redacted(transport_url(settings)) == "r1:5672,r2:5672"
    assert "s3cr" not in repr(settings.notifications)
