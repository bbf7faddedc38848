"""The runbook catalog: YAML files of runbooks, parsed and validated whole.

A file is `runbooks: [...]`. Each runbook says when it applies (`match`), what
it derives from the alert (`params`), which guards hold (`dry_run`,
`approval`, `rate_limit`, `circuit_breaker_failures`) and its ordered steps.

Everything that can be checked before a run is checked at load (and by
`incidentd check-config`): the shape, every matcher, every template (syntax
and variable names), that each python action is registered, and that names
are unique across files. Each problem is one `file: key.path: reason` line,
and all of them are reported at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.correlation.binding import Matcher
from daemon.models import IncidentStatus
from daemon.templating import TemplateFailed, check

# The variables a template may name; anything else is a mistake caught at load time.
CONTEXT_ROOTS = frozenset({"alert", "incident", "ci", "params", "run"})

ACTIONS_GROUP = "incidentd.runbook_actions"

PriorityName = Literal["P1", "P2", "P3", "P4", "P5"]
STEP_TYPES = ("http", "command", "python", "wait_for_resolution", "notify")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A template marker in argv[0] would let alert data choose the program.
_TEMPLATE_MARK = re.compile(r"\{\{|\{%|\{#")
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_Text = Annotated[str, StringConstraints(min_length=1)]


def _identifier(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{value!r} is not a name (letters, digits, _; not starting "
                         "with a digit)")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepBase(_Model):
    name: _Text
    # The outcome of the previous step this one needs; the first step always runs.
    when: Literal["succeeded", "failed", "always"] = "succeeded"
    timeout_seconds: float = Field(default=60, gt=0)
    idempotent: bool = False
    retries: int = Field(default=0, ge=0, le=10)  # only used when idempotent


class HttpStep(StepBase):
    type: Literal["http"]
    method: str = "POST"
    url: _Text  # template
    headers: dict[str, str] = Field(default_factory=dict)  # values are templates
    body: JsonValue | None = None  # strings inside are templates
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200, 201, 202, 204], min_length=1)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {value!r} (use "
                             f"{', '.join(sorted(HTTP_METHODS))})")
        return method


class CommandStep(StepBase):
    type: Literal["command"]
    argv: list[str] = Field(min_length=1)  # each element a template → one argv element
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)  # values are templates
    # Copied from the daemon's environment; nothing else of it reaches the command.
    env_allowlist: list[str] = Field(default_factory=lambda: ["PATH", "LANG", "LC_ALL", "TZ"])

    @field_validator("argv")
    @classmethod
    def _program_is_fixed(cls, value: list[str]) -> list[str]:
        if value and _TEMPLATE_MARK.search(value[0]):
            raise ValueError("argv[0], the program, must be written out, not a template")
        if value and not value[0]:
            raise ValueError("argv[0], the program, must not be empty")
        return value

    @field_validator("cwd")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # Relative to what? The daemon's working directory is an accident of deployment.
        if value is not None and not Path(value).is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @field_validator("env", "env_allowlist")
    @classmethod
    def _names(cls, value: Any) -> Any:
        for name in value:
            _identifier(name)
        return value


class PythonStep(StepBase):
    type: Literal["python"]
    action: _Text  # entry point name in the group `incidentd.runbook_actions`
    args: dict[str, JsonValue] = Field(default_factory=dict)  # strings are templates


class WaitStep(StepBase):
    type: Literal["wait_for_resolution"]  # timeout_seconds: how long to wait


class NotifyStep(StepBase):
    type: Literal["notify"]
    message: _Text  # template


Step = Annotated[HttpStep | CommandStep | PythonStep | WaitStep | NotifyStep,
                 Field(discriminator="type")]


class RunbookMatch(_Model):
    """When a runbook applies; every given criterion must hold."""

    # Alertmanager-style matchers on the alert's labels: name="v", !=, =~, !~.
    alerts: list[str] = Field(default_factory=list)
    ci_types: list[str] | None = None
    services: list[str] | None = None  # an impacted service, or the CI's service
    min_priority: PriorityName | None = None  # P3 matches P1, P2, P3
    statuses: list[str] = Field(default_factory=lambda: [IncidentStatus.TRIGGERED.value])

    @field_validator("alerts")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)  # raises ValueError naming the matcher
        return value

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        known = [s.value for s in IncidentStatus]
        for status in value:
            if status not in known:
                raise ValueError(f"unknown incident status {status!r} (use "
                                 f"{', '.join(known)})")
        return value

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return _parse_matchers(tuple(self.alerts))


@functools.lru_cache(maxsize=1024)
def _parse_matchers(texts: tuple[str, ...]) -> tuple[Matcher, ...]:
    # Parsed once per distinct list: regexes are never compiled while matching.
    return tuple(Matcher.parse(text) for text in texts)


class RateLimit(_Model):
    max_runs: int = Field(gt=0)
    per_seconds: int = Field(gt=0)


class Runbook(_Model):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=128)]
    description: str = ""
    match: RunbookMatch
    params: dict[str, str] = Field(default_factory=dict)  # values are templates
    dry_run: bool = False
    approval: Literal["none", "required"] = "none"
    # Per runbook per CI; `null` removes the limit.
    rate_limit: RateLimit | None = RateLimit(max_runs=3, per_seconds=3600)
    circuit_breaker_failures: int = Field(default=3, ge=1)
    timeout_seconds: float = Field(default=600, gt=0)
    steps: list[Step] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _identifier(name)
        return value

    @model_validator(mode="after")
    def _unique_step_names(self) -> Runbook:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice")
            seen.add(step.name)
        return self


class _CatalogFile(_Model):
    runbooks: list[Runbook]


class CatalogInvalid(Exception):
    """The catalog cannot be used; `problems` lists each as `file: key.path: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Catalog:
    runbooks: Mapping[str, Runbook] = field(default_factory=lambda: MappingProxyType({}))
    files: tuple[Path, ...] = ()


def read_catalog(files: Sequence[Path], *, actions: frozenset[str] | None = None) -> Catalog:
    """Read and validate every file as one catalog, or raise `CatalogInvalid` with all problems.

    `actions`: the python action names to accept (default: the entry points
    installed in `incidentd.runbook_actions`).
    """
    problems: list[str] = []
    runbooks: dict[str, Runbook] = {}
    origin: dict[str, str] = {}
    if actions is None:
        actions = _registered_actions()
    for path in files:
        parsed = _read_file(path, problems)
        for i, runbook in enumerate(parsed):
            where = f"{path}: runbooks.{i}"
            problems += [f"{where}.{p}" for p in runbook_problems(runbook, actions=actions)]
            if runbook.name in origin:
                problems.append(f"{where}.name: duplicate runbook name {runbook.name!r}, "
                                f"first defined at {origin[runbook.name]}")
                continue
            origin[runbook.name] = where
            runbooks[runbook.name] = runbook
    if problems:
        raise CatalogInvalid(problems)
    return Catalog(runbooks=MappingProxyType(runbooks), files=tuple(files))


def runbook_problems(runbook: Runbook, *, actions: frozenset[str] | None = None) -> list[str]:
    """What the model cannot check alone: templates and python actions, as `key.path: reason`.

    `actions`: the registered action names (default: the installed entry points).
    """
    if actions is None:
        actions = _registered_actions()
    found: list[str] = []
    for path, template, roots in _templates(runbook):
        try:
            check(template, path=path, roots=roots)
        except TemplateFailed as exc:
            found.append(str(exc))
    for i, step in enumerate(runbook.steps):
        if isinstance(step, PythonStep) and step.action not in actions:
            known = ", ".join(sorted(actions)) or "none are installed"
            found.append(f"steps.{i}.action: no python action {step.action!r} in the entry "
                         f"point group {ACTIONS_GROUP} ({known})")
    return found


def _templates(runbook: Runbook) -> Iterator[tuple[str, str, frozenset[str]]]:
    """Every template in the runbook, with its key path and the variables it may use."""
    # Parameters are rendered before `params` exists, so they cannot use it.
    param_roots = CONTEXT_ROOTS - {"params"}
    for name, template in runbook.params.items():
        yield f"params.{name}", template, param_roots
    for i, step in enumerate(runbook.steps):
        for path, template in _step_templates(step):
            yield f"steps.{i}.{path}", template, CONTEXT_ROOTS


def _step_templates(step: Step) -> Iterator[tuple[str, str]]:
    if isinstance(step, HttpStep):
        yield "url", step.url
        yield from ((f"headers.{k}", v) for k, v in step.headers.items())
        if step.body is not None:
            yield from _json_templates(step.body, "body")
    elif isinstance(step, CommandStep):
        yield from ((f"argv.{i}", a) for i, a in enumerate(step.argv))
        yield from ((f"env.{k}", v) for k, v in step.env.items())
    elif isinstance(step, PythonStep):
        for key, value in step.args.items():
            yield from _json_templates(value, f"args.{key}")
    elif isinstance(step, NotifyStep):
        yield "message", step.message


def _json_templates(value: JsonValue, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_templates(item, f"{path}.{i}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _json_templates(item, f"{path}.{key}")


def _registered_actions() -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group=ACTIONS_GROUP))


def _read_file(path: Path, problems: list[str]) -> list[Runbook]:
    """The runbooks of one file; what is wrong with it goes to `problems`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
        return []
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}")
        return []
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        problems.append(f"{path}: {where}invalid YAML: {problem}")
        return []
    if not isinstance(data, dict):
        problems.append(f"{path}: the top level must be a mapping with a `runbooks` list")
        return []
    try:
        return _CatalogFile.model_validate(data).runbooks
    except ValidationError as exc:
        problems += [f"{path}: {_where(e['loc'])}: {_reason(e)}" for e in exc.errors()]
        return []


def _where(loc: tuple[int | str, ...]) -> str:
    """The key path as written in the file: pydantic's union tag (`...steps.1.command.argv`)
    is not a key, so it is left out."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        after_step = i >= 2 and loc[i - 2] == "steps" and isinstance(loc[i - 1], int)
        if after_step and part in STEP_TYPES:
            continue
        parts.append(str(part))
    return ".".join(parts) or "(document)"


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag", "")
        return f"unknown step type {tag!r} (use {', '.join(STEP_TYPES)})"
    if kind == "union_tag_not_found":
        return f"`type` is required (one of {', '.join(STEP_TYPES)})"
    return str(error["msg"]).removeprefix("Value error, ")


class CatalogHolder:
    """The catalog in use; replaced whole on reload, never edited in place."""

    def __init__(self, catalog: Catalog | None = None, *,
                 files: Sequence[Path] | None = None) -> None:
        if catalog is None:
            catalog = read_catalog(files) if files else Catalog(files=tuple(files or ()))
        self._catalog = catalog

    @property
    def current(self) -> Catalog:
        return self._catalog

    def replace(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def reload(self) -> Catalog:
        """Re-read the current catalog's files; on `CatalogInvalid` keep the old one."""
        catalog = read_catalog(self._catalog.files)
        self._catalog = catalog
        return catalog
