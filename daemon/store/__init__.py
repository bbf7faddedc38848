"""Persistence: tables, the engine pair (writer/readers), repository functions, migrations.

Repository functions take an `AsyncConnection` and never commit: the caller
(a flow) owns the transaction.
"""

from daemon.store.engine import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
