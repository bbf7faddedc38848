"""The runbook catalog: loading, every kind of mistake as `file: path: reason`, and matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.models import ConfigurationItem, Priority
from daemon.runbooks.catalog import (
    Catalog,
    CatalogHolder,
    CatalogInvalid,
    CommandStep,
    HttpStep,
    NotifyStep,
    PythonStep,
    RateLimit,
    Runbook,
    WaitStep,
    read_catalog,
)
from daemon.runbooks.matching import matches

ACTIONS = frozenset({"scale_deployment"})

VALID = """\
runbooks:
  - name: restart-unit
    description: Restart a failed systemd unit through the host agent
    match:
      alerts: ['alertname="SystemdUnitFailed"', 'severity=~"critical|warning"']
      ci_types: [host]
      min_priority: P3
    params:
      unit: "{{ alert.labels.unit }}"
    approval: required
    steps:
      - name: restart
        type: http
        url: "http://{{ ci.id }}:9000/units/{{ params.unit }}/restart"
        headers: {X-Incident: "{{ incident.key }}"}
        body: {reason: "{{ alert.summary }}", force: false}
        idempotent: true
        retries: 2
      - name: wait
        type: wait_for_resolution
        timeout_seconds: 300
      - name: tell
        type: notify
        when: failed
        message: "restart of {{ params.unit }} did not help"
  - name: clear-tmp
    match:
      alerts: ['alertname="DiskFull"']
    rate_limit: null
    dry_run: true
    steps:
      - name: clean
        type: command
        argv: [/usr/bin/find, "{{ ci.attributes.tmp_dir }}", -mindepth, "1", -delete]
        cwd: /
        env: {TARGET: "{{ ci.id }}"}
        timeout_seconds: 30
      - name: scale
        type: python
        action: scale_deployment
        when: always
        args: {replicas: 3, name: "{{ ci.name }}"}
"""


def write(tmp_path: Path, text: str, name: str = "runbooks.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(*files: Path, actions: frozenset[str] = ACTIONS) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        read_catalog(files, actions=actions)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def one_runbook(steps: str, match: str = "{}", extra: str = "") -> str:
    return f"runbooks:\n  - name: rb\n    match: {match}\n{extra}    steps:\n{steps}"


# -- a valid catalog -------------------------------------------------------


def test_a_valid_catalog_loads(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    catalog = read_catalog([path], actions=ACTIONS)
    assert list(catalog.runbooks) == ["restart-unit", "clear-tmp"]
    assert catalog.files == (path,)
    restart = catalog.runbooks["restart-unit"]
    assert restart.approval == "required" and not restart.dry_run
    assert restart.rate_limit == RateLimit(max_runs=3, per_seconds=3600)
    assert restart.circuit_breaker_failures == 3 and restart.timeout_seconds == 600
    assert restart.match.statuses == ["triggered"] and restart.match.min_priority == "P3"
    http, wait, notify = restart.steps
    assert isinstance(http, HttpStep) and http.method == "POST" and http.retries == 2
    assert http.when == "succeeded" and http.body == {"reason": "{{ alert.summary }}",
                                                      "force": False}
    assert isinstance(wait, WaitStep) and wait.timeout_seconds == 300
    assert isinstance(notify, NotifyStep) and notify.when == "failed"
    clear = catalog.runbooks["clear-tmp"]
    assert clear.rate_limit is None and clear.dry_run
    command, python = clear.steps
    assert isinstance(command, CommandStep)
    assert command.env_allowlist == ["PATH", "LANG", "LC_ALL", "TZ"] and command.cwd == "/"
    assert isinstance(python, PythonStep) and python.args == {"replicas": 3,
                                                              "name": "{{ ci.name }}"}


def test_runbooks_from_several_files_and_an_empty_list(tmp_path: Path) -> None:
    first = write(tmp_path, VALID, "a.yaml")
    second = write(tmp_path, "runbooks: []\n", "b.yaml")
    catalog = read_catalog([first, second], actions=ACTIONS)
    assert len(catalog.runbooks) == 2 and catalog.files == (first, second)
    assert read_catalog([]).runbooks == {}


def test_the_installed_entry_points_are_the_default_actions(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    problems = problems_of(path, actions=frozenset())
    assert problems == [
        f"{path}: runbooks.1.steps.1.action: no python action 'scale_deployment' in the entry "
        "point group incidentd.runbook_actions (none are installed)"]


# -- every kind of mistake -------------------------------------------------


def test_unknown_step_type(tmp_path: Path) -> None:
    path = write(tmp_path, one_runbook("      - {name: s, type: shell, argv: [ls]}\n"))
    assert problems_of(path) == [
        f"{path}: runbooks.0.steps.0: unknown step type 'shell' (use http, command, python, "
        "wait_for_resolution, notify)"]
    path = write(tmp_path, one_runbook("      - {name: s, argv: [ls]}\n"))
    assert problems_of(path) == [
        f"{path}: runbooks.0.steps.0: `type` is required (one of http, command, python, "
        "wait_for_resolution, notify)"]


def test_missing_and_unknown_fields_name_the_path_without_the_union_tag(tmp_path: Path) -> None:
    steps = ("      - {name: a, type: notify, message: hi}\n"
             "      - {name: b, type: command, argv: [ls, '{{ ci.id }}', ''], shell: true}\n"
             "      - {name: c, type: http}\n")
    path = write(tmp_path, one_runbook(steps))
    assert problems_of(path) == [
        f"{path}: runbooks.0.steps.1.shell: unknown key",
        f"{path}: runbooks.0.steps.2.url: required",
    ]
    path = write(tmp_path, "runbooks:\n  - name: rb\n    steps: []\n")
    assert problems_of(path) == [
        f"{path}: runbooks.0.match: required",
        f"{path}: runbooks.0.steps: List should have at least 1 item after validation, not 0",
    ]


def test_bad_values(tmp_path: Path) -> None:
    steps = ("      - {name: a, type: command, argv: ['{{ alert.labels.prog }}', x]}\n"
             "      - {name: b, type: command, argv: [ls], cwd: tmp, env: {'BAD-NAME': x}}\n"
             "      - {name: c, type: http, url: 'http://x', method: BREW}\n"
             "      - {name: c, type: notify, message: hi}\n")
    path = write(tmp_path, one_runbook(steps, extra="    params: {'1x': a}\n"))
    assert problems_of(path) == [
        f"{path}: runbooks.0.params: '1x' is not a name (letters, digits, _; not starting "
        "with a digit)",
        f"{path}: runbooks.0.steps.0.argv: argv[0], the program, must be written out, "
        "not a template",
        f"{path}: runbooks.0.steps.1.cwd: must be an absolute path",
        f"{path}: runbooks.0.steps.1.env: 'BAD-NAME' is not a name (letters, digits, _; "
        "not starting with a digit)",
        f"{path}: runbooks.0.steps.2.method: unknown HTTP method 'BREW' (use DELETE, GET, "
        "HEAD, OPTIONS, PATCH, POST, PUT)",
    ]
    path = write(tmp_path, one_runbook("      - {name: c, type: notify, message: hi}\n"
                                       "      - {name: c, type: notify, message: ho}\n"))
    assert problems_of(path) == [f"{path}: runbooks.0: step name 'c' is used twice"]


def test_bad_matcher(tmp_path: Path) -> None:
    match = """{alerts: ['alertname="A"', 'severity=~"(crit"', 'just text'], statuses: [open]}"""
    path = write(tmp_path, one_runbook("      - {name: n, type: notify, message: hi}\n", match))
    problems = problems_of(path)
    assert problems[0].startswith(
        f"""{path}: runbooks.0.match.alerts: bad regular expression in 'severity=~"(crit"': """)
    assert problems[1:] == [
        f"{path}: runbooks.0.match.statuses: unknown incident status 'open' (use triggered, "
        "acknowledged, on_hold, resolved, closed)"]
    path = write(tmp_path, one_runbook("      - {name: n, type: notify, message: hi}\n",
                                       "{alerts: ['just text'], min_priority: P9}"))
    assert problems_of(path) == [
        f"{path}: runbooks.0.match.alerts: not a matcher: 'just text' (use name=\"v\", !=, "
        "=~ or !~)",
        f"{path}: runbooks.0.match.min_priority: Input should be 'P1', 'P2', 'P3', 'P4' or 'P5'",
    ]


def test_bad_template_syntax_and_unknown_variables(tmp_path: Path) -> None:
    steps = ("      - name: a\n        type: command\n"
             "        argv: [ls, ok, '{{ alert.labels.x ']\n"
             "      - {name: b, type: http, url: '{{ alrt.x }}', body: {k: [1, '{% if %}']}}\n"
             "      - {name: c, type: python, action: scale_deployment, args: {n: '{{ nope }}'}}\n")
    extra = "    params: {p: '{{ params.q }}'}\n"
    path = write(tmp_path, one_runbook(steps, extra=extra))
    problems = problems_of(path)
    assert problems == [
        f"{path}: runbooks.0.params.p: unknown variable params (use alert, ci, incident, run)",
        f"{path}: runbooks.0.steps.0.argv.2: template syntax error at line 1: unexpected "
        "end of template, expected 'end of print statement'.",
        f"{path}: runbooks.0.steps.1.url: unknown variable alrt (use alert, ci, incident, "
        "params, run)",
        f"{path}: runbooks.0.steps.1.body.k.1: template syntax error at line 1: Expected an "
        "expression, got 'end of statement block'",
        f"{path}: runbooks.0.steps.2.args.n: unknown variable nope (use alert, ci, incident, "
        "params, run)",
    ]


def test_unknown_python_entry_point(tmp_path: Path) -> None:
    path = write(tmp_path, one_runbook("      - {name: p, type: python, action: reboot_world}\n"))
    assert problems_of(path) == [
        f"{path}: runbooks.0.steps.0.action: no python action 'reboot_world' in the entry point "
        "group incidentd.runbook_actions (scale_deployment)"]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, VALID, "a.yaml")
    second = write(tmp_path, "runbooks:\n  - name: other\n    match: {}\n    steps: "
                             "[{name: n, type: notify, message: hi}]\n"
                             "  - name: clear-tmp\n    match: {}\n    steps: "
                             "[{name: n, type: notify, message: hi}]\n", "b.yaml")
    assert problems_of(first, second) == [
        f"{second}: runbooks.1.name: duplicate runbook name 'clear-tmp', first defined at "
        f"{first}: runbooks.1"]


def test_bad_yaml_bad_shape_and_unreadable_files(tmp_path: Path) -> None:
    broken = write(tmp_path, "runbooks:\n  - name: [unclosed\n", "broken.yaml")
    (problem,) = problems_of(broken)
    assert problem.startswith(f"{broken}: line 3, column 1: invalid YAML: ")
    scalar = write(tmp_path, "just a string\n", "scalar.yaml")
    empty = write(tmp_path, "", "empty.yaml")
    other = write(tmp_path, "runbook: []\n", "other.yaml")
    missing = tmp_path / "missing.yaml"
    assert problems_of(scalar, empty, other, missing) == [
        f"{scalar}: the top level must be a mapping with a `runbooks` list",
        f"{empty}: the top level must be a mapping with a `runbooks` list",
        f"{other}: runbooks: required",
        f"{other}: runbook: unknown key",
        f"{missing}: cannot read: No such file or directory",
    ]


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    a = write(tmp_path, one_runbook("      - {name: s, type: shell}\n"), "a.yaml")
    b = write(tmp_path, one_runbook("      - {name: p, type: python, action: nope}\n"), "b.yaml")
    problems = problems_of(a, b)
    assert [p.split(":")[0] for p in problems] == [str(a), str(b)]


# -- the holder --------------------------------------------------------------


def test_reload_keeps_the_old_catalog_when_the_new_one_is_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, one_runbook("      - {name: n, type: notify, message: hi}\n"))
    holder = CatalogHolder(files=[path])
    assert list(holder.current.runbooks) == ["rb"]
    path.write_text(VALID.replace("scale_deployment", "nope"), encoding="utf-8")
    with pytest.raises(CatalogInvalid):
        holder.reload()
    assert list(holder.current.runbooks) == ["rb"]
    path.write_text(VALID.replace("type: python\n        action: scale_deployment",
                                  "type: notify\n        message: hi")
                    .replace("args: {replicas: 3, name: \"{{ ci.name }}\"}", ""),
                    encoding="utf-8")
    assert list(holder.reload().runbooks) == ["restart-unit", "clear-tmp"]
    assert holder.current.files == (path,)
    holder.replace(Catalog())
    assert holder.current.runbooks == {} and CatalogHolder().current.runbooks == {}


# -- matching ----------------------------------------------------------------

HOST = ConfigurationItem(id="host-17", name="host-17", type="host", service="svc-checkout")
SERVICE = ConfigurationItem(id="svc-pay", name="Pay", type="service")


def runbook(**match: object) -> Runbook:
    return Runbook.model_validate({"name": "rb", "match": match,
                                   "steps": [{"name": "n", "type": "notify", "message": "m"}]})


def hit(rb: Runbook, *, labels: dict[str, str] | None = None, status: str = "triggered",
        priority: str | None = "P2", services: tuple[str, ...] = (),
        ci: ConfigurationItem | None = HOST) -> bool:
    return matches(rb, labels=labels or {"alertname": "DiskFull", "severity": "critical"},
                   incident_status=status, priority=priority, impacted_services=services, ci=ci)


def test_an_empty_match_applies_to_triggered_incidents() -> None:
    rb = runbook()
    assert hit(rb) and hit(rb, ci=None, priority=None)
    assert not hit(rb, status="acknowledged")
    assert hit(runbook(statuses=["triggered", "acknowledged"]), status="acknowledged")


def test_matching_by_labels() -> None:
    rb = runbook(alerts=['alertname="DiskFull"', 'severity=~"crit.*|warning"',
                         'team!="db"', 'env!~"dev|test"'])
    assert hit(rb)
    assert hit(rb, labels={"alertname": "DiskFull", "severity": "warning", "env": "prod"})
    assert not hit(rb, labels={"alertname": "DiskFull", "severity": "info"})
    assert not hit(rb, labels={"alertname": "DiskFull", "severity": "critical", "team": "db"})
    assert not hit(rb, labels={"alertname": "DiskFull", "severity": "critical", "env": "dev"})
    assert not hit(rb, labels={"alertname": "DiskFullX", "severity": "critical"})
    # Regexes are anchored, as in Alertmanager.
    assert not hit(rb, labels={"alertname": "DiskFull", "severity": "xcritical"})


def test_matching_by_ci_type() -> None:
    rb = runbook(ci_types=["host", "vm"])
    assert hit(rb)
    assert not hit(rb, ci=ConfigurationItem(id="db", name="db", type="database"))
    assert not hit(rb, ci=None)


def test_matching_by_service() -> None:
    rb = runbook(services=["svc-checkout"])
    assert hit(rb)  # the CI's own service
    assert hit(rb, ci=None, services=("svc-checkout", "svc-x"))  # an impacted service
    assert not hit(rb, ci=None)
    assert not hit(rb, ci=ConfigurationItem(id="db", name="db", type="database"),
                   services=("svc-other",))
    assert hit(runbook(services=["svc-pay"]), ci=SERVICE)  # a service CI is its own service


def test_matching_by_min_priority() -> None:
    rb = runbook(min_priority="P3")
    assert hit(rb, priority="P1") and hit(rb, priority="P3") and hit(rb, priority=Priority.P2)
    assert not hit(rb, priority="P4") and not hit(rb, priority="P5")
    assert not hit(rb, priority=None)


def test_matching_by_status_and_all_criteria_together() -> None:
    rb = runbook(alerts=['alertname="DiskFull"'], ci_types=["host"], services=["svc-checkout"],
                 min_priority="P2", statuses=["triggered", "acknowledged"])
    assert hit(rb) and hit(rb, status="acknowledged")
    assert not hit(rb, status="resolved")
    assert not hit(rb, priority="P3")
    assert not hit(rb, labels={"alertname": "Other"})
