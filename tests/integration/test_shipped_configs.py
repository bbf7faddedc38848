"""The example configurations we ship are accepted by the programs that read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
