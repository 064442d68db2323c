"""The ``novahooks`` command: relay, audit verification, demo.

Exit codes scripts can rely on: 0 success, 1 the check or operation failed,
2 usage or configuration error.
"""

import argparse
import logging
import sys
from typing import List, Optional


def _relay(args: argparse.Namespace) -> int:
    from novahooks.relay import Relay, main_loop
    from novahooks.settings import load_settings
    settings = load_settings(args.config)
    if args.once:
        Relay(settings).run(once=True)
        return 0
    main_loop(settings)
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from tasks.backends.audit.jsonl import verify
    try:
        problems = verify(args.path)
    except OSError as exc:
        print("cannot read %s: %s" % (args.path, exc.strerror), file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        print("audit chain BROKEN: %d problem(s)" % len(problems))
        return 1
    print("audit chain intact")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from novahooks.demo import run
    return run(keep=args.keep, count=args.count)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="novahooks", description=__doc__.splitlines()[0])
    top.add_argument("--config", help="INI file (default: $NOVAHOOKS_CONFIG or "
                     "/etc/novahooks/novahooks.conf)")
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="publish outbox events to the broker as Celery chains")
    relay.add_argument("--once", action="store_true", help="drain the outbox, then exit")
    relay.set_defaults(func=_relay)
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain of an audit JSONL file")
    verify.add_argument("path")
    verify.set_defaults(func=_audit_verify)
    demo = sub.add_parser("demo", help="run the whole pipeline on local real servers")
    demo.add_argument("--keep", action="store_true", help="leave servers running at the end")
    demo.add_argument("--count", type=int, default=4, help="number of VMs (default 4)")
    demo.set_defaults(func=_demo)
    return top


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from novahooks.settings import SettingsError
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print("configuration error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
