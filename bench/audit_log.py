"""The audit log: appends with checkpoints on against the chained file, proofs and verify times.

Two parts, in one run::

    .venv/bin/python bench/audit_log.py [--records 300] [--rounds 6] [--sizes 10000,100000]

1. **Append rate**, side by side: the chained ``JsonlAudit`` as it was before the
   Merkle log (read from git, commit ``BASELINE``) against today's writer (RFC 8785
   records) with ``novahooks audit signer`` running as its own process, making a
   checkpoint every ``--every`` records (or each second) into a WORM-style anchor
   directory. Rounds alternate between the two (each appends ``--records``
   audit-step-shaped records, one ``fsync`` each, as the audit worker does) into
   files in one directory; the medians of the per-round rates give
   ``append_ratio=R`` (Merkle with checkpoints / chained; the goal is >= 0.9).
2. **Proofs at scale**: for each size, a log of that many records (chained and
   canonical as the writer makes them, written without fsync), one checkpoint,
   then the time of a full ``verify`` against it (read, hash, root), of the
   chain-only verify, of one ``prove`` and of a consistency proof from half
   the size; and the proofs' sizes in hashes and bytes, against log2(size).
"""

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, arguments, log, ratio, save, table  # noqa: E402

#: The last commit whose audit file was only hash-chained.
BASELINE = "a9fcc0e"


def baseline_writer(workdir: Path) -> Any:
    """The chained JsonlAudit of BASELINE, imported from its source in git."""
    source = subprocess.run(["git", "show", "%s:tasks/backends/audit/jsonl.py" % BASELINE],
                            cwd=str(ROOT), check=True, stdout=subprocess.PIPE).stdout
    path = workdir / "jsonl_chained.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("jsonl_chained", str(path))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.JsonlAudit


def entry(i: int) -> Dict[str, Any]:
    """What tasks/audit.py records for a finished build."""
    now = time.time()
    return {"time": now, "instance_uuid": str(uuid.uuid4()), "hostname": "vm-%06d" % i,
            "kind": "build", "event_id": str(uuid.uuid4()), "source": "notification",
            "emitted_at": now - 0.5, "stage": "done", "step": None, "error": None,
            "attempts": None, "addresses": ["10.20.%d.%d" % (i // 250 % 250, i % 250 + 2),
                                            "2001:db8:20::%x" % i],
            "policy": {"register": True, "rule": "default",
                       "fqdn": "vm-%06d.cloud.example.test." % i}}


def start_signer(workdir: Path, path: Path, every: int) -> Any:
    from tasks.backends.audit import note
    skey, vkey = note.generate("bench.novahooks.test/audit")
    key = workdir / "log.key"
    key.write_text(skey)
    key.chmod(0o400)
    config = workdir / "signer.conf"
    config.write_text("[audit]\npath = %s\nverifier_key = %s\nsigner_key_path = %s\n"
                      "signer_socket = %s\ncheckpoint_every = %d\ncheckpoint_interval = 1\n"
                      "anchor_dir = %s\n" % (path, vkey, key, workdir / "signer.sock", every,
                                             workdir / "worm"))
    proc = subprocess.Popen([sys.executable, "-m", "novahooks.cli", "--config", str(config),
                             "audit", "signer"], stdout=open(workdir / "signer.log", "ab"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (workdir / "signer.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("signer did not start: %s" % (workdir / "signer.log").read_text())
        time.sleep(0.1)
    return proc


def appends(workdir: Path, records: int, rounds: int, every: int) -> Dict[str, Any]:
    from tasks.backends.audit.jsonl import JsonlAudit
    chained_path, merkle_path = workdir / "chained.jsonl", workdir / "merkle.jsonl"
    writers = {"chained": baseline_writer(workdir)(SimpleNamespace(path=str(chained_path))),
               "merkle": JsonlAudit(SimpleNamespace(path=str(merkle_path)))}
    signer = start_signer(workdir, merkle_path, every)
    rates: Dict[str, List[float]] = {"chained": [], "merkle": []}
    try:
        n = 0
        for number in range(rounds):
            order = ("chained", "merkle") if number % 2 == 0 else ("merkle", "chained")
            for name in order:
                started = time.perf_counter()
                for _ in range(records):
                    writers[name].record(entry(n))
                    n += 1
                rates[name].append(records / (time.perf_counter() - started))
            log("round %d: chained %.0f/s, merkle %.0f/s" % (number + 1, rates["chained"][-1],
                                                            rates["merkle"][-1]))
        time.sleep(1.5)  # the signer's last checkpoint
    finally:
        signer.terminate()
        signer.wait(20)
    checkpoints = len(list((workdir / "worm").glob("*.checkpoint")))
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {"records_per_round": records, "rounds": rounds, "checkpoint_every": every,
            "rates": rates, "median": median, "checkpoints": checkpoints,
            "ratio": ratio(median["merkle"], median["chained"])}


def generate(path: Path, size: int) -> None:
    """A log as the writer makes it (chain, canonical JSON), without a write per record.

    For these records (ASCII keys and strings, integral floats made ints as the writer
    does, other floats between 1e-4 and 1e16) the standard library's sorted, compact
    JSON is byte for byte RFC 8785, and four times faster than rfc8785's pure Python:
    checked against it on the first records.
    """
    import json

    import rfc8785

    from tasks.backends.audit import jsonl
    prev = jsonl.GENESIS
    with open(path, "wb") as handle:
        for seq in range(1, size + 1):
            record = jsonl.as_parsed(dict(entry(seq), seq=seq, prev=prev))
            record["hash"] = prev = jsonl._digest(record)
            line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            if seq <= 100 and line != rfc8785.dumps(record):
                raise AssertionError("not canonical: %r" % line)
            handle.write(line + b"\n")


def timed(action: Any) -> Any:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def proofs(workdir: Path, size: int) -> Dict[str, Any]:
    import json
    import math

    from tasks.backends.audit import checkpoint, jsonl, note
    from tasks.backends.audit.checkpoint import Checkpoint
    from tasks.backends.audit.log import Log
    from tasks.backends.audit.verify import consistency, prove, verify_log
    path = workdir / ("log-%d.jsonl" % size)
    _, generated = timed(lambda: generate(path, size))
    skey, _ = note.generate("bench.novahooks.test/scale")
    signer = note.Signer(skey)
    current = Log(str(path))
    _, tree_s = timed(current.catch_up)
    cp = Checkpoint(signer.name, size, current.tree.root())
    signed = checkpoint.open_checkpoint(checkpoint.sign(cp, signer), signer.verifier())
    half = checkpoint.open_checkpoint(checkpoint.sign(
        Checkpoint(signer.name, size // 2, current.tree.root(size // 2)), signer),
        signer.verifier())
    report, verify_s = timed(lambda: verify_log(str(path), [signed]))
    assert report.problems == [], report.problems[:3]
    chain, chain_s = timed(lambda: jsonl.verify(str(path)))
    assert chain == []
    target = json.loads(current.record(size // 3))["instance_uuid"]
    proven, prove_s = timed(lambda: prove(str(path), signed, target))
    extension, consistency_s = timed(lambda: consistency(str(path), half, signed))
    inclusion = len(proven["records"][0]["proof"])
    return {"size": size, "bytes": os.path.getsize(path), "generate_s": generated,
            "tree_s": tree_s, "verify_s": verify_s, "chain_verify_s": chain_s,
            "prove_s": prove_s, "consistency_s": consistency_s,
            "inclusion_hashes": inclusion, "inclusion_bytes": inclusion * 32,
            "consistency_hashes": len(extension["proof"]),
            "consistency_bytes": len(extension["proof"]) * 32,
            "log2": math.log2(size)}


def main() -> int:
    parser = arguments("audit_log", __doc__)
    parser.add_argument("--records", type=int, default=300, help="appends per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (alternating)")
    parser.add_argument("--every", type=int, default=100, help="[audit] checkpoint_every")
    parser.add_argument("--sizes", default="10000,100000",
                        help="log sizes for the proofs (add 1000000: about a minute each "
                        "for generating and verifying)")
    parser.add_argument("--dir", help="where the logs go (default: a temporary directory "
                        "under /tmp: the disk fsync costs are those of that file system)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-audit-bench-", dir=args.dir))
    log("logs in %s" % workdir)
    load = os.getloadavg()[0]
    append = appends(workdir, args.records, args.rounds, args.every)
    log(table(["writer", "median records/s", "rounds"],
              [(name, append["median"][name], len(append["rates"][name]))
               for name in ("chained", "merkle")]))
    log("checkpoints signed during the merkle rounds: %d" % append["checkpoints"])
    scale = [proofs(workdir, int(size)) for size in args.sizes.split(",") if size]
    log(table(["records", "verify s", "chain-only s", "prove s", "consistency s",
               "inclusion hashes", "consistency hashes", "log2 n"],
              [(r["size"], r["verify_s"], r["chain_verify_s"], r["prove_s"],
                r["consistency_s"], r["inclusion_hashes"], r["consistency_hashes"], r["log2"])
               for r in scale]))
    path = save("audit_log", {"append": append, "scale": scale, "load_at_start": load},
                args.json)
    log("results in %s" % path)
    log("append_ratio=%.3f" % append["ratio"])
    log("checkpoints=%d" % append["checkpoints"])
    import shutil
    shutil.rmtree(str(workdir), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
