"""schemathesis hooks for `test_schemathesis.py` (loaded by the `st` it runs).

PagerDuty's credential is the `routing_key` in the body: a generated one is never
right, so events would stop at "Invalid routing key". Where a generated body has a
routing key, it becomes the configured one, and events reach the store.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from tests.e2e.secure_setup import ROUTING_KEY


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case,
                kwargs: dict[str, Any]) -> None:
    if case.path.startswith("/v2/") and isinstance(case.body, dict) and "routing_key" in case.body:
        case.body["routing_key"] = ROUTING_KEY
