"""bench/vendordata.py at a small size: it still runs every burst against a real DC.

The numbers are not judged (a loaded machine gives any latency), only that every
VM of every burst got its credential, none failed, and the result file says so.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_vendordata_bench_small(tmp_path: Path) -> None:
    out = tmp_path / "vendordata.json"
    result = subprocess.run([sys.executable, "bench/vendordata.py", "--vms", "3",
                             "--threads", "4", "--retry", "0.2", "--out", str(out)],
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert float(re.search(r"^vendordata_first_p99_ratio=(\S+)$", result.stdout,
                           re.M).group(1)) > 0
    data = json.loads(out.read_text())
    assert sorted(data["bursts"]) == sorted([
        "first reads", "pre-staged, issued ahead", "pre-staged, issued at read", "re-reads",
        "samba-tool computer create"])
    for name, burst in data["bursts"].items():
        assert burst["failed"] == 0, (name, data["failures"])
        assert burst["to_credential"]["n"] == 3
    assert data["bursts"]["re-reads"]["with_credential"] == 3
    assert data["ahead"]["issued"] == 3  # before the burst: its reads only read them back
    assert data["bursts"]["pre-staged, issued ahead"]["with_credential"] == 3
