"""What the ingest bench found: the records, the goals of issue 10, and the printed tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO

SCENARIO_TITLES = {
    "am1": "Alertmanager webhooks, 1 alert each",
    "am50": "Alertmanager webhooks, 50 alerts each",
    "pd": "PagerDuty Events v2, single events",
}
GOAL_BATCH_ALERTS_S = 5_000.0  # am50, each database
GOAL_SINGLE_RATIO = 0.5  # am1 and pd against the baseline
GOAL_HALF_RATE_P99_MS = 50.0
GOAL_RSS_MB = 300.0

@dataclass(slots=True)
class Run:
    """One measured run: a closed loop at a concurrency, a paced run, or a load."""

    target: str
    scenario: str
    kind: str  # closed | paced | load
    concurrency: int
    seconds: float
    requests: int
    alerts: int
    req_s: float
    alerts_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_kinds: dict[str, int]
    rss_mb: float
    hwm_mb: float
    server_cpu: float  # cores the server process used on average (1.0 = one core)
    client_cpu: float  # cores all client processes used together
    postgres_cpu: float | None  # cores all PostgreSQL processes used (PostgreSQL runs only)
    load_1m: float
    target_rate: float | None = None  # paced: requests/s asked for
    late: int = 0  # paced: requests the client sent more than 10 ms after due
    ratio: float | None = None  # alerts/s divided by the baseline's, same scenario and concurrency
    open_alerts: int | None = None  # load: firing alerts in the store afterwards
    profile: str | None = None  # py-spy collapsed stacks of the daemon during this run
    alerts_per_commit: float | None = None  # daemon: alerts per committed ingest batch


@dataclass(slots=True)
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    half_rate: list[Run] = field(default_factory=list)
    rss: list[Run] = field(default_factory=list)
    accounting: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)  # sessions that could not run


# --------------------------------------------------------------------------
# goals


def goals(runs: list[Run], half_rate: list[Run], rss: list[Run], *, full_rss: int
          ) -> list[dict[str, Any]]:
    """Each goal of issue 10 against what this run measured."""
    out: list[dict[str, Any]] = []
    databases = sorted({r.target for r in runs if r.target != "baseline"})

    def best(target: str, scenario: str) -> Run | None:
        rows = [r for r in runs if r.target == target and r.scenario == scenario]
        return max(rows, key=lambda r: r.alerts_s) if rows else None

    for db in databases:
        batch = best(db, "am50")
        if batch is not None:
            out.append(_goal("am50: alerts/s, best concurrency", db, "am50", batch.alerts_s,
                             GOAL_BATCH_ALERTS_S, batch.alerts_s >= GOAL_BATCH_ALERTS_S))
        for scenario in ("am1", "pd"):
            ours, ceiling = best(db, scenario), best("baseline", scenario)
            if ours is None or ceiling is None or not ceiling.alerts_s:
                continue
            ratio = ours.alerts_s / ceiling.alerts_s
            out.append(_goal(f"{scenario}: best req/s ÷ best baseline req/s", db, scenario,
                             ratio, GOAL_SINGLE_RATIO, ratio >= GOAL_SINGLE_RATIO))
    for run in half_rate:
        out.append(_goal("p99 latency (ms) at half the best rate", run.target, run.scenario,
                         run.p99_ms, GOAL_HALF_RATE_P99_MS, run.p99_ms < GOAL_HALF_RATE_P99_MS))
    for run in rss:
        opened = run.open_alerts or 0
        met = run.rss_mb < GOAL_RSS_MB if opened >= full_rss else None
        note = "" if opened >= full_rss else f"only {opened:,} open alerts loaded"
        out.append(_goal(f"RSS (MB) with {opened:,} open alerts", run.target, run.scenario,
                         run.rss_mb, GOAL_RSS_MB, met, note))
    return out


def _goal(goal: str, target: str, scenario: str, value: float, limit: float,
          met: bool | None, note: str = "") -> dict[str, Any]:
    return {"goal": goal, "target": target, "scenario": scenario, "value": round(value, 3),
            "limit": limit, "met": met, "note": note}


# --------------------------------------------------------------------------
# tables


def print_tables(report: Report, *, file: TextIO) -> None:
    m = report.machine
    s = report.settings
    print(f"\nincidentd ingest bench, {m['date']}: {m['cpu']}, {m['cores']} cores, "
          f"Python {m['python']}, load {m['load_1m_at_start']:.2f} at start", file=file)
    print(f"{s['seconds']:g} s per run, {s['clients']} client processes, "
          f"warm-up {s['warmup_alerts']:,} open alerts (PagerDuty {s['warmup_pd']:,})",
          file=file)
    for scenario in s["scenarios"]:
        _closed_table(scenario, [r for r in report.runs if r.scenario == scenario], file)
    if report.half_rate:
        _half_rate_table(report.half_rate, file)
    if report.rss:
        _rss_table(report.rss, file)
    if report.accounting:
        print("\nEvery 2xx committed? alerts answered 2xx vs incidentd_alerts_received_total:",
              file=file)
        for a in report.accounting:
            same = "same" if a["acknowledged_alerts"] == a["committed_counter"] else "DIFFERENT"
            print(f"  {a['target']:<10} {a['scenario']:<5} {a['acknowledged_alerts']:>9,} vs "
                  f"{a['committed_counter']:>9,}  {same}", file=file)
    _goals_table(report.goals, file)
    for failure in report.failures:
        print(f"\nFAILED {failure['session']}: {failure['error']}", file=file)
    for summary in report.profiles:
        print(f"\nProfile {summary['file']} ({summary['samples']} busy samples, "
              f"{summary['idle_samples']} waiting left out; shares of the busy ones)", file=file)
        for title in ("by_package", "self", "daemon_inclusive"):
            print(f"  {title}:", file=file)
            for name, pct in summary[title][:12]:
                print(f"    {pct:5.1f} %  {name}", file=file)


def _closed_table(scenario: str, runs: list[Run], file: TextIO) -> None:
    print(f"\n{scenario}: {SCENARIO_TITLES.get(scenario, scenario)} (closed loop)", file=file)
    print(f"  {'target':<10} {'conc':>4} {'alerts/s':>9} {'req/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'errors':>6} {'RSS MB':>7} {'peak':>5} "
          f"{'cpu srv':>7} {'cli':>5} {'pg':>5} {'/commit':>7} {'/base':>6}", file=file)
    for r in runs:
        pg = f"{r.postgres_cpu:.2f}" if r.postgres_cpu is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        per_commit = f"{r.alerts_per_commit:.1f}" if r.alerts_per_commit is not None else "-"
        print(f"  {r.target:<10} {r.concurrency:>4} {r.alerts_s:>9.0f} {r.req_s:>8.0f} "
              f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.max_ms:>7.1f} {r.errors:>6} "
              f"{r.rss_mb:>7.0f} {r.hwm_mb:>5.0f} {r.server_cpu:>7.2f} {r.client_cpu:>5.2f} "
              f"{pg:>5} {per_commit:>7} {ratio:>6}", file=file)


def _half_rate_table(runs: list[Run], file: TextIO) -> None:
    print("\nHalf-rate latency (open loop at half the best closed-loop req/s; latency from "
          "when each request was due)", file=file)
    print(f"  {'target':<10} {'scen':<5} {'asked/s':>8} {'got/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'errors':>6} {'late':>5}", file=file)
    for r in runs:
        print(f"  {r.target:<10} {r.scenario:<5} {r.target_rate or 0:>8.0f} {r.req_s:>8.0f} "
              f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.max_ms:>7.1f} {r.errors:>6} {r.late:>5}",
              file=file)


def _rss_table(runs: list[Run], file: TextIO) -> None:
    print("\nMemory with many open alerts (new alerts in Alertmanager batches of 50; spread: an "
          "incident per request, correlated: the mix's alerts)", file=file)
    print(f"  {'target':<10} {'load':<15} {'firing':>8} {'RSS MB':>7} {'peak MB':>7} "
          f"{'alerts/s':>9} {'seconds':>7} {'errors':>6}", file=file)
    for r in runs:
        print(f"  {r.target:<10} {r.scenario:<15} {r.open_alerts or 0:>8,} {r.rss_mb:>7.0f} "
              f"{r.hwm_mb:>7.0f} {r.alerts_s:>9.0f} {r.seconds:>7.0f} {r.errors:>6}", file=file)


def _goals_table(rows: list[dict[str, Any]], file: TextIO) -> None:
    print("\nGoals (issue 10)", file=file)
    for g in rows:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        extra = f" ({g['note']})" if g["note"] else ""
        print(f"  {g['target']:<10} {g['scenario']:<5} {g['goal']:<42} {g['value']:>9.2f} "
              f"(limit {g['limit']:g}): {verdict}{extra}", file=file)
