"""The ``novahooks`` command: relay, listener, audit verification, operations.

Exit codes scripts can rely on: 0 success, 1 the check or operation failed,
2 usage or configuration error.
"""

import argparse
import json
import logging
import sys
import time
from typing import Any, Dict, List, Optional


def _relay(args: argparse.Namespace) -> int:
    from tasks.relay import Relay, main_loop
    from novahooks.settings import load_settings
    settings = load_settings(args.config)
    if args.once:
        Relay(settings).run(once=True)
        return 0
    main_loop(settings)
    return 0


def _audit(args: argparse.Namespace) -> int:
    from tasks import audit_cli
    return audit_cli.run(args)


def _audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="audit trail: verify, prove, sign, witness")
    audit.set_defaults(func=_audit)
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    key_help = "the log's verifier key NAME+ID+BASE64, or a file holding it (default: " \
               "[audit] verifier_key)"
    verify = audit_sub.add_parser("verify", help="check an audit file: its hash chain, and "
                                  "with --checkpoint its Merkle root, size and signature")
    verify.add_argument("path")
    verify.add_argument("--checkpoint", action="append", default=[], help="a signed "
                        "checkpoint file, or a directory of them (an anchor); repeatable")
    verify.add_argument("--key", help=key_help)
    verify.add_argument("--witness-key", action="append", help="a witness's cosignature key "
                        "to report (repeatable; default: [audit] witness_key)")
    prove = audit_sub.add_parser("prove", help="every record of one VM with its inclusion "
                                 "proof against the latest checkpoint")
    prove.add_argument("instance_uuid")
    prove.add_argument("--checkpoint", help="default: [audit] checkpoint_path")
    prove.add_argument("--log", help="default: [audit] path")
    prove.add_argument("--key", help=key_help)
    prove.add_argument("--json", action="store_true")
    consistency = audit_sub.add_parser("consistency", help="prove that one checkpoint's tree "
                                       "extends another's")
    consistency.add_argument("old")
    consistency.add_argument("new")
    consistency.add_argument("--log", help="default: [audit] path")
    consistency.add_argument("--key", help=key_help)
    consistency.add_argument("--json", action="store_true")
    audit_sub.add_parser("signer", help="run the signer: checkpoints every [audit] "
                         "checkpoint_every records or checkpoint_interval seconds, to the "
                         "anchors; holds the key the workers cannot read")
    ask = audit_sub.add_parser("checkpoint", help="ask the running signer for a checkpoint now")
    ask.add_argument("--status", action="store_true", help="its status instead")
    audit_sub.add_parser("witness", help="run a tlog-witness that cosigns only checkpoints "
                         "consistent with the last one it saw")
    keygen = audit_sub.add_parser("keygen", help="a new Ed25519 key: private key to --out "
                                  "(mode 0400), verifier key printed")
    keygen.add_argument("name", help="key name; a log key's name is the log's origin")
    keygen.add_argument("--out", required=True)
    keygen.add_argument("--witness", action="store_true", help="a witness cosignature key")


def _print(rows: List[Dict[str, Any]], as_json: bool, columns: List[str]) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, sort_keys=True, default=str))
        return
    if not rows:
        print("(none)")
        return
    cells = [{c: _printable(r.get(c, ""))[:60] for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(cell[c]) for cell in cells)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for cell in cells:
        print("  ".join(cell[c].ljust(widths[c]) for c in columns))


def _printable(value: Any) -> str:
    """Tenant-chosen text (host names, errors quoting them) with control characters escaped:
    an ESC sequence in a host name must not drive the operator's terminal."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _dead_letters(args: argparse.Namespace) -> int:
    from tasks import operations
    from novahooks.settings import load_settings
    settings = load_settings(args.config)
    if args.dl_command == "list":
        rows = operations.dead_letters(settings, include_replayed=args.all)
        for row in rows:
            event = json.loads(row["event"])
            row["hostname"] = event.get("hostname")
            row["kind"] = event.get("kind")
            row["created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["created_at"]))
        _print(rows, args.json, ["id", "created", "instance_uuid", "hostname", "kind", "step",
                                 "attempts", "error"])
        return 0
    if args.dl_command == "show":
        from tasks.operations import dead_letter
        found = dead_letter(settings, args.id)
        if found is None:
            print("no dead letter %d" % args.id, file=sys.stderr)
            return 1
        row = found
        row["event"] = json.loads(row["event"])
        print(json.dumps(row, indent=2, sort_keys=True))
        return 0
    if args.id is None and not args.all:
        print("replay: give a dead letter id or --all", file=sys.stderr)
        return 2
    replayed = operations.replay(settings, None if args.all else args.id)
    print("replayed %d dead letter(s): %s" % (len(replayed), ", ".join(map(str, replayed))))
    return 0 if replayed or args.all else 1


def _drift(args: argparse.Namespace) -> int:
    import os
    from tasks import drift
    if args.config:
        os.environ["NOVAHOOKS_CONFIG"] = args.config
    from tasks import drivers, naming
    from tasks.base import book
    from tasks.errors import StepError
    try:
        # the ledger's clock, which dates every chain it records, not this host's
        began = book().now() if args.fix else 0.0
    except StepError as exc:
        print("reconcile: %s" % exc, file=sys.stderr)
        return 1
    try:
        nova = drift.Nova(args.cloud)
        events = nova.events()
    except Exception as exc:  # noqa: BLE001 - openstacksdk raises many kinds
        print("reconcile: Nova's Compute API unreachable or refused: %s: %s"
              % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""),
              file=sys.stderr)
        return 1
    try:
        held = drift.backend_holdings()
    except StepError as exc:
        print("reconcile: cannot read a backend, nothing changed: %s" % exc, file=sys.stderr)
        return 1

    def dns_of(event: Any) -> List[str]:
        name = naming.fqdn_or_none(event)
        if name is None:
            return []
        found = drivers.dns().describe(name, event.uuid, [])
        return found["A"] + found["AAAA"] if found["owned"] else []

    from novahooks.progress import track
    dns = {event.uuid: dns_of(event) for event in track(events, len(events), "asking DNS")}
    rows = drift.compare(events, held, lambda event: dns[event.uuid],
                         expected=drift.policy_hostname)
    _print(rows, args.json, ["instance_uuid", "hostname", "backend", "problem", "detail"])
    if args.fix and rows:
        from tasks.config import settings
        decided = drift.fix(rows, events, held, nova, began, settings().reconcile.prune_after)
        for item in decided:
            if item["chain"] == "none":
                print("reconcile: %s left alone: %s" % (item["instance_uuid"], item["why"]),
                      file=sys.stderr)
        print("published %d repairing chain(s)" % sum(1 for item in decided
                                                       if item["chain"] != "none"),
              file=sys.stderr)
        return 0
    return 1 if rows else 0


def _reconcile(args: argparse.Namespace) -> int:
    from tasks import operations
    from novahooks.settings import load_settings
    if args.nova:
        return _drift(args)
    resumed = operations.reconcile_stalled(load_settings(args.config), args.older_than)
    _print(resumed, args.json, ["event_id", "instance_uuid", "kind", "resumed_at_step",
                                "stalled_for_s"])
    return 0


def _check(args: argparse.Namespace) -> int:
    from tasks import operations
    from novahooks.settings import load_settings
    settings = load_settings(args.config)
    results = operations.check(settings)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("configuration %s: ok" % (settings.source or "(defaults and environment)"))
        for row in results:
            print("%-4s %-15s %s" % ("PASS" if row["ok"] else "FAIL", row["check"], row["detail"]))
    return 0 if all(row["ok"] for row in results) else 1


def _status(args: argparse.Namespace) -> int:
    from tasks import operations
    from novahooks.settings import load_settings
    try:
        report = operations.status(load_settings(args.config))
    except Exception as exc:  # noqa: BLE001 - the broker is the one thing status needs
        print("status unavailable: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 1 if report.get("unconsumed") else 0
    box = report["outbox"]
    print("outbox      %s: %s event(s) waiting%s" % (
        box["path"], "-" if box["depth"] is None else box["depth"],
        ", oldest %ss" % box["oldest_age_s"] if box.get("oldest_age_s") else ""))
    for relay in report["relays"]:
        print("relay       pid %s on %s: seen %ss ago, %s published" % (
            relay["pid"], relay["host"], relay["last_seen_s"], relay["published"]))
    print("queues      " + "  ".join("%s=%s" % item for item in report["queues"].items()))
    print("workers     %s" % (", ".join(report["workers"]) or "NONE answering"))
    print("dead letters %d" % report["dead_letters"])
    if report["gate"] is not None:
        print("gate        %s" % report["gate"]["detail"])
    if report.get("unconsumed"):
        print("FAIL        no live worker consumes %s" % ", ".join(report["unconsumed"]))
    return 1 if report.get("unconsumed") else 0


def _simulate(args: argparse.Namespace) -> int:
    import os
    from tasks import simulate
    from novahooks.settings import load_settings
    if args.config:
        os.environ["NOVAHOOKS_CONFIG"] = args.config
    # The hooks log and swallow every error, as they must inside Nova; here the operator
    # wants a wrong configuration to stop the command instead.
    load_settings(args.config)
    addresses = []
    for item in args.address or []:
        address, _, mac = item.partition(",")
        addresses.append((address, mac or "fa:16:3e:%s" % ":".join(
            "%02x" % b for b in os.urandom(3))))
    from novahooks.progress import track
    if args.count > 1 and (args.uuid or addresses):
        print("simulate: --count makes its own VMs; it takes no --uuid or --address",
              file=sys.stderr)
        return 2
    if args.count > 1:
        vms = [simulate.with_uuid(simulate.Vm("%s-%d" % (args.hostname, i), os_type=args.os_type,
                                              vcpus=args.vcpus, memory_mb=args.memory_mb))
               for i in range(args.count)]
    else:
        vms = [simulate.with_uuid(simulate.Vm(args.hostname, tuple(addresses),
                                              os_type=args.os_type, vcpus=args.vcpus,
                                              memory_mb=args.memory_mb, uuid=args.uuid or ""))]
    action = {"create": simulate.create, "delete": simulate.delete,
              "resize": simulate.resize}[args.action]
    for vm in track(vms, len(vms), "simulate %s" % args.action):
        action(vm)
        print(json.dumps({"action": args.action, "uuid": vm.uuid, "hostname": vm.hostname,
                          "addresses": [a for a, _ in vm.addresses]}))
    return 0


def _listen(args: argparse.Namespace) -> int:
    from tasks.notifications.listener import main_loop
    from novahooks.settings import load_settings
    main_loop(load_settings(args.config))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from tasks.notifications.explain import explain
    from novahooks.notifications.state import EmptyState
    from tasks.notifications.store import State
    from novahooks.settings import load_settings
    try:
        raw = sys.stdin.buffer.read() if args.path == "-" else open(args.path, "rb").read()
    except OSError as exc:
        print("cannot read %s: %s" % (args.path, exc.strerror), file=sys.stderr)
        return 2
    state = EmptyState()  # type: EmptyState
    settings = load_settings(args.config)
    if not args.no_state and settings.source is not None:
        state = State(settings.ledger.url)
    # With a configuration, also which naming/opt-in rule applies (tasks/policy.py).
    answer = explain(raw, state, settings if settings.source is not None else None)
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 1 if answer["malformed"] else 0


def _vendordata(args: argparse.Namespace) -> int:
    from novahooks.settings import load_settings
    if args.generate_key:
        import os
        from tasks.vendordata.credentials import generate_key
        fd = os.open(args.generate_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key() + "\n")
        print("wrote a Fernet key to %s ([vendordata] secret_key_file)" % args.generate_key)
        return 0
    from tasks.vendordata.web import serve
    from tasks.errors import StepError
    try:
        serve(load_settings(args.config))
    except StepError as exc:
        print("vendordata: %s" % exc, file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="novahooks", description=__doc__.splitlines()[0])
    top.add_argument("--config", help="INI file (default: $NOVAHOOKS_CONFIG or "
                     "/etc/novahooks/novahooks.conf)")
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="publish outbox events to the broker as Celery chains")
    relay.add_argument("--once", action="store_true", help="drain the outbox, then exit")
    relay.set_defaults(func=_relay)
    _audit_parser(sub)
    check = sub.add_parser("check", help="validate configuration and reach every backend")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=_check)
    status = sub.add_parser("status", help="outbox, relays, queues, workers, dead letters")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    dl = sub.add_parser("dead-letters", help="events a step gave up on")
    dl_sub = dl.add_subparsers(dest="dl_command", required=True)
    dl_list = dl_sub.add_parser("list", help="dead letters not yet replayed")
    dl_list.add_argument("--all", action="store_true", help="include replayed ones")
    dl_list.add_argument("--json", action="store_true")
    dl_show = dl_sub.add_parser("show", help="one dead letter with its event")
    dl_show.add_argument("id", type=int)
    dl_replay = dl_sub.add_parser("replay", help="publish the failed step and the rest of "
                                  "its chain again, after the cause is fixed")
    dl_replay.add_argument("id", type=int, nargs="?")
    dl_replay.add_argument("--all", action="store_true")
    dl.set_defaults(func=_dead_letters)
    reconcile = sub.add_parser("reconcile", help="finish chains that stopped half-way; with "
                               "--nova, compare Nova's VMs with every backend")
    reconcile.add_argument("--nova", action="store_true",
                           help="drift between Nova (openstacksdk: clouds.yaml or OS_* "
                           "variables) and the backends: missing, stale, mismatched")
    reconcile.add_argument("--cloud", help="clouds.yaml entry (default: OS_CLOUD / OS_*)")
    reconcile.add_argument("--fix", action="store_true",
                           help="with --nova: publish the chains that repair the drift")
    reconcile.add_argument("--older-than", type=float, default=None,
                           help="seconds without progress (default: [ledger] stalled_after)")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(func=_reconcile)
    sim = sub.add_parser("simulate", help="call the installed Nova hooks as Nova would "
                         "(resize, which has no hook, goes to the outbox like a notification)")
    sim.add_argument("action", choices=["create", "delete", "resize"])
    sim.add_argument("--hostname", required=True)
    sim.add_argument("--uuid", help="instance UUID (default: a new one; give it for delete)")
    sim.add_argument("--address", action="append", help="ADDRESS[,MAC]; repeatable")
    sim.add_argument("--os-type", default="linux")
    sim.add_argument("--vcpus", type=int, default=1)
    sim.add_argument("--memory-mb", type=int, default=2048)
    sim.add_argument("--count", type=int, default=1,
                     help="this many VMs named HOSTNAME-0.. (no addresses: the pre-boot "
                     "steps only), with a progress bar on a terminal")
    sim.set_defaults(func=_simulate)
    listen = sub.add_parser("listen", help="turn Nova's and Neutron's notifications "
                            "(oslo.messaging, [notifications]) into outbox events")
    listen.set_defaults(func=_listen)
    explain = sub.add_parser("explain", help="print the event and steps one notification "
                             "would yield, or why it is ignored; enqueues nothing")
    explain.add_argument("path", help="notification JSON, with or without the oslo.messaging "
                         "envelope; - for standard input")
    explain.add_argument("--no-state", action="store_true", help="ignore what the listener "
                         "recorded (captured addresses, ports, floating IPs)")
    explain.set_defaults(func=_explain)
    vendordata = sub.add_parser("vendordata", help="serve Nova's DynamicJSON vendordata: "
                                "pre-boot registration and a one-time join credential")
    vendordata.add_argument("--generate-key", metavar="PATH", help="write a new key for "
                            "[vendordata] secret_key_file (mode 0600) and exit")
    vendordata.set_defaults(func=_vendordata)
    return top


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    from novahooks import logs
    logs.setup(logging.DEBUG if args.verbose else logging.INFO)
    from novahooks.settings import SettingsError
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print("configuration error: %s" % exc, file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # A base install (the hook side, as on a Nova host) has the command but not the
        # worker side most subcommands need: one line that says what to install.
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "novahooks":
            raise
        print("novahooks %s needs the worker side (module %r is not installed): pip install "
              "novahooks-worker" % (args.command, missing), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
