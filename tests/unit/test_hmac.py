"""HMAC body signatures: Grafana's scheme (hex of HMAC-SHA256 over `ts:body`) and plain."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from daemon.errors import Unauthorized
from daemon.receivers.auth import Credentials, HmacVerifier, ReplayGuard

BODY = b'{"status":"firing"}'
NOW = 1_795_000_000.0


def sign(secret: bytes, body: bytes, ts: str | None = None) -> str:
    signed = body if ts is None else ts.encode() + b":" + body
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()


def grafana_style(**kw: object) -> HmacVerifier:
    return HmacVerifier(
        secrets=(b"old", b"new"), headers=("X-Grafana-Alerting-Signature",
                                           "X-Grafana-Alert-Signature"),
        timestamp_header="X-Grafana-Alerting-Timestamp", max_age_seconds=300,
        clock=lambda: NOW, replay=ReplayGuard(window_seconds=600), **kw,  # type: ignore[arg-type]
    )


def headers(sig: str, ts: str, name: str = "X-Grafana-Alerting-Signature") -> dict[str, str]:
    return {name: sig, "X-Grafana-Alerting-Timestamp": ts}


def test_signed_request_with_either_secret_and_either_header_name() -> None:
    v = grafana_style()
    ts = str(int(NOW))
    v.verify(headers(sign(b"new", BODY, ts), ts), BODY)
    v.verify(headers(sign(b"old", BODY, ts), ts, name="X-Grafana-Alert-Signature"), BODY)


def test_wrong_signature_is_refused() -> None:
    ts = str(int(NOW))
    with pytest.raises(Unauthorized, match="does not match"):
        grafana_style().verify(headers(sign(b"other", BODY, ts), ts), BODY)
    with pytest.raises(Unauthorized, match="does not match"):
        grafana_style().verify(headers(sign(b"new", BODY + b" ", ts), ts), BODY)
    with pytest.raises(Unauthorized, match="not hex"):
        grafana_style().verify(headers("zz", ts), BODY)


def test_old_or_future_timestamp_is_refused() -> None:
    for ts in (str(int(NOW) - 301), str(int(NOW) + 301)):
        with pytest.raises(Unauthorized, match="more than 300s from now"):
            grafana_style().verify(headers(sign(b"new", BODY, ts), ts), BODY)
    with pytest.raises(Unauthorized, match="missing X-Grafana-Alerting-Timestamp"):
        grafana_style().verify({"X-Grafana-Alerting-Signature": sign(b"new", BODY)}, BODY)


def test_replayed_request_is_refused_until_released() -> None:
    v = grafana_style()
    ts = str(int(NOW))
    sig = v.verify(headers(sign(b"new", BODY, ts), ts), BODY)
    with pytest.raises(Unauthorized, match="replay"):
        v.verify(headers(sign(b"new", BODY, ts), ts), BODY)
    assert v.replay is not None
    v.replay.release(sig)  # the first attempt failed downstream: its retry is welcome
    v.verify(headers(sign(b"new", BODY, ts), ts), BODY)


def test_replay_guard_forgets_after_the_window() -> None:
    guard = ReplayGuard(window_seconds=10)
    assert guard.claim(b"a", 0) and not guard.claim(b"a", 5)
    assert guard.claim(b"a", 11)


def test_plain_body_signature_with_prefix_and_base64() -> None:
    import base64

    v = HmacVerifier(secrets=(b"s",), headers=("X-Sig",), prefix="sha256=", encoding="base64")
    digest = hmac.new(b"s", BODY, hashlib.sha256).digest()
    v.verify({"X-Sig": "sha256=" + base64.b64encode(digest).decode()}, BODY)
    with pytest.raises(Unauthorized, match="must start with 'sha256='"):
        v.verify({"X-Sig": base64.b64encode(digest).decode()}, BODY)


def test_credentials_admit_a_header_or_a_signature() -> None:
    creds = Credentials(bearer=("tok",), hmac=HmacVerifier(secrets=(b"s",), headers=("X-Sig",)))
    assert creds.check_request({"Authorization": "Bearer tok"}, BODY) is None
    assert creds.check_request({"X-Sig": sign(b"s", BODY)}, BODY) is not None
    with pytest.raises(Unauthorized):
        creds.check_request({"Authorization": "Bearer nope"}, BODY)
    with pytest.raises(Unauthorized):
        creds.check_request({}, BODY)
