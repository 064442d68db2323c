"""One figure from the bench results: latency distributions, throughput per step, queue depths.

Reads what the bench scripts saved in ``bench/results/*.json`` (any missing
file leaves its panel empty with a note) and writes ``bench/results.png``.
Needs the ``bench`` extra (matplotlib)::

    .venv/bin/python bench/plot.py [--results DIR] [--out FILE]
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, ROOT  # noqa: E402


def load(directory: Path, name: str) -> Optional[Dict[str, Any]]:
    path = directory / ("%s.json" % name)
    return json.loads(path.read_text()) if path.exists() else None


def curve(ax: Any, label: str, stats: Dict[str, Any]) -> None:
    points = stats.get("curve_ms")
    if not points:  # an older result file: the points it has
        points = [[0.5, stats["p50_ms"]], [0.99, stats["p99_ms"]]]
    ax.plot([ms for _, ms in points], [q * 100 for q, _ in points], marker="o", ms=3,
            label=label)


def empty(ax: Any, title: str, name: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no bench/results/%s.json" % name, ha="center", va="center",
            transform=ax.transAxes)


def hook_panel(ax: Any, data: Optional[Dict[str, Any]]) -> None:
    title = "Hook call inside Nova (py3.8) vs LPUSH vs synchronous hook"
    if data is None:
        return empty(ax, title, "hook_overhead")
    curve(ax, "build_instance post-hook (outbox)", data["hook"])
    curve(ax, "raw redis-py LPUSH", data["lpush"])
    if "sync" in data:
        curve(ax, "synchronous hook (5 backends, n=%d)" % data["sync"]["calls"],
              data["sync"]["hook"])
    latency_axes(ax, "ms per call (log)", title, 7)


def latency_axes(ax: Any, xlabel: str, title: str, legend_size: int) -> None:
    """The frame both latency-distribution panels share: log time against percentile."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("percentile")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=legend_size)


def publish_panel(ax: Any, data: Optional[Dict[str, Any]]) -> None:
    title = "Publishing one event's chain to the broker"
    if data is None:
        return empty(ax, title, "publish")
    for name, stats in data["per_event"].items():
        curve(ax, "%s (%.0f ev/s)" % (name, stats["events_per_s"]), stats)
    latency_axes(ax, "ms per event (log)", title, 6)


def throughput_panel(ax: Any, data: Optional[Dict[str, Any]]) -> None:
    title = "VMs created then deleted per second: pipeline vs each backend alone"
    if data is None:
        return empty(ax, title, "throughput")
    names = ["pipeline\n(%d VMs)" % data["pipeline"]["vms"]] + \
        ["%s alone\nx%d" % (b, r["processes"]) for b, r in data["alone"].items()]
    rates = [data["pipeline"]["vm_per_s"]] + [r["vm_per_s"] for r in data["alone"].values()]
    colors = ["C3"] + ["C0"] * (len(rates) - 1)
    if data.get("netbox"):  # IPAM and inventory on one NetBox: the server's own limit
        names.append("netbox:\n%s\nat once x%d" % ("+".join(data["netbox"]["backends"]),
                                                   data["netbox"]["processes"]))
        rates.append(data["netbox"]["vm_per_s"])
        colors.append("C2")
    bars = ax.bar(range(len(rates)), rates, color=colors)
    for bar, rate in zip(bars, rates):
        ax.annotate("%.2f" % rate, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rates)))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("VM/s (log)")
    ax.set_title(title, fontsize=9)


def steps_panel(ax: Any, data: Optional[Dict[str, Any]]) -> None:
    title = "Per step: backend call, lock wait and the rest (%d-VM run, mean)" % (
        data["pipeline"]["vms"] if data else 0)
    if data is None:
        return empty(ax, title, "throughput")
    steps = data["pipeline"]["steps"]
    names = [s["step"] for s in steps]
    bottom = [0.0] * len(steps)
    for key, label in (("backend_ms", "backend calls"), ("lock_wait_ms", "per-instance lock"),
                       ("overhead_ms", "rest: ledger, validation, Celery")):
        values = [max(0.0, s.get(key, 0.0)) for s in steps]
        ax.barh(names, values, left=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("ms per task run (mean)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def depth_panel(ax: Any, data: Optional[Dict[str, Any]], key: str, title: str,
                name: str) -> None:
    if data is None:
        return empty(ax, title, name)
    samples: List[Dict[str, Any]] = data[key] if key in data else data["pipeline"]["depths"]
    columns = [c for c in ("outbox", "ipam", "dns", "ldap", "inventory", "audit", "unacked")
               if any(s.get(c) for s in samples)]
    for column in columns:
        ax.plot([s["t"] for s in samples], [s.get(column, 0) for s in samples], label=column)
    ax.set_xlabel("seconds")
    ax.set_ylabel("messages / events waiting")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def registered_panel(ax: Any, data: Optional[Dict[str, Any]]) -> None:
    """VMs with their build chain's last record over time, per call and batched: the
    hook-to-last-record percentiles of a burst whose hooks all fired within a second."""
    title = "VMs registered over time, NetBox steps per call and batched"
    if data is None:
        return empty(ax, title, "netbox_batching")
    for mode, burst in data["bursts"].items():
        curve = burst["last_record"]["curve_ms"] + [[1.0, burst["last_record"]["max_ms"]]]
        ax.plot([0] + [ms / 1000 for _, ms in curve], [0] + [q * burst["vms"] for q, _ in curve],
                marker=".", label="%s (%.2f VM/s)" % (mode, burst["vm_per_s"]))
    ax.set_xlabel("seconds after the first hook")
    ax.set_ylabel("VMs registered")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def batching_depth_panel(ax: Any, data: Optional[Dict[str, Any]]) -> None:
    title = "Queue depth per step, per call (solid) and batched (dashed)"
    if data is None:
        return empty(ax, title, "netbox_batching")
    for mode, style in (("per_call", "-"), ("batched", "--")):
        samples = data["bursts"][mode]["depths"]
        for column, colour in (("dns", "C0"), ("ldap", "C1"), ("ipam", "C2"),
                               ("inventory", "C3")):
            ax.plot([x["t"] for x in samples], [x.get(column, 0) for x in samples], style,
                    color=colour, label="%s %s" % (column, mode))
    ax.set_xlabel("seconds")
    ax.set_ylabel("messages waiting")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="directory of result JSON")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.png"))
    args = parser.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    directory = Path(args.results)
    hook, publish, throughput, scale = (load(directory, n) for n in
                                        ("hook_overhead", "publish", "throughput", "scale"))
    batching = load(directory, "netbox_batching")  # the latest full run (RESULTS.md section 18)
    fig, axes = plt.subplots(4, 2, figsize=(14, 18))
    hook_panel(axes[0][0], hook)
    publish_panel(axes[0][1], publish)
    throughput_panel(axes[1][0], throughput)
    steps_panel(axes[1][1], throughput)
    depth_panel(axes[2][0], throughput, "depths", "Queue depths, throughput run", "throughput")
    depth_panel(axes[2][1], scale, "worker_depths",
                "Audit queue draining a %s-event burst (scale)" % (scale or {}).get("events", "?"),
                "scale")
    registered_panel(axes[3][0], batching)
    batching_depth_panel(axes[3][1], batching)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
