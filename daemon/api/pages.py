"""Keyset pagination: lists fetch one row more than asked to know if a next page exists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar


class _HasId(Protocol):
    @property
    def id(self) -> Any: ...


_T = TypeVar("_T", bound=_HasId)


def page(rows: Sequence[_T], limit: int) -> tuple[Sequence[_T], str | None]:
    """Trim the extra row fetched past `limit`; its presence means another page."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].id)
