"""`incidentd replay` and the CMDB/binding checks of `incidentd check-config`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
OUTAGE = ROOT / "tests" / "fixtures" / "replay" / "outage.jsonl"
CMDB = ROOT / "config" / "cmdb.example.yaml"


def incidentd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True,
                          text=True, check=False, cwd=ROOT)


def test_replay_prints_the_incidents_and_is_repeatable() -> None:
    first = incidentd("replay", str(OUTAGE), "--cmdb", str(CMDB), "--json")
    assert first.returncode == 0, first.stderr
    second = incidentd("replay", str(OUTAGE), "--cmdb", str(CMDB), "--json")
    assert first.stdout == second.stdout
    incidents = [json.loads(line) for line in first.stdout.splitlines()]
    db, redis, report = incidents
    # api errors, slow queries, the host going down and a synthetic check: one incident,
    # rooted at the database host, raised to critical by the host alert
    assert db["root_cause_ci"] == "db-01.prod.example.com"
    assert db["severity"] == "critical"
    assert db["impacted_services"] == ["svc-checkout"]
    assert {a["fingerprint"]: a["role"] for a in db["alerts"]} == {
        "api-errors": "symptom", "pg-slow": "symptom", "db01-down": "root_cause",
        "checkout-synthetic": "symptom"}
    # the catalog's cache, in the same minute but unrelated: its own incident
    assert (redis["root_cause_ci"], redis["impacted_services"]) == (
        "redis-catalog", ["svc-catalog"])
    assert (report["root_cause_ci"], report["alerts"][0]["role"]) == (None, "unbound")


def test_replay_summary_and_bad_input(tmp_path: Path) -> None:
    out = incidentd("replay", str(OUTAGE), "--cmdb", str(CMDB))
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].startswith("INC-000001  triggered    critical "
                                                 "root=db-01.prod.example.com")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"received_at": "2026-11-26T10:00:00Z", "source": "nagios", "payload": {}}\n')
    out = incidentd("replay", str(bad))
    assert out.returncode == 2
    assert out.stderr.startswith(f"{bad}:1: source: use one of")


def test_check_config_reports_binding_and_cmdb_problems(tmp_path: Path) -> None:
    cmdb = tmp_path / "cmdb.yaml"
    cmdb.write_text("cis:\n  - {id: a, name: A, type: app, depends_on: [ghost]}\n")
    config = tmp_path / "incidentd.yaml"
    config.write_text(
        f"cmdb: {{files: [{cmdb}]}}\n"
        "correlation:\n  binding:\n    - {match: ['job=~\"(\"'], ci: '{{ labels.x }}'}\n"
        "    - {ci: '{{ labels.x '}\n")
    out = incidentd("check-config", str(config))
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines[0].startswith(f"{config}: correlation.binding.0: bad regular expression")
    assert lines[1].startswith(f"{config}: correlation.binding.1: ")
    assert lines[2] == f"{cmdb}: a.depends_on: unknown CI 'ghost'"
