from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.itsm.replies import MAX_RETRY_AFTER_SECONDS, parse_retry_after

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0),
    (" 5 ", 5.0),
    ("Fri, 27 Nov 2026 12:01:30 GMT", 90.0),
    ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),  # in the past: now
    ("99999999999", MAX_RETRY_AFTER_SECONDS),  # a target cannot park the outbox for days
    (None, None),
    ("", None),
    ("soon", None),
    ("²", None),  # a digit to str.isdigit(), not to float()
    ("-3", None),
])
def test_retry_after_as_seconds_from_now(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds
