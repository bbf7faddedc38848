"""The CMDB flow: CI records from files and the API, persisted, mirrored in the topology.

Every change, whatever its source (the config files at start, SIGHUP or
`POST /api/v1/cmdb/reload`; an import; one CI put or deleted), goes the same
way: read the current CMDB from the store, compute the new whole set and
validate it, write only the difference in one transaction, then swap in a
topology built from the validated set. A change that fails validation
writes nothing and leaves the topology alone.

The document format and the validation rules live in `cmdb_documents`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import structlog

from daemon.clock import Clock
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.errors import InvalidTransition, NotFound
from daemon.itsm.cmdb_documents import (
    CIDocument,
    CIModel,
    CmdbInvalid,
    Format,
    Problem,
    find_cycles,
    parse_ci,
    parse_document,
    problems,
    union,
    validate,
)
from daemon.models import ConfigurationItem
from daemon.store import Store, StoreUnavailable
from daemon.store import cmdb as cmdb_store

__all__ = [
    "CIDocument", "CIModel", "Cmdb", "CmdbChange", "CmdbInvalid", "Format", "ImportMode",
    "Problem", "ReloadResult", "find_cycles", "parse_ci", "parse_document", "read_files",
    "validate",
]

log = structlog.get_logger("incidentd.cmdb")

ImportMode = Literal["merge", "replace"]
CIs = Mapping[str, ConfigurationItem]

# How many dependents a refused delete names in its message; the rest are counted.
_NAMED_DEPENDENTS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class CmdbChange:
    """What one change did (`added`, `updated`, `removed`) and the CMDB's size after it."""

    added: int
    updated: int
    removed: int
    cis: int
    edges: int
    services: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadResult:
    files: tuple[Path, ...]
    change: CmdbChange


@dataclass(frozen=True, slots=True)
class _Plan:
    removed: list[str]
    written: list[ConfigurationItem]
    change: CmdbChange
    topology: Topology


class Cmdb:
    """Owns every CMDB change and keeps `topology` equal to what the store holds.

    Changes are serialised by one lock, so a slower change can never swap in
    its topology after a later one's.
    """

    def __init__(self, *, store: Store, clock: Clock, topology: TopologyHolder,
                 files: Sequence[Path]) -> None:
        self._store = store
        self._clock = clock
        self._topology = topology
        self._files = tuple(files)
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def files(self) -> tuple[Path, ...]:
        return self._files

    def use_files(self, files: Sequence[Path]) -> None:
        """A configuration reload named these files: reloads read them from now on."""
        self._files = tuple(files)

    async def load_from_store(self) -> int:
        """Build the topology from the store (at start); returns how many CIs it holds."""
        async with self._lock:
            async with self._store.read() as conn:
                items = await cmdb_store.all_cis(conn)
            self._topology.replace(await asyncio.to_thread(Topology.build, items))
        log.info("cmdb loaded from the store", cis=len(items))
        return len(items)

    async def reload_files(self) -> ReloadResult:
        """Make the config files' CIs the whole CMDB; on any problem nothing changes."""
        if not self._files:
            raise CmdbInvalid([Problem("cmdb.files", "no CMDB files are configured; nothing "
                                                     "to reload")])
        items = await asyncio.to_thread(read_files, self._files)
        change = await self._apply(lambda _: {ci.id: ci for ci in items}, via="reload",
                                   files=[str(f) for f in self._files])
        return ReloadResult(files=self._files, change=change)

    async def import_document(self, items: Sequence[ConfigurationItem], mode: ImportMode
                              ) -> CmdbChange:
        """`merge`: add or replace the given CIs; `replace`: they become the whole CMDB."""
        def compute(before: CIs) -> CIs:
            if mode == "replace":
                validate(items)
                return {ci.id: ci for ci in items}
            validate(items, before.values())
            return union(items, before.values())

        return await self._apply(compute, via=f"import-{mode}")

    async def put(self, ci: ConfigurationItem) -> CmdbChange:
        """Create or replace one CI; validated against the rest of the CMDB."""
        def compute(before: CIs) -> CIs:
            validate([ci], before.values())
            return union([ci], before.values())

        return await self._apply(compute, via="put", ci=ci.id)

    async def delete(self, ci_id: str) -> CmdbChange:
        """Delete one CI; refused while other CIs depend on it or belong to it."""
        def compute(before: CIs) -> CIs:
            if ci_id not in before:
                raise NotFound(f"no CI {ci_id!r}")
            dependents = sorted(c.id for c in before.values() if ci_id in c.depends_on)
            members = sorted(c.id for c in before.values() if c.service == ci_id)
            if dependents or members:
                raise InvalidTransition(_still_needed(ci_id, dependents, members))
            return {k: v for k, v in before.items() if k != ci_id}

        return await self._apply(compute, via="delete", ci=ci_id)

    def reload_in_background(self) -> None:
        """Reload the files without waiting (for SIGHUP); the outcome is logged."""
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background reloads to finish (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _reload_logged(self) -> None:
        if not self._files:
            log.info("cmdb reload asked for, but no cmdb files are configured")
            return
        try:
            await self.reload_files()
        except CmdbInvalid as err:
            log.error("cmdb reload refused; the CMDB is unchanged", problems=err.describe())
        except StoreUnavailable as err:
            log.error("cmdb reload failed; the CMDB is unchanged", reason=str(err))
        except Exception:
            log.exception("cmdb reload failed; the CMDB is unchanged")

    async def _apply(self, compute: Callable[[CIs], CIs], *, via: str, **context: object
                     ) -> CmdbChange:
        async with self._lock:
            async with self._store.read() as conn:
                before = {ci.id: ci for ci in await cmdb_store.all_cis(conn)}
            # Validation and the graph build are CPU work of up to a second on a
            # large CMDB; a thread keeps the event loop answering meanwhile.
            plan = await asyncio.to_thread(_plan, before, compute)
            if plan.removed or plan.written:
                async with self._store.write() as conn:
                    await cmdb_store.delete(conn, plan.removed)
                    await cmdb_store.upsert(conn, plan.written, self._clock.now())
            self._topology.replace(plan.topology)
        log.info("cmdb changed", via=via, **plan.change.as_dict(), **context)
        return plan.change


def _plan(before: CIs, compute: Callable[[CIs], CIs]) -> _Plan:
    after = compute(before)
    removed = [ci_id for ci_id in before if ci_id not in after]
    written = [ci for ci_id, ci in after.items() if before.get(ci_id) != ci]
    added = sum(1 for ci in written if ci.id not in before)
    change = CmdbChange(
        added=added, updated=len(written) - added, removed=len(removed), cis=len(after),
        edges=sum(len(ci.depends_on) for ci in after.values()),
        services=sum(1 for ci in after.values() if ci.is_service),
    )
    return _Plan(removed, written, change, Topology.build(after.values()))


def _still_needed(ci_id: str, dependents: list[str], members: list[str]) -> str:
    reasons = []
    for ids, one, many in ((dependents, "CI depends on it", "CIs depend on it"),
                           (members, "CI belongs to it", "CIs belong to it")):
        if ids:
            named = ", ".join(ids[:_NAMED_DEPENDENTS])
            more = f" and {len(ids) - _NAMED_DEPENDENTS} more" if len(ids) > _NAMED_DEPENDENTS \
                else ""
            reasons.append(f"{len(ids)} {one if len(ids) == 1 else many} ({named}{more})")
    return f"cannot delete CI {ci_id!r}: {'; '.join(reasons)}"


def read_files(files: Sequence[Path]) -> list[ConfigurationItem]:
    """Parse the CMDB files, merge them and validate them as one set.

    Raises `CmdbInvalid` with every problem, each prefixed with the file(s)
    it is in; an id defined in two files names both.
    """
    found: list[Problem] = []
    items: list[ConfigurationItem] = []
    origin: dict[str, list[str]] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            found.append(Problem(str(path), f"cannot read: {exc.strerror}"))
            continue
        try:
            parsed = parse_document(data, _format_of(path))
        except CmdbInvalid as err:
            found += [Problem(f"{path}: {p.field}", p.reason) for p in err.problems]
            continue
        for ci in parsed:
            origin.setdefault(ci.id, []).append(str(path))
        items += parsed
    if not found:
        found = [_in_files(p, origin) for p in problems(items)]
    if found:
        raise CmdbInvalid(found)
    return items


def _in_files(problem: Problem, origin: Mapping[str, list[str]]) -> Problem:
    # Of an id given twice, the last definition is the one checked against the rest.
    files = dict.fromkeys(
        f for ci_id in problem.ci_ids
        for f in (origin[ci_id] if problem.duplicate else origin[ci_id][-1:]))
    return Problem(f"{', '.join(files)}: {problem.field}", problem.reason, problem.ci_ids)


def _format_of(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".csv":
        return "csv"
    return "yaml"
