"""The ``novahooks audit`` subcommands; novahooks/cli.py defines their arguments.

Exit codes as for every command: 0 the log checks out (or the service ran),
1 something is wrong with the log or a proof, 2 usage, configuration or an
unreadable file.
"""

import argparse
import glob
import json
import os
import sys
from typing import Callable, Dict, List

from novahooks.settings import AuditSettings, load_settings
from tasks.backends.audit import anchors, checkpoint, note
from tasks.backends.audit.merkle import ProofError


def _config(args: argparse.Namespace) -> AuditSettings:
    return load_settings(args.config).audit


def _log_key(args: argparse.Namespace, config: AuditSettings) -> note.Verifier:
    text = getattr(args, "key", None) or config.verifier_key
    if not text:
        raise note.NoteError("no log key: give --key NAME+ID+BASE64 or set [audit] "
                             "verifier_key")
    if os.path.exists(text):
        with open(text, encoding="utf-8") as handle:
            text = handle.read()
    return note.Verifier(text)


def _witness_keys(args: argparse.Namespace, config: AuditSettings) -> List[note.Verifier]:
    keys = list(getattr(args, "witness_key", None) or [])
    if config.witness_key:
        keys.append(config.witness_key)
    return [note.Verifier(k) for k in keys]


def _checkpoint_paths(given: List[str]) -> List[str]:
    paths = []
    for path in given:
        paths.extend(sorted(glob.glob(os.path.join(path, "*.checkpoint")))
                     if os.path.isdir(path) else [path])
    return paths


def verify(args: argparse.Namespace) -> int:
    from tasks.backends.audit.jsonl import verify as chain
    from tasks.backends.audit.verify import verify_log
    if not args.checkpoint:
        problems = chain(args.path)
        for problem in problems:
            print(problem)
        if problems:
            print("audit chain BROKEN: %d problem(s)" % len(problems))
            return 1
        print("audit chain intact (no --checkpoint: a cut tail or a file rewritten from "
              "scratch cannot be seen without one)")
        return 0
    config = _config(args)
    key = _log_key(args, config)
    witnesses = _witness_keys(args, config)
    signed, problems = [], []
    for path in _checkpoint_paths(args.checkpoint):
        try:
            signed.append(checkpoint.read(path, key, witnesses, origin=key.name))
        except note.NoteError as exc:
            problems.append("checkpoint %s" % exc)
    if not signed and not problems:
        problems.append("no checkpoint file found in %s" % ", ".join(args.checkpoint))
    report = verify_log(args.path, signed)
    problems.extend(report.problems)
    for line in problems + report.notes:
        print(line)
    if problems:
        print("audit log BROKEN (%s): %d problem(s)" % (", ".join(report.kinds()) or
                                                        "bad checkpoint", len(problems)))
        return 1
    largest = max(s.checkpoint.size for s in signed)
    cosigned = sorted({name for s in signed for name, _ in s.cosigned})
    print("audit log intact: %d records, the first %d match %d signed checkpoint(s) of %s%s"
          % (report.size, largest, len(signed), key.name,
             "; cosigned by " + ", ".join(cosigned) if cosigned else ""))
    return 0


def prove(args: argparse.Namespace) -> int:
    from tasks.backends.audit.verify import prove as prove_
    config = _config(args)
    signed = checkpoint.read(args.checkpoint or config.latest_checkpoint(),
                             _log_key(args, config), _witness_keys(args, config))
    answer = prove_(args.log or config.path, signed, args.instance_uuid)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0 if answer["records"] or answer["not_yet_checkpointed"] else 1
    cp = answer["checkpoint"]
    print("checkpoint %s size %d root %s%s" % (cp["origin"], cp["size"], cp["root"],
                                              " cosigned by " + ", ".join(answer["cosigned_by"])
                                              if answer["cosigned_by"] else ""))
    for item in answer["records"]:
        print("line %d, leaf %d (%d-hash proof, verified): %s" % (
            item["index"] + 1, item["index"], len(item["proof"]),
            json.dumps(item["record"], sort_keys=True)))
        print("  leaf %s" % item["leaf_hash"])
        for digest in item["proof"]:
            print("  path %s" % digest)
    for item in answer["not_yet_checkpointed"]:
        print("line %d, leaf %d (after the checkpoint, not proven yet): %s"
              % (item["index"] + 1, item["index"], json.dumps(item["record"], sort_keys=True)))
    if not answer["records"] and not answer["not_yet_checkpointed"]:
        print("no record of instance %s" % args.instance_uuid)
        return 1
    return 0


def consistency(args: argparse.Namespace) -> int:
    from tasks.backends.audit.verify import consistency as consistency_
    config = _config(args)
    key = _log_key(args, config)
    old, new = (checkpoint.read(p, key, origin=key.name) for p in (args.old, args.new))
    answer = consistency_(args.log or config.path, old, new)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    print("size %d extends size %d (%d-hash proof, verified against both roots):"
          % (answer["new"]["size"], answer["old"]["size"], len(answer["proof"])))
    for digest in answer["proof"]:
        print("  %s" % digest)
    return 0


def signer(args: argparse.Namespace) -> int:
    from tasks.audit_signer import main_loop
    settings = load_settings(args.config)
    return main_loop(settings.audit, metrics_address=settings.metrics.address)


def ask_checkpoint(args: argparse.Namespace) -> int:
    from tasks.audit_signer import ask
    config = _config(args)
    sys.stdout.write(ask(config.signer_socket, "status" if args.status else "checkpoint"))
    return 0


def witness(args: argparse.Namespace) -> int:
    import signal
    import threading

    from tasks.audit_witness import serve
    server = serve(_config(args))
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()
    server.shutdown()
    return 0


def keygen(args: argparse.Namespace) -> int:
    skey, vkey = note.generate(args.name, note.COSIGNATURE_V1 if args.witness else
                               note.ED25519)
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        print("%s exists: not overwriting a key" % args.out, file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as handle:
        handle.write(skey + "\n")
    print(vkey)
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "verify": verify, "prove": prove, "consistency": consistency, "signer": signer,
    "checkpoint": ask_checkpoint, "witness": witness, "keygen": keygen}


def run(args: argparse.Namespace) -> int:
    from tasks.errors import StepError
    try:
        return COMMANDS[args.audit_command](args)
    except OSError as exc:
        print("cannot read %s: %s" % (getattr(exc, "filename", None) or "file", exc.strerror),
              file=sys.stderr)
        return 2
    except (note.NoteError, ProofError, anchors.Refused) as exc:
        print("audit: %s" % exc, file=sys.stderr)
        return 1
    except StepError as exc:
        print("audit: %s" % exc, file=sys.stderr)
        return 2

