"""`IN` lists of a few lengths only, so that statements are prepared once.

SQLAlchemy renders `column IN (...)` with one parameter per value, so every length
of the list is another SQL text. PostgreSQL (asyncpg) prepares each new text, a
round trip of its own: measured, ~0.6 ms for each of ~8 new texts an ingest batch,
a tenth of the batch. Padding a list to the next power of two by repeating its last
value (which `IN` ignores) leaves a handful of texts per statement, which the
prepared-statement cache keeps (as Hibernate's `in_clause_parameter_padding` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")

# Past this many values a list is sent as it is: rare (bulk reads), and doubling it
# would only cost parameters.
_PAD_UP_TO = 1024


def padded(values: Iterable[T]) -> list[T]:
    """`values` as a list whose length is 0, 1, 2, 4, 8, … (up to 1,024): the same
    values, the last one repeated."""
    out = list(values)
    n = len(out)
    if 2 < n <= _PAD_UP_TO and n & (n - 1):
        out.extend([out[-1]] * ((1 << n.bit_length()) - n))
    return out


def in_found(column: sa.ColumnElement[Any], ids: sa.ColumnElement[Any],
             *where: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """PostgreSQL: `column IN (SELECT ids WHERE where)`, written so that the subquery runs
    once, first, and `column` is then sought by key, whatever the statistics say. As a
    plain subquery or join, a database never analysed (autovacuum off, or a burst before
    it ran) may probe every row of `column`'s table instead."""
    found = sa.select(sa.func.array_agg(ids)).where(*where).scalar_subquery()
    # The cast makes `ANY` take the one array the subquery gives, not its rows.
    return column == sa.any_(sa.cast(found, sa.ARRAY(sa.BigInteger())))
