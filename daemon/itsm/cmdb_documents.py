"""The CMDB document: parsed from YAML, JSON or CSV, and validated whole.

One shape for the config files and `POST /api/v1/cmdb/import`:
`{"cis": [{"id": ..., "type": ..., "depends_on": [...]}, ...]}`; CSV has one
CI per row. Nothing here does I/O: the `Cmdb` flow reads files and the store.

Validation looks at the whole set at once and reports every problem, each as
`where: reason` naming the CI ids involved, so an operator fixes a file in one
pass rather than one error per attempt.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from daemon.errors import InvalidInput
from daemon.models import SERVICE_TYPE, ConfigurationItem

Format = Literal["yaml", "json", "csv"]

# An error body with every problem of a 50,000-CI file would be megabytes no one reads.
MAX_LISTED_PROBLEMS = 1000

CSV_COLUMNS = ("id", "name", "type", "service", "owner_group", "criticality", "environment",
               "depends_on", "attributes")
_CSV_REQUIRED = ("id", "type")

# libyaml's loader is ~10x faster than the pure-Python one on a large CMDB.
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail at commit.
    if "\x00" in value:
        raise ValueError("NUL characters are not accepted")
    return value


def _ci_id(value: str) -> str:
    # Ids appear in URLs, labels and log lines, where whitespace is a trap.
    if any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace")
    return _no_nul(value)


CIId = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_ci_id)]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_nul)]
_Short = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
_Group = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_no_nul)]


class CIModel(BaseModel):
    """One CI as written in a file or an API body."""

    # YAML reads `id: 17` as a number; a CI id is text whatever it looks like.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    id: CIId
    name: _Name | None = None  # default: the id
    type: _Short
    service: CIId | None = None
    owner_group: _Group | None = None
    criticality: int = Field(default=3, ge=1, le=5)
    environment: _Short | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[CIId] = Field(default_factory=list)

    @field_validator("attributes")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Round-trip through JSON so the value equals what the store gives back
        # (YAML dates become strings); refuse what the store cannot keep.
        try:
            encoded = orjson.dumps(value)
        except TypeError as exc:
            raise ValueError(f"cannot be stored as JSON: {exc}") from None
        decoded: dict[str, Any] = orjson.loads(encoded)
        if _has_nul(decoded):
            raise ValueError("NUL characters are not accepted")
        return decoded

    def to_ci(self) -> ConfigurationItem:
        return ConfigurationItem(
            id=self.id, name=self.name or self.id, type=self.type, service=self.service,
            owner_group=self.owner_group, criticality=self.criticality,
            environment=self.environment, attributes=self.attributes,
            # Sorted and unique: the order of `depends_on` means nothing, and the
            # store keeps edges as a set.
            depends_on=tuple(sorted(set(self.depends_on))),
        )


class CIDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cis: list[CIModel]


_CI_LIST = TypeAdapter(list[CIModel])


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong; `ci_ids` are the CIs it is about, so a caller can name their files.

    `duplicate`: the problem is an id given more than once, so it is about
    every definition of it, not only the one that would take effect.
    """

    field: str
    reason: str
    ci_ids: tuple[str, ...] = ()
    duplicate: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class CmdbInvalid(InvalidInput):
    """A CMDB document or change that fails validation; nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        assert problems, "CmdbInvalid needs at least one problem"
        listed = problems[:MAX_LISTED_PROBLEMS]
        errors = [{"field": p.field, "reason": p.reason} for p in listed]
        if len(problems) > len(listed):
            errors.append({"field": "(document)",
                           "reason": f"{len(problems) - len(listed)} more problems not listed"})
        count = f"{len(problems)} problems, the first: " if len(problems) > 1 else ""
        super().__init__(f"invalid CMDB: {count}{problems[0]}", errors)
        self.problems = list(problems)

    def describe(self) -> list[str]:
        """Every problem as a `where: reason` line."""
        return [str(p) for p in self.problems]


def parse_document(data: str | bytes, fmt: Format) -> list[ConfigurationItem]:
    """Parse a whole document into CIs, or raise `CmdbInvalid` naming every bad field."""
    if fmt == "csv":
        return _parse_csv(_text(data))
    if fmt == "json":
        try:
            loaded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CmdbInvalid([Problem("(document)", f"invalid JSON: {exc}")]) from None
    else:
        loaded = _load_yaml(_text(data))
    if not isinstance(loaded, dict):
        raise CmdbInvalid([Problem("(document)", "the top level must be a mapping with a "
                                                 "`cis` list")])
    try:
        document = CIDocument.model_validate(loaded)
    except ValidationError as exc:
        raise CmdbInvalid([Problem(_path(e["loc"]), _reason(e)) for e in exc.errors()]) from None
    return [m.to_ci() for m in document.cis]


def parse_ci(data: Mapping[str, Any]) -> ConfigurationItem:
    """One CI object (the body of `PUT /api/v1/cmdb/cis/{id}`)."""
    try:
        return CIModel.model_validate(data).to_ci()
    except ValidationError as exc:
        raise CmdbInvalid([Problem(_path(e["loc"]), _reason(e)) for e in exc.errors()]) from None


def _text(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")  # spreadsheets like to start CSV with a BOM
    except UnicodeDecodeError as exc:
        raise CmdbInvalid([Problem("(document)", f"not UTF-8 text: {exc.reason} at byte "
                                                 f"{exc.start}")]) from None


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CmdbInvalid([Problem("(document)", f"{where}invalid YAML: {problem}")]) from None


def _parse_csv(text: str) -> list[ConfigurationItem]:
    """A header row naming columns from `CSV_COLUMNS`, then one CI per row.

    Rows are numbered as a spreadsheet shows them: the header is row 1.
    Empty cells take the default; `depends_on` separates ids by `;` or spaces;
    `attributes` is a JSON object.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[Problem] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if not any(header):
            raise CmdbInvalid([Problem("row 1", "a header row is required: "
                                                + ",".join(CSV_COLUMNS))])
        for column, n in Counter(header).items():
            if column not in CSV_COLUMNS:
                problems.append(Problem(f"row 1: {column or '(empty)'}", "unknown column; use "
                                        + ", ".join(CSV_COLUMNS)))
            elif n > 1:
                problems.append(Problem(f"row 1: {column}", f"column given {n} times"))
        problems += [Problem(f"row 1: {c}", "required column is missing")
                     for c in _CSV_REQUIRED if c not in header]
        if problems:
            raise CmdbInvalid(problems)
        for number, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                problems.append(Problem(f"row {number}", f"{len(record)} columns, the header "
                                                         f"has {len(header)}"))
                continue
            rows.append((number, _csv_row(number, header, record, problems)))
    except csv.Error as exc:
        problems.append(Problem(f"row {reader.line_num}", f"invalid CSV: {exc}"))
    try:
        models = _CI_LIST.validate_python([row for _, row in rows])
    except ValidationError as exc:
        for e in exc.errors():
            number = rows[int(e["loc"][0])][0]
            column = str(e["loc"][1]) if len(e["loc"]) > 1 else "(row)"
            problems.append(Problem(f"row {number}: {column}", _reason(e)))
        models = []
    if problems:
        raise CmdbInvalid(sorted(problems, key=_row_order))
    return [m.to_ci() for m in models]


def _csv_row(number: int, header: list[str], record: list[str], problems: list[Problem]
             ) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column, raw in zip(header, record, strict=True):
        cell = raw.strip()
        if not cell:
            continue
        if column == "depends_on":
            row[column] = cell.replace(";", " ").split()
        elif column == "attributes":
            try:
                row[column] = orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                problems.append(Problem(f"row {number}: attributes", f"invalid JSON: {exc}"))
        else:
            row[column] = cell
    return row


def _row_order(problem: Problem) -> int:
    head = problem.field.split(":", 1)[0]
    return int(head.removeprefix("row ")) if head.removeprefix("row ").isdigit() else 0


def _path(loc: tuple[int | str, ...]) -> str:
    """`("cis", 3, "depends_on", 0)` → `cis[3].depends_on[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required"
    return str(error["msg"]).removeprefix("Value error, ")


# -- whole-set validation ---------------------------------------------------


def validate(cis: Sequence[ConfigurationItem],
             existing: Iterable[ConfigurationItem] | None = None) -> None:
    """Check `cis` (over `existing`, which they replace by id) as one CMDB.

    Raises `CmdbInvalid` listing every problem: duplicate ids, unknown
    `depends_on` targets, a `service` that is unknown or not a service,
    self-dependencies and dependency cycles (each with its path of ids).
    """
    found = problems(cis, existing)
    if found:
        raise CmdbInvalid(found)


def union(cis: Iterable[ConfigurationItem],
          existing: Iterable[ConfigurationItem] | None = None) -> dict[str, ConfigurationItem]:
    """`existing` with `cis` laid over it, by id."""
    merged = {ci.id: ci for ci in existing or ()}
    merged.update((ci.id, ci) for ci in cis)
    return merged


def problems(cis: Sequence[ConfigurationItem],
             existing: Iterable[ConfigurationItem] | None = None) -> list[Problem]:
    found = [Problem(f"{ci_id}.id", f"duplicate id, given {n} times", (ci_id,), duplicate=True)
             for ci_id, n in Counter(ci.id for ci in cis).items() if n > 1]
    everything = union(cis, existing)
    for ci in everything.values():
        for target in ci.depends_on:
            if target == ci.id:
                found.append(Problem(f"{ci.id}.depends_on", "depends on itself", (ci.id,)))
            elif target not in everything:
                found.append(Problem(f"{ci.id}.depends_on", f"unknown CI {target!r}", (ci.id,)))
        if ci.service is not None:
            owner = everything.get(ci.service)
            if owner is None:
                found.append(Problem(f"{ci.id}.service", f"unknown CI {ci.service!r}", (ci.id,)))
            elif not owner.is_service:
                found.append(Problem(
                    f"{ci.id}.service",
                    f"{ci.service!r} is of type {owner.type!r}, not {SERVICE_TYPE!r}", (ci.id,)))
    for cycle in find_cycles(everything.values()):
        found.append(Problem("cycle", " -> ".join(cycle), tuple(cycle[:-1])))
    return found


def find_cycles(cis: Iterable[ConfigurationItem]) -> list[list[str]]:
    """One dependency cycle per strongly connected component, as `[a, b, ..., a]`.

    Tarjan's algorithm, iterative (a 50,000-deep chain would overflow
    recursion), O(CIs + edges). Each cycle starts at the smallest id of its
    component and is a shortest one back to it. Self-loops and edges to
    unknown CIs are ignored: they are reported on their own.
    """
    graph = {ci.id: ci.depends_on for ci in cis}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in graph or nxt == node:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    cycles = [_cycle_through(min(c), set(c), graph) for c in components]
    return sorted(cycles)


def _cycle_through(start: str, members: set[str], graph: Mapping[str, Sequence[str]]
                   ) -> list[str]:
    """A shortest path from `start` back to itself inside one component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for other in graph[node]:
                if other == node:
                    continue
                if other == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if other in members and other not in parent:
                    parent[other] = node
                    nxt.append(other)
        frontier = nxt
    raise AssertionError(f"no cycle through {start!r} in its component")
