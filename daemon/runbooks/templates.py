"""Rendering runbook parameters and step fields from the alert, incident and CI.

Alert text is data, never code: it reaches a step only as the *value* of a
variable inside a template an operator wrote in the catalog. Templates run in
Jinja2's immutable sandbox (no `__class__` walks, no `list.append` on the
shared context), with `StrictUndefined` so a misspelt variable is an error
rather than an empty argument. Each template renders to exactly one string:
one argv element, one header value, one field. Nothing here joins or splits
the result, so `x; rm -rf / #` stays one literal argument.

The render context is
`{"alert": {...}, "incident": {...}, "ci": {...} | None, "params": {...}, "run": {...}}`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import JsonValue

if TYPE_CHECKING:
    from daemon.runbooks.catalog import Step

# The variables a template may name; anything else is a mistake caught at load time.
CONTEXT_ROOTS = frozenset({"alert", "incident", "ci", "params", "run"})

# One rendered value larger than this is a runaway template, not an argument.
MAX_RENDERED_CHARS = 1024 * 1024
_MAX_EXPONENT = 256


class TemplateFailed(Exception):
    """A template did not compile or render; `path` names the catalog field."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a cap on `*` and `**` so one template cannot eat the memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        return super().call_binop(context, operator, left, right)


def _check_repeat(sequence: Any, count: Any) -> None:
    if isinstance(sequence, str | list | tuple) and isinstance(count, int) \
            and len(sequence) * count > MAX_RENDERED_CHARS:
        raise SecurityError("repetition would exceed the size limit")


_ENV = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# `lipsum`, `cycler` and `joiner` serve no runbook; fewer objects, fewer ways out.
for _name in ("lipsum", "cycler", "joiner"):
    _ENV.globals.pop(_name, None)
_GLOBALS = frozenset(_ENV.globals)


@functools.lru_cache(maxsize=1024)
def _compile(template: str) -> Template:
    # Catalog templates are few and rendered for every run: compile each once.
    return _ENV.from_string(template)


def check(template: str, *, path: str, roots: Iterable[str] = CONTEXT_ROOTS) -> None:
    """Compile `template` and check it names only known variables; raise `TemplateFailed`.

    `roots` narrows the variables allowed (parameters cannot use `params`,
    which they are building).
    """
    try:
        ast = _ENV.parse(template)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(path, f"template syntax error at line {exc.lineno}: "
                                   f"{exc.message}") from None
    unknown = meta.find_undeclared_variables(ast) - set(roots) - _GLOBALS
    if unknown:
        names = ", ".join(sorted(unknown))
        allowed = ", ".join(sorted(roots))
        raise TemplateFailed(path, f"unknown variable {names} (use {allowed})")


def render(template: str, context: Mapping[str, Any], *, path: str) -> str:
    """Render one template to one string, or raise `TemplateFailed` saying why."""
    try:
        compiled = _compile(template)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(path, f"template syntax error at line {exc.lineno}: "
                                   f"{exc.message}") from None
    try:
        rendered = compiled.render(context)
    except SecurityError as exc:
        raise TemplateFailed(path, f"refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        raise TemplateFailed(path, f"undefined: {exc}") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError,
            AttributeError) as exc:
        raise TemplateFailed(path, f"render error: {type(exc).__name__}: {exc}") from None
    if len(rendered) > MAX_RENDERED_CHARS:
        raise TemplateFailed(path, f"rendered value is longer than {MAX_RENDERED_CHARS} "
                                   "characters")
    return rendered


def render_json(value: JsonValue, context: Mapping[str, Any], *, path: str) -> JsonValue:
    """Render every string value inside `value` (keys stay as written)."""
    if isinstance(value, str):
        return render(value, context, path=path)
    if isinstance(value, list):
        return [render_json(v, context, path=f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: render_json(v, context, path=f"{path}.{k}") for k, v in value.items()}
    return value


def render_step(step: Step, context: Mapping[str, Any], *, path: str) -> dict[str, Any]:
    """The step's fields as a plain dict, its template fields rendered.

    Rendered: `http` url, header values and body strings; `command` argv
    elements (one string each, never joined or split) and env values;
    `python` args strings; `notify` message. Everything else is copied.
    """
    out: dict[str, Any] = step.model_dump(mode="json")
    if step.type == "http":
        out["url"] = render(step.url, context, path=f"{path}.url")
        out["headers"] = _render_map(step.headers, context, path=f"{path}.headers")
        if step.body is not None:
            out["body"] = render_json(step.body, context, path=f"{path}.body")
    elif step.type == "command":
        out["argv"] = [_no_nul(render(arg, context, path=f"{path}.argv.{i}"), f"{path}.argv.{i}")
                       for i, arg in enumerate(step.argv)]
        out["env"] = {k: _no_nul(v, f"{path}.env.{k}")
                      for k, v in _render_map(step.env, context, path=f"{path}.env").items()}
    elif step.type == "python":
        out["args"] = {k: render_json(v, context, path=f"{path}.args.{k}")
                       for k, v in step.args.items()}
    elif step.type == "notify":
        out["message"] = render(step.message, context, path=f"{path}.message")
    return out


def _render_map(values: Mapping[str, str], context: Mapping[str, Any], *, path: str
                ) -> dict[str, str]:
    return {k: render(v, context, path=f"{path}.{k}") for k, v in values.items()}


def _no_nul(value: str, path: str) -> str:
    # The OS cannot pass NUL inside an argument; say so here, not as a spawn error.
    if "\x00" in value:
        raise TemplateFailed(path, "rendered value contains a NUL character")
    return value
