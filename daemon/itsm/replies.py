"""What a notification target or an ITSM suite answered: its body, capped, and its
`Retry-After` as seconds from now."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import aiohttp

# A target asking for more than a day is misconfigured; we still come back tomorrow.
MAX_RETRY_AFTER_SECONDS = 86_400.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Delta-seconds or an HTTP date, bounded to a day; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    # ASCII only: "²".isdigit() is true, and float() refuses it.
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_SECONDS)


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, up to `limit` bytes: an error page or an answer needs no more, and a
    target must not make us buffer whatever it sends."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
