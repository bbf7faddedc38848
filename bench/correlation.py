"""Correlation at CMDB scale: 50,000 CIs, 150,000 edges, 100,000 alerts.

    .venv/bin/python bench/correlation.py [--cis 50000] [--edges 150000] [--alerts 100000] [--json]

Prints the cost of one correlation decision (p50/p99/max), of the root-cause
and impact computation, and the process RSS; and, when networkx is
installed, the same bounded upstream walk done by networkx, for comparison.
With `--json`, one JSON object with the same figures instead (times in ms).
Figures, not assertions: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from workload import layered_graph

from daemon.config import CorrelationConfig
from daemon.correlation.engine import Correlator
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm.impact import impact
from daemon.itsm.root_cause import root_cause
from daemon.models import Alert, AlertStatus, ConfigurationItem, Severity


def build_cmdb(n_cis: int, n_edges: int, rng: random.Random) -> list[ConfigurationItem]:
    """A layered graph: each CI depends on CIs of the layers below it."""
    _, deps = layered_graph(n_cis, n_edges, rng)
    return [ConfigurationItem(id=ci, name=ci, type=ci.split("-")[0],
                              criticality=1 if ci.startswith("service") else 3,
                              depends_on=tuple(sorted(d))) for ci, d in deps.items()]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def alert(i: int, ci: str, now: datetime) -> Alert:
    return Alert(source="bench", integration="bench", fingerprint=f"a{i}",
                 status=AlertStatus.FIRING, severity=Severity.ERROR, summary="s", labels={},
                 annotations={}, starts_at=now, ends_at=None, generator_url=None,
                 group_key="g", ci_id=ci)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cis", type=int, default=50_000)
    parser.add_argument("--edges", type=int, default=150_000)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        show(figures)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    base_rss = rss_mb()
    started = time.perf_counter()
    items = build_cmdb(args.cis, args.edges, rng)
    topology = Topology.build(items)
    build_s = time.perf_counter() - started
    edges = sum(len(v) for v in topology.up.values())
    figures: dict[str, Any] = {
        "graph": {"cis": len(topology), "edges": edges, "build_s": round(build_s, 3),
                  "rss_mb": round(rss_mb()), "python_start_rss_mb": round(base_rss)}}

    config = CorrelationConfig()
    correlator = Correlator(config=config, topology=TopologyHolder(topology), group_by={})
    window = timedelta(seconds=config.window_seconds)
    now = datetime(2026, 11, 26, tzinfo=UTC)
    # Open incidents as the store reports them to each batch: id → (created, activity, CIs).
    bound: dict[int, tuple[datetime, datetime, set[str]]] = {}
    next_id = 1
    decisions: list[float] = []
    indexes: list[float] = []
    impacts: list[float] = []
    cis = list(topology.cis)
    burst_root = rng.choice(cis)
    batch = 50  # alerts per ingest batch, as the writer would group them
    for start in range(0, args.alerts, batch):
        bound = {k: v for k, v in bound.items() if v[1] >= now - window}
        t0 = time.perf_counter()
        index = correlator.index(bound)
        indexes.append(time.perf_counter() - t0)
        touched: set[int] = set()
        for i in range(start, min(start + batch, args.alerts)):
            # ~5 alerts/s on average, in bursts: a failure somewhere every ~50 alerts
            now += timedelta(milliseconds=rng.choice((10, 50, 100, 200, 600)))
            if rng.random() < 0.02:
                burst_root = rng.choice(cis)
            if rng.random() < 0.9:  # most alerts come from a failing subtree, a few are noise
                near = list(topology.downstream(burst_root, 2, limit=50)) or [burst_root]
                ci = rng.choice(near)
            else:
                ci = rng.choice(cis)
            t0 = time.perf_counter()
            group = correlator.decide(index, ci, now)
            decisions.append(time.perf_counter() - t0)
            group.alerts.append((alert(i, ci, now), i))
        # What the ITSM layer would write: a group's CIs are its stored incident's,
        # those of stored incidents merged into it, and those the plan added.
        merged_cis: dict[int, set[str]] = {}
        for group in index.groups.values():
            if group.merged_into is not None and group.key in bound:
                root = index.find(group.key)
                merged_cis.setdefault(root, set()).update(bound.pop(group.key)[2])
        for group in index.groups.values():
            if group.merged_into is None and group.alerts:
                key = group.key if group.key > 0 else next_id
                next_id += group.key < 0
                created, _, before = bound.get(key, (now, now, set()))
                bound[key] = (created, now,
                              before | group.cis | merged_cis.get(group.key, set()))
                touched.add(key)
        for key in list(touched)[:5]:
            t0 = time.perf_counter()
            impact(topology, root_cause(topology, bound[key][2]))
            impacts.append(time.perf_counter() - t0)

    def ms(values: list[float], p: float) -> float:
        return round(percentile(values, p) * 1000, 3)

    figures["decisions"] = {
        "alerts": len(decisions), "incidents_opened": next_id - 1,
        "p50_ms": ms(decisions, 0.5), "p99_ms": ms(decisions, 0.99),
        "max_ms": round(max(decisions) * 1000, 3),
        "mean_ms": round(statistics.mean(decisions) * 1000, 3)}
    figures["batch_index"] = {"batches": len(indexes), "p50_ms": ms(indexes, 0.5),
                              "p99_ms": ms(indexes, 0.99)}
    figures["root_cause_impact"] = {"samples": len(impacts), "p50_ms": ms(impacts, 0.5),
                                    "p99_ms": ms(impacts, 0.99)}
    figures["rss_after_mb"] = round(rss_mb())
    figures["upstream_walk"] = compare_networkx(topology, items, rng, config.max_depth)
    return figures


def show(f: dict[str, Any]) -> None:
    g, d, b, r = f["graph"], f["decisions"], f["batch_index"], f["root_cause_impact"]
    print(f"graph: {g['cis']:,} CIs, {g['edges']:,} edges, built in {g['build_s']:.2f}s, "
          f"RSS {g['rss_mb']} MB (Python start {g['python_start_rss_mb']} MB)")
    print(f"decisions: {d['alerts']:,} alerts, {d['incidents_opened']:,} incidents opened; "
          f"p50 {d['p50_ms']:.3f} ms, p99 {d['p99_ms']:.3f} ms, "
          f"max {d['max_ms']:.3f} ms, mean {d['mean_ms']:.3f} ms")
    print(f"per-batch index of open incidents: {b['batches']:,} batches; "
          f"p50 {b['p50_ms']:.3f} ms, p99 {b['p99_ms']:.3f} ms")
    print(f"root cause + impact: {r['samples']:,} samples; p50 {r['p50_ms']:.3f} ms, "
          f"p99 {r['p99_ms']:.3f} ms")
    print(f"RSS after the run: {f['rss_after_mb']} MB")
    walk = f["upstream_walk"]
    if walk is None:
        print("networkx: not installed; `pip install networkx` to compare")
    else:
        print(f"bounded upstream walk (depth {walk['depth']}): adjacency dicts "
              f"{walk['ours_us']:.1f} µs, networkx {walk['networkx_us']:.1f} µs")


def compare_networkx(topology: Topology, items: list[ConfigurationItem], rng: random.Random,
                     depth: int) -> dict[str, Any] | None:
    try:
        import networkx as nx  # type: ignore[import-untyped]
    except ImportError:
        return None
    graph = nx.DiGraph()
    graph.add_nodes_from(ci.id for ci in items)
    graph.add_edges_from((ci.id, d) for ci in items for d in ci.depends_on)
    sample = [rng.choice(items).id for _ in range(20_000)]
    fresh = Topology.build(items)  # no memo: compare the walks themselves
    t0 = time.perf_counter()
    for ci in sample:
        fresh.upstream(ci, depth)
    ours = (time.perf_counter() - t0) / len(sample)
    t0 = time.perf_counter()
    for ci in sample:
        nx.single_source_shortest_path_length(graph, ci, cutoff=depth)
    theirs = (time.perf_counter() - t0) / len(sample)
    return {"depth": depth, "ours_us": round(ours * 1e6, 1), "networkx_us": round(theirs * 1e6, 1)}


if __name__ == "__main__":
    main()
