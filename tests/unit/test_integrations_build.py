from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daemon.config import load_config
from daemon.receivers.integrations import build_integrations
from tests.conftest import FakeClock


def build(tmp_path: Path, integration: dict[str, object]) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"integrations": [integration]}))
    [built] = build_integrations(load_config(path, environ={}), FakeClock())
    return built


def test_unset_bearer_token_is_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    built = build(tmp_path, {"name": "am", "type": "alertmanager",
                             "auth": {"bearer_tokens": [{"env": "NOT_SET_TOKEN"}]}})
    assert len(built.credentials.bearer) == 1  # type: ignore[attr-defined]


def test_unset_basic_password_generates_nothing_and_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_PW", raising=False)
    built = build(tmp_path, {"name": "am", "type": "alertmanager", "auth": {
        "basic": [{"username": "am", "password": {"env": "NOT_SET_PW"}}]}})
    creds = built.credentials  # type: ignore[attr-defined]
    assert (creds.bearer, creds.basic) == ((), ())
    assert not creds.admits("Basic YW06")  # "am:" with an empty password


def test_pagerduty_routing_key_and_body_limit(tmp_path: Path) -> None:
    built = build(tmp_path, {"name": "pd", "type": "pagerduty",
                             "auth": {"routing_keys": [{"value": "k1"}, {"value": "k2"}]}})
    assert built.routing_keys == ("k1", "k2")  # type: ignore[attr-defined]
    assert built.max_body_bytes == 512 * 1024  # type: ignore[attr-defined]
