"""Runbook templates: one rendered value per field, a sandbox that holds, clear failures."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from pydantic import TypeAdapter

from daemon.runbooks.catalog import CommandStep, Step
from daemon.runbooks.templates import (
    MAX_RENDERED_CHARS,
    TemplateFailed,
    check,
    render,
    render_json,
    render_step,
)

EVIL = "x; rm -rf / #"
_STEP = TypeAdapter(Step)


def context(**labels: str) -> dict[str, Any]:
    return {
        "alert": {"labels": {"alertname": "DiskFull", "instance": "db-1:9100", **labels},
                  "annotations": {}, "fingerprint": "f1", "summary": "disk full",
                  "severity": "critical", "source": "alertmanager", "status": "firing",
                  "starts_at": "2024-05-01T10:00:00Z"},
        "incident": {"id": 7, "key": "INC-000007", "title": "disk", "status": "triggered",
                     "priority": "P2", "severity": "critical", "root_cause_ci": "db-1",
                     "impacted_services": ["svc-checkout"]},
        "ci": {"id": "db-1", "name": "DB 1", "type": "database", "service": "svc-checkout",
               "owner_group": "dba", "criticality": 2, "environment": "prod",
               "attributes": {"region": "eu-west-1"}},
        "params": {"unit": "postgresql.service"},
        "run": {"id": 3, "runbook": "clear-tmp", "dry_run": False},
    }


def failure(template: str, ctx: dict[str, Any] | None = None, path: str = "x.argv.1"
            ) -> TemplateFailed:
    with pytest.raises(TemplateFailed) as caught:
        render(template, context() if ctx is None else ctx, path=path)
    return caught.value


# -- injection -------------------------------------------------------------


def test_a_hostile_label_stays_one_literal_argv_element() -> None:
    step = _STEP.validate_python({
        "type": "command", "name": "clean",
        "argv": ["/usr/bin/find", "/tmp/{{ alert.labels.job }}", "--name",
                 "{{ alert.labels.job }}", "{{ params.unit }}"],
    })
    assert isinstance(step, CommandStep)
    rendered = render_step(step, context(job=EVIL), path="runbooks.0.steps.0")
    assert rendered["argv"] == ["/usr/bin/find", f"/tmp/{EVIL}", "--name", EVIL,
                                "postgresql.service"]
    assert len(rendered["argv"]) == len(step.argv)
    # Not re-evaluated either: a label that looks like a template is data.
    again = render_step(step, context(job="{{ ''.__class__ }}"), path="s")
    assert again["argv"][3] == "{{ ''.__class__ }}"


def test_quotes_and_spaces_are_not_interpreted() -> None:
    value = "a b 'c' \"d\" $(id) `id` | cat > /etc/passwd"
    step = _STEP.validate_python({"type": "command", "name": "n",
                                  "argv": ["echo", "{{ alert.labels.v }}"]})
    argv = render_step(step, context(v=value), path="s")["argv"]
    assert argv == ["echo", value]
    assert shlex.split(shlex.join(argv)) == argv


def test_env_values_render_one_each_and_nul_is_refused() -> None:
    step = _STEP.validate_python({"type": "command", "name": "n", "argv": ["env"],
                                  "env": {"TARGET": "{{ alert.labels.job }}"}})
    assert render_step(step, context(job=EVIL), path="s")["env"] == {"TARGET": EVIL}
    with pytest.raises(TemplateFailed) as caught:
        render_step(step, context(job="a\x00b"), path="rb.steps.0")
    assert str(caught.value) == "rb.steps.0.env.TARGET: rendered value contains a NUL character"


def test_http_step_renders_url_headers_and_body_strings() -> None:
    step = _STEP.validate_python({
        "type": "http", "name": "restart", "url": "http://agent/{{ ci.id }}/restart",
        "headers": {"X-Incident": "{{ incident.key }}"},
        "body": {"unit": "{{ params.unit }}", "force": True, "n": 2,
                 "tags": ["{{ alert.labels.alertname }}", None]},
    })
    out = render_step(step, context(), path="s")
    assert out["url"] == "http://agent/db-1/restart"
    assert out["headers"] == {"X-Incident": "INC-000007"}
    assert out["body"] == {"unit": "postgresql.service", "force": True, "n": 2,
                           "tags": ["DiskFull", None]}
    assert out["method"] == "POST" and out["expect_status"] == [200, 201, 202, 204]
    assert out["type"] == "http" and out["name"] == "restart"


def test_python_and_notify_steps() -> None:
    py = _STEP.validate_python({"type": "python", "name": "p", "action": "scale",
                                "args": {"replicas": 3, "ns": "{{ ci.environment }}"}})
    assert render_step(py, context(), path="s")["args"] == {"replicas": 3, "ns": "prod"}
    note = _STEP.validate_python({"type": "notify", "name": "n",
                                  "message": "{{ run.runbook }} on {{ ci.name }}"})
    assert render_step(note, context(), path="s")["message"] == "clear-tmp on DB 1"
    wait = _STEP.validate_python({"type": "wait_for_resolution", "name": "w",
                                  "timeout_seconds": 300})
    assert render_step(wait, context(), path="s")["timeout_seconds"] == 300


def test_render_json_names_the_nested_path() -> None:
    with pytest.raises(TemplateFailed) as caught:
        render_json({"a": [1, "{{ nope }}"]}, context(), path="steps.0.body")
    assert caught.value.path == "steps.0.body.a.1"


# -- the sandbox -----------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__ }}",
    "{{ alert.labels.__class__ }}",
    "{{ alert.labels.update({'x': 1}) }}",
    "{{ '{0.__class__}'.format(alert) }}",
    "{{ alert | attr('__class__') }}",
    "{{ 'a' * 100000000 }}",
    "{{ 2 ** 100000 }}",
])
def test_sandbox_escapes_fail_clearly(template: str) -> None:
    err = failure(template)
    assert err.path == "x.argv.1"
    assert err.reason.startswith("refused by the sandbox: ")
    assert str(err).startswith("x.argv.1: refused by the sandbox: ")


def test_cycler_globals_are_out_of_reach() -> None:
    # `cycler` is removed from the globals, and its internals are refused anyway.
    err = failure("{{ cycler.__init__.__globals__ }}")
    assert str(err).startswith("x.argv.1: refused by the sandbox: access to attribute '__init__'")
    with pytest.raises(TemplateFailed, match="unknown variable cycler"):
        check("{{ cycler.__init__.__globals__ }}", path="p")
    err = failure("{{ obj.__init__.__globals__ }}", {**context(), "obj": object()})
    assert "refused by the sandbox" in err.reason and "__init__" in err.reason


def test_private_attributes_are_refused() -> None:
    class Ci:
        name = "db-1"
        _secret = "hunter2"

    assert render("{{ ci.name }}", {"ci": Ci()}, path="p") == "db-1"
    err = failure("{{ ci._secret }}", {"ci": Ci()}, path="steps.0.url")
    assert str(err) == ("steps.0.url: refused by the sandbox: access to attribute "
                        "'_secret' of 'Ci' object is unsafe.")
    assert "hunter2" not in str(err)


def test_strict_undefined_names_the_path() -> None:
    err = failure("{{ alert.labels.nope }}", path="runbooks.0.steps.1.argv.2")
    assert str(err) == "runbooks.0.steps.1.argv.2: undefined: 'dict object' has no attribute 'nope'"
    err = failure("{{ missing }}", path="runbooks.0.params.unit")
    assert str(err) == "runbooks.0.params.unit: undefined: 'missing' is undefined"
    # ci is None for an unbound alert: using it is an error, not an empty string.
    err = failure("{{ ci.id }}", {**context(), "ci": None})
    assert err.reason.startswith("undefined: ")


def test_other_render_errors_are_template_failures() -> None:
    assert failure("{{ 1 / 0 }}").reason == "render error: ZeroDivisionError: division by zero"
    err = failure("{{ x", path="p")
    assert err.reason.startswith("template syntax error at line 1: ")
    assert failure("{{ range(10**6) | list }}").reason.startswith("render error: ")


def test_output_size_is_capped() -> None:
    big = {**context(), "big": "a" * (MAX_RENDERED_CHARS // 2 + 1)}
    assert failure("{{ big }}{{ big }}", big).reason.startswith("rendered value is longer")


def test_filters_and_plain_text() -> None:
    ctx = context()
    assert render("plain", ctx, path="p") == "plain"
    assert render("{{ alert.labels.instance.split(':')[0] | upper }}", ctx, path="p") == "DB-1"
    assert render("{{ incident.impacted_services | join(',') }}", ctx, path="p") == "svc-checkout"
    assert render("{% if ci %}{{ ci.attributes.region }}{% endif %}", ctx, path="p") == "eu-west-1"
    # No autoescape: the command gets the value, not HTML.
    assert render("{{ alert.labels.v }}", context(v="<a&b>"), path="p") == "<a&b>"


def test_check_compiles_without_rendering() -> None:
    check("{{ alert.labels.x }} {% for s in incident.impacted_services %}{{ s }}{% endfor %}",
          path="p")
    check("{% set n = 3 %}{{ n }} {{ range(3) | list }}", path="p")
    with pytest.raises(TemplateFailed) as caught:
        check("{{ alert.labels.x ", path="runbooks.0.steps.0.url")
    assert str(caught.value).startswith("runbooks.0.steps.0.url: template syntax error at line 1")
    with pytest.raises(TemplateFailed) as caught:
        check("{{ alrt.labels.x }}", path="p")
    assert str(caught.value) == "p: unknown variable alrt (use alert, ci, incident, params, run)"
    with pytest.raises(TemplateFailed, match="unknown variable params"):
        check("{{ params.x }}", path="p", roots={"alert", "incident", "ci", "run"})
