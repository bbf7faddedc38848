"""Templates an operator writes, rendered with untrusted data: one sandbox for all.

Alert and incident text is data, never code: it reaches a template only as the
*value* of a variable. Templates run in Jinja2's immutable sandbox (no
`__class__` walks, no `list.append` on the shared context), with
`StrictUndefined` so a misspelt variable is an error rather than an empty
string, and with caps on `*` and `**` so one template cannot eat the memory.
Each template renders to exactly one string; nothing here joins or splits it.
Runbook steps (`daemon.runbooks.templates`) and ITSM connector mappings
(`daemon.itsm.connectors.mapping`) both render through this module.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import JsonValue

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
# `lipsum`, `cycler` and `joiner` serve no template here; fewer objects, fewer ways out.
for _name in ("lipsum", "cycler", "joiner"):
    _ENV.globals.pop(_name, None)
_GLOBALS = frozenset(_ENV.globals)


@functools.lru_cache(maxsize=1024)
def _compile(template: str) -> Template:
    # Configured templates are few and rendered again and again: compile each once.
    return _ENV.from_string(template)


def check(template: str, *, path: str, roots: Iterable[str]) -> None:
    """Compile `template` and check it names only known variables; raise `TemplateFailed`.

    `roots` are the variables a template may name (each user of templates has its own).
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
