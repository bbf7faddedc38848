from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import ConfigError, Overrides, load_config

EXAMPLE = Path(__file__).parents[2] / "config" / "incidentd.example.yaml"


def test_example_config_loads_with_embedded_defaults() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.server.listen == "127.0.0.1:8080"
    assert config.database.url.startswith("sqlite+aiosqlite:///./var/")
    assert config.api.tokens[0].env == "INCIDENTD_API_TOKEN"
    am, pd, grafana, generic = config.integrations
    assert (am.name, am.type) == ("alertmanager", "alertmanager")
    assert am.auth.bearer_tokens[0].env == "INCIDENTD_ALERTMANAGER_TOKEN"
    assert (pd.name, pd.type) == ("pagerduty", "pagerduty")
    assert pd.auth.routing_keys[0].env == "INCIDENTD_PAGERDUTY_ROUTING_KEY"
    assert grafana.auth.bearer_tokens[0].env == "INCIDENTD_GRAFANA_TOKEN"
    assert generic.auth.bearer_tokens[0].env == "INCIDENTD_GENERIC_TOKEN"


def test_environment_then_flags_override_the_file() -> None:
    env = {"INCIDENTD_DATABASE_URL": "postgresql+asyncpg://u@db/x",
           "INCIDENTD_SERVER_LISTEN": "0.0.0.0:9000",
           "INCIDENTD_INGEST_MAX_BATCH_ALERTS": "7"}
    config = load_config(EXAMPLE, environ=env)
    assert config.database.url == "postgresql+asyncpg://u@db/x"
    assert config.server.port == 9000
    assert config.ingest.max_batch_alerts == 7
    config = load_config(EXAMPLE, environ=env, overrides=Overrides(listen="127.0.0.1:1"))
    assert config.server.listen == "127.0.0.1:1"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "incidentd.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_are_errors_naming_file_and_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  lisen: 1.2.3.4:5\nintegrations:\n  - name: am\n"
                           "    type: alertmanager\n    auth: {bearer_tokens: [{env: X}]}\n"
                           "    colour: red\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.problems == [
        f"{path}: server.lisen: unknown key",
        f"{path}: integrations.0.colour: unknown key",
    ]


def test_bad_values_say_why(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {listen: nowhere}\ndatabase: {url: 'mysql://x'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert f"{path}: server.listen: expected HOST:PORT, got 'nowhere'" in err.value.problems
    assert any(p.startswith(f"{path}: database.url: use a sqlite") for p in err.value.problems)


def test_a_secret_needs_exactly_one_source(tmp_path: Path) -> None:
    path = write(tmp_path, "api: {tokens: [{env: A, value: b}]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.problems == [f"{path}: api.tokens.0: give exactly one of env, file or value"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  listen: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.problems[0].startswith(f"{path}: line ")


def test_check_config_prints_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == "OK\n"


def test_check_config_reports_each_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "server: {nope: 1}\napi: {tokens: [{file: /nonexistent/token}]}\n")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{path}: server.nope: unknown key"
    # once the key is fixed, an unreadable secret file is the next problem
    path.write_text("api: {tokens: [{file: /nonexistent/token}]}\n")
    assert main(["check-config", str(path)]) == 1
    assert "api.tokens: secret file /nonexistent/token: cannot read" in capsys.readouterr().err


def test_console_script_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(EXAMPLE)],
                         capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout) == (0, "OK\n")


def test_cmdb_files_are_relative_to_the_config_file() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.cmdb.files == [EXAMPLE.parent / "cmdb.example.yaml"]
