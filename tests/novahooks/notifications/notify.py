"""Publish notifications with oslo.messaging's Notifier, in a process of its own.

oslo.messaging imports eventlet, whose DNS support loads a second copy of
dnspython's modules: a test process that did so would hand the DNS driver's
cached TSIG names to a dnspython that no longer recognises them. Nova and
Neutron publish from processes of their own too.

Reads one JSON object per line on standard input (exchange, topic, publisher,
priority, event_type, payload), publishes it, and answers ``ok`` per line.
"""

import json
import sys
from typing import Any, Dict, Tuple


def main(url: str) -> None:
    import oslo_messaging
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf([], project="novahooks-test", default_config_files=[], default_config_dirs=[])
    notifiers: Dict[Tuple[str, str, str], Any] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        key = (msg["exchange"], msg["topic"], msg["publisher"])
        if key not in notifiers:
            # The driver reads control_exchange when the transport is made (Nova sets
            # "nova" this way in nova/config.py; Neutron "neutron").
            oslo_messaging.set_transport_defaults(msg["exchange"])
            transport = oslo_messaging.get_notification_transport(conf, url=url)
            notifiers[key] = oslo_messaging.Notifier(
                transport, publisher_id=msg["publisher"], driver="messagingv2",
                topics=[msg["topic"]])
        notifier = notifiers[key]
        send = notifier.error if msg["priority"] == "ERROR" else notifier.info
        send({}, msg["event_type"], msg["payload"])
        sys.stdout.write("ok\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
