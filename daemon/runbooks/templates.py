"""Rendering runbook parameters and step fields from the alert, incident and CI.

The sandbox is `daemon.templating`'s. Each template renders to exactly one
string: one argv element, one header value, one field. Nothing here joins or
splits the result, so `x; rm -rf / #` stays one literal argument.

The render context is
`{"alert": {...}, "incident": {...}, "ci": {...} | None, "params": {...}, "run": {...}}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from daemon.runbooks.catalog import CONTEXT_ROOTS, Step
from daemon.templating import MAX_RENDERED_CHARS, TemplateFailed, render, render_json
from daemon.templating import check as check_template

__all__ = ["CONTEXT_ROOTS", "MAX_RENDERED_CHARS", "TemplateFailed", "check", "render",
           "render_json", "render_step"]

def check(template: str, *, path: str, roots: Iterable[str] = CONTEXT_ROOTS) -> None:
    """Compile `template` and check it names only runbook variables (`roots` narrows
    them: parameters cannot use `params`, which they are building)."""
    check_template(template, path=path, roots=roots)


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
