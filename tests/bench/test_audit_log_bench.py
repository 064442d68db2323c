"""bench/audit_log.py at small sizes: it still runs, signs checkpoints and reports its ratio.

The numbers are not judged (a loaded machine gives any rate), only that both
writers appended, the signer checkpointed meanwhile and the proofs have the
size a tree of that many records must give.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_audit_log_bench_small(tmp_path: Path) -> None:
    out = tmp_path / "audit_log.json"
    result = subprocess.run([sys.executable, "bench/audit_log.py", "--records", "20",
                             "--rounds", "2", "--every", "10", "--sizes", "1000,3000",
                             "--json", str(out)], cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    values = dict(re.findall(r"^(\w+)=(\S+)$", result.stdout, re.M))
    assert float(values["append_ratio"]) > 0
    assert int(values["checkpoints"]) >= 1
    data = json.loads(out.read_text())
    assert [len(r) for r in data["append"]["rates"].values()] == [2, 2]
    for row in data["scale"]:
        assert row["inclusion_hashes"] == math.ceil(math.log2(row["size"]))
        assert row["consistency_hashes"] <= 2 * math.ceil(math.log2(row["size"]))
