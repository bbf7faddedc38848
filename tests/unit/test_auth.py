from __future__ import annotations

import base64

import pytest

from daemon.errors import Unauthorized
from daemon.receivers.auth import Credentials


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_any_of_several_bearer_tokens_is_accepted_for_rotation() -> None:
    creds = Credentials(bearer=("old", "new"))
    creds.check("Bearer old")
    creds.check("bearer new")


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer wrong", "Token old", basic("a", "b")]
)
def test_wrong_or_missing_credentials_are_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        Credentials(bearer=("old",)).check(header)


def test_basic_auth_as_alertmanager_http_config_sends_it() -> None:
    creds = Credentials(basic=(("am", "s3cret:with:colons"),))
    creds.check(basic("am", "s3cret:with:colons"))
    with pytest.raises(Unauthorized):
        creds.check(basic("am", "s3cret"))
    with pytest.raises(Unauthorized):
        creds.check("Basic !!!notbase64")
