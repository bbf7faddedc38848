"""`bench/ingest.py` still runs: the smallest mode, on SQLite, checked for shape and errors.

Figures are never asserted (the machine is shared and noisy); this only proves
the bench starts the daemon and the baseline, drives every scenario, and
reports what the README says it reports, with no failed request.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .harness import REPO_ROOT

pytestmark = pytest.mark.e2e

RUN_KEYS = {"target", "scenario", "kind", "concurrency", "requests", "alerts", "req_s",
            "alerts_s", "p50_ms", "p99_ms", "max_ms", "errors", "rss_mb", "hwm_mb",
            "server_cpu", "client_cpu", "ratio"}


def test_bench_ingest_quick_mode_reports_every_figure_without_errors() -> None:
    # Two of the three scenarios (am1 is am50's code with one alert a request): under 30 s.
    argv = [sys.executable, str(REPO_ROOT / "bench" / "ingest.py"), "--quick", "--json",
            "--database", "sqlite", "--duration", "1", "--concurrency", "2",
            "--scenarios", "am50,pd", "--warmup", "100", "--rss-alerts", "200",
            "--rss-mode", "spread"]
    try:
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"bench/ingest.py did not finish in 180 s; stderr:\n{err.stderr}",
                    pytrace=False)
    assert done.returncode == 0, f"rc={done.returncode}\nstderr:\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout)

    assert set(report) >= {"machine", "settings", "runs", "half_rate", "rss", "accounting",
                           "goals"}
    assert report["machine"]["cores"] and report["machine"]["cpu"]
    runs = report["runs"]
    seen = {(r["target"], r["scenario"]) for r in runs}
    assert seen == {(t, s) for t in ("baseline", "sqlite") for s in ("am50", "pd")}
    for run in runs + report["half_rate"] + report["rss"]:
        assert set(run) >= RUN_KEYS, sorted(RUN_KEYS - set(run))
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run
        assert run["rss_mb"] > 0, run
    for run in runs:
        if run["target"] == "sqlite":
            assert run["ratio"] is not None, run  # baseline of the same run to compare with
            assert run["alerts_per_commit"] >= 1, run  # read from the daemon's histogram
    assert {r["scenario"] for r in report["half_rate"]} == {"am50", "pd"}
    (rss,) = report["rss"]
    assert rss["open_alerts"] == 200, rss  # every alert of the load answered 2xx is firing
    for account in report["accounting"]:  # every alert answered 2xx was committed
        assert account["acknowledged_alerts"] == account["committed_counter"], account
    assert {g["target"] for g in report["goals"]} == {"sqlite"}


def test_bench_statements_counts_every_batch() -> None:
    # The in-process count of statements per batch and calls per alert, smallest mode.
    argv = [sys.executable, str(REPO_ROOT / "bench" / "statements.py"), "--json",
            "--warmup", "100", "--batches", "3", "--size", "20", "--profile", "1", "--where"]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"rc={done.returncode}\nstderr:\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout)
    assert report["batches"] == 3
    counts = report["statements_per_batch"]
    assert 0 < counts["min"] <= counts["mean"] <= counts["max"], counts
    # Every statement is put down to the daemon function that sent it.
    assert report["by_kind_per_batch"] and not any(
        kind.endswith("(?)") for kind in report["by_kind_per_batch"]), report
    assert report["calls_per_alert"] > 0


def test_bench_correlation_runs_on_a_small_graph() -> None:
    argv = [sys.executable, str(REPO_ROOT / "bench" / "correlation.py"), "--json",
            "--cis", "2000", "--edges", "5000", "--alerts", "2000"]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"rc={done.returncode}\nstderr:\n{done.stderr[-4000:]}"
    figures = json.loads(done.stdout)
    assert figures["graph"]["cis"] == 2000
    assert figures["decisions"]["alerts"] == 2000
    # Incidents were opened and grew: the index and root cause were exercised.
    assert 0 < figures["decisions"]["incidents_opened"] < 2000
    assert figures["batch_index"]["batches"] == 40
    assert figures["root_cause_impact"]["samples"] > 0
