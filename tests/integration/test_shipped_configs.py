"""The example configurations we ship are accepted by the programs that read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from daemon.store import migrate
from tests.conftest import require

CONFIG = Path(__file__).parents[2] / "config"


def test_alertmanager_example_passes_amtool() -> None:
    amtool = shutil.which("amtool")
    require(amtool is not None, "amtool is not installed (Debian package prometheus-alertmanager)")
    assert amtool is not None
    out = subprocess.run([amtool, "check-config", str(CONFIG / "alertmanager.example.yml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_incidentd_example_passes_check_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "check-config", str(CONFIG / "incidentd.example.yaml")],
        capture_output=True, text=True, check=False,
    )
    assert (out.returncode, out.stdout) == (0, "OK\n"), out.stderr


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "incidentd.db"
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "migrate", "--config",
         str(CONFIG / "incidentd.example.yaml"), "--database-url", f"sqlite+aiosqlite:///{db}"],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"database at revision {migrate.head_revision()}"
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"alerts", "incidents", "incident_alerts", "timeline", "alembic_version"} <= tables
