"""The CMDB document: YAML/JSON/CSV parsing and whole-set validation, with exact messages."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from daemon.itsm.cmdb import CmdbInvalid, find_cycles, parse_ci, parse_document, read_files
from daemon.itsm.cmdb_documents import MAX_LISTED_PROBLEMS, validate
from daemon.models import ConfigurationItem

DESIGN_EXAMPLE = """\
cis:
  - id: svc-checkout         # a business service is a CI of type `service`
    name: Checkout
    type: service
    criticality: 1           # 1 (highest) .. 5
    depends_on: [pg-orders]
  - id: pg-orders            # unique, stable
    name: Orders PostgreSQL
    type: database           # free text
    service: svc-checkout    # id of the business-service CI it belongs to (optional)
    owner_group: dba
    criticality: 2
    environment: prod
    attributes: {region: eu-west-1}
    depends_on: [host-17]    # ids of CIs this one needs
  - id: host-17
    type: host
"""

EXPECTED = [
    ConfigurationItem(id="svc-checkout", name="Checkout", type="service", criticality=1,
                      depends_on=("pg-orders",)),
    ConfigurationItem(id="pg-orders", name="Orders PostgreSQL", type="database",
                      service="svc-checkout", owner_group="dba", criticality=2,
                      environment="prod", attributes={"region": "eu-west-1"},
                      depends_on=("host-17",)),
    ConfigurationItem(id="host-17", name="host-17", type="host", criticality=3),
]


def ci(id_: str, *deps: str, type_: str = "app", service: str | None = None
       ) -> ConfigurationItem:
    return ConfigurationItem(id=id_, name=id_, type=type_, service=service, depends_on=deps)


def errors_of(call: object) -> list[str]:
    assert callable(call)
    with pytest.raises(CmdbInvalid) as caught:
        call()
    return caught.value.describe()


# -- parsing -----------------------------------------------------------------


def test_yaml_and_json_of_the_design_example_give_the_same_cis() -> None:
    from_yaml = parse_document(DESIGN_EXAMPLE, "yaml")
    assert from_yaml == EXPECTED
    import yaml

    as_json = json.dumps(yaml.safe_load(DESIGN_EXAMPLE)).encode()
    assert parse_document(as_json, "json") == EXPECTED
    # YAML is a superset of JSON: a .yaml file may hold JSON.
    assert parse_document(as_json, "yaml") == EXPECTED


def test_defaults_numbers_as_ids_and_edges_as_a_sorted_set() -> None:
    [item] = parse_document("cis: [{id: 17, type: host, depends_on: [b, 18, b], "
                            "attributes: {since: 2024-01-01}}]", "yaml")
    assert item == ConfigurationItem(id="17", name="17", type="host", criticality=3,
                                     depends_on=("18", "b"),
                                     attributes={"since": "2024-01-01"})


def test_document_errors_name_field_paths() -> None:
    text = ("cis:\n"
            "  - {id: a b, type: x, criticality: 7, colour: red}\n"
            "  - {name: n}\n"
            "  - {id: c, type: x, depends_on: ['']}\n")
    assert errors_of(lambda: parse_document(text, "yaml")) == [
        "cis[0].id: must not contain whitespace",
        "cis[0].criticality: Input should be less than or equal to 5",
        "cis[0].colour: unknown key",
        "cis[1].id: required",
        "cis[1].type: required",
        "cis[2].depends_on[0]: String should have at least 1 character",
    ]


def test_malformed_documents() -> None:
    assert errors_of(lambda: parse_document(b'{"cis": [', "json")) == [
        "(document): invalid JSON: unexpected end of data: line 1 column 10 (char 9)"]
    assert errors_of(lambda: parse_document("cis: [\n", "yaml")) == [
        "(document): line 2, column 1: invalid YAML: did not find expected node content"]
    assert errors_of(lambda: parse_document("- a\n", "yaml")) == [
        "(document): the top level must be a mapping with a `cis` list"]
    assert errors_of(lambda: parse_document("{}", "json")) == ["cis: required"]
    assert errors_of(lambda: parse_document(b"\xff", "yaml")) == [
        "(document): not UTF-8 text: invalid start byte at byte 0"]


def test_nul_characters_are_refused_anywhere() -> None:
    body = b'{"cis": [{"id": "a\\u0000", "type": "x", "attributes": {"k": ["v\\u0000"]}}]}'
    assert errors_of(lambda: parse_document(body, "json")) == [
        "cis[0].id: NUL characters are not accepted",
        "cis[0].attributes: NUL characters are not accepted",
    ]


def test_one_ci_object_for_put() -> None:
    assert parse_ci({"id": "x", "type": "t"}) == ConfigurationItem(id="x", name="x", type="t")
    assert errors_of(lambda: parse_ci({"id": "x", "type": "t", "criticality": "high"})) == [
        "criticality: Input should be a valid integer, unable to parse string as an integer"]


CSV = """\ufeffid,name,type,service,owner_group,criticality,environment,depends_on,attributes
svc-checkout,Checkout,service,,,1,,pg-orders,
pg-orders,Orders PostgreSQL,database,svc-checkout,dba,2,prod,host-17,"{""region"": ""eu-west-1""}"

host-17,,host,,,,,,
"""


def test_csv_with_bom_blank_lines_and_empty_cells() -> None:
    assert parse_document(CSV.encode(), "csv") == EXPECTED


def test_csv_columns_may_be_a_subset_in_any_order_and_lists_split_on_semicolons_or_spaces(
) -> None:
    text = "type,ID,depends_on\napp,a,b; c  d\n"
    [item] = parse_document(text, "csv")
    assert (item.id, item.type, item.depends_on) == ("a", "app", ("b", "c", "d"))


def test_csv_errors_name_row_and_column() -> None:
    text = ("id,type,criticality,attributes\n"
            "a,x,9,\n"
            "b,,2,[1]\n"
            "c,x,3,{nope\n"
            "d,x\n")
    assert errors_of(lambda: parse_document(text, "csv")) == [
        "row 2: criticality: Input should be less than or equal to 5",
        "row 3: type: required",
        "row 3: attributes: Input should be a valid dictionary",
        "row 4: attributes: invalid JSON: unexpected character, expected a string key: line 1 "
        "column 2 (char 1)",
        "row 5: 2 columns, the header has 4",
    ]


def test_csv_header_problems() -> None:
    assert errors_of(lambda: parse_document("", "csv")) == [
        "row 1: a header row is required: id,name,type,service,owner_group,criticality,"
        "environment,depends_on,attributes"]
    assert errors_of(lambda: parse_document("id,colour,id\n", "csv")) == [
        "row 1: id: column given 2 times",
        "row 1: colour: unknown column; use id, name, type, service, owner_group, criticality, "
        "environment, depends_on, attributes",
        "row 1: type: required column is missing",
    ]


# -- validation ----------------------------------------------------------------


def test_a_valid_set_passes() -> None:
    validate(EXPECTED)
    validate([])


def test_every_problem_is_listed_with_the_ci_ids() -> None:
    cis = [
        ci("svc", "app", type_="service"),
        ci("app", "pg-orders", "host-99", "app", service="svc"),
        ci("pg-orders", "host-17", service="nope"),
        ci("host-17", service="pg-orders"),
        ci("host-17"),
    ]
    with pytest.raises(CmdbInvalid) as caught:
        validate(cis)
    err = caught.value
    assert err.describe() == [
        "host-17.id: duplicate id, given 2 times",
        "app.depends_on: unknown CI 'host-99'",
        "app.depends_on: depends on itself",
        "pg-orders.service: unknown CI 'nope'",
    ]
    assert err.message == ("invalid CMDB: 4 problems, the first: host-17.id: duplicate id, "
                           "given 2 times")
    assert err.errors[1] == {"field": "app.depends_on", "reason": "unknown CI 'host-99'"}
    assert err.status == 400


def test_service_must_name_a_service() -> None:
    assert errors_of(lambda: validate([ci("pg-orders"), ci("x", service="pg-orders")])) == [
        "x.service: 'pg-orders' is of type 'app', not 'service'"]


def test_design_example_without_its_host_names_the_missing_target() -> None:
    assert errors_of(lambda: validate(EXPECTED[:2])) == [
        "pg-orders.depends_on: unknown CI 'host-17'"]


def test_cycles_are_reported_with_their_path() -> None:
    cis = [ci("c", "a"), ci("a", "b"), ci("b", "c"), ci("d", "a"),
           ci("x", "y"), ci("y", "x"), ci("z")]
    assert errors_of(lambda: validate(cis)) == ["cycle: a -> b -> c -> a", "cycle: x -> y -> x"]


def test_a_cycle_is_a_shortest_one_through_the_smallest_id_of_its_component() -> None:
    # a -> b -> c -> d -> a, plus the shortcut b -> a.
    cis = [ci("a", "b"), ci("b", "a", "c"), ci("c", "d"), ci("d", "a")]
    assert find_cycles(cis) == [["a", "b", "a"]]


def test_self_loops_are_not_also_reported_as_cycles() -> None:
    assert errors_of(lambda: validate([ci("a", "a", "b"), ci("b", "a")])) == [
        "a.depends_on: depends on itself", "cycle: a -> b -> a"]


def test_a_long_cycle_is_found_without_recursion() -> None:
    n = 60_000
    cis = [ci(f"n{i:05d}", f"n{(i + 1) % n:05d}") for i in range(n)]
    [cycle] = find_cycles(cis)
    assert len(cycle) == n + 1
    assert cycle[0] == cycle[-1] == "n00000"
    assert cycle[1] == "n00001"


def test_validation_over_existing_cis() -> None:
    existing = [ci("svc", "a", type_="service"), ci("a", "b"), ci("b")]
    validate([ci("c", "a", service="svc")], existing)
    # A given CI replaces the existing one of its id; the union is checked.
    assert errors_of(lambda: validate([ci("b", "a")], existing)) == ["cycle: a -> b -> a"]
    assert errors_of(lambda: validate([ci("svc", "a")], [*existing, ci("d", service="svc")])) == [
        "d.service: 'svc' is of type 'app', not 'service'"]


def test_a_flood_of_problems_is_listed_up_to_a_cap() -> None:
    cis = [ci(f"c{i}", "missing") for i in range(MAX_LISTED_PROBLEMS + 5)]
    with pytest.raises(CmdbInvalid) as caught:
        validate(cis)
    assert len(caught.value.problems) == MAX_LISTED_PROBLEMS + 5
    assert len(caught.value.errors) == MAX_LISTED_PROBLEMS + 1
    assert caught.value.errors[-1] == {"field": "(document)",
                                       "reason": "5 more problems not listed"}


def random_dag(n: int, edges: int, seed: int = 7) -> list[ConfigurationItem]:
    """`n` CIs, `edges` edges, each from a CI to one with a larger index: acyclic."""
    rng = random.Random(seed)
    deps: dict[int, set[int]] = {i: set() for i in range(n)}
    made = 0
    while made < edges:
        a, b = sorted(rng.sample(range(n), 2))
        made += b not in deps[a]
        deps[a].add(b)
    order = list(range(n))
    rng.shuffle(order)  # ids in no particular relation to the topological order
    return [ci(f"ci-{order[i]}", *(f"ci-{order[j]}" for j in sorted(d)))
            for i, d in deps.items()]


def test_50k_random_dag_validates_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    cis = random_dag(50_000, 150_000)
    started = time.perf_counter()
    validate(cis)
    elapsed = time.perf_counter() - started
    # Follow dependencies from the first CI as far as they go, then close the loop.
    at = {c.id: i for i, c in enumerate(cis)}
    path = [0]
    while cis[path[-1]].depends_on:
        path.append(at[cis[path[-1]].depends_on[0]])
    last = cis[path[-1]]
    cis[path[-1]] = ConfigurationItem(id=last.id, name=last.id, type="app",
                                      depends_on=(cis[0].id,))
    started = time.perf_counter()
    with pytest.raises(CmdbInvalid) as caught:
        validate(cis)
    [problem] = caught.value.problems
    assert problem.field == "cycle"
    assert len(problem.ci_ids) <= len(path)
    elapsed_bad = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nvalidate 50,000 CIs / 150,000 edges: {elapsed * 1000:.0f} ms valid, "
              f"{elapsed_bad * 1000:.0f} ms with a cycle of {len(problem.ci_ids)}")


# -- files -------------------------------------------------------------------------


def test_files_are_merged_and_problems_name_their_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.json"
    a.write_text("cis: [{id: svc, type: service, depends_on: [app]}, {id: app, type: app}]")
    b.write_text(json.dumps({"cis": [{"id": "db", "type": "database", "service": "svc"}]}))
    assert [c.id for c in read_files([a, b])] == ["svc", "app", "db"]

    b.write_text(json.dumps({"cis": [{"id": "app", "type": "x", "depends_on": ["gone"]}]}))
    assert errors_of(lambda: read_files([a, b])) == [
        f"{a}, {b}: app.id: duplicate id, given 2 times",
        f"{b}: app.depends_on: unknown CI 'gone'",
    ]
    missing = tmp_path / "missing.yaml"
    b.write_text('{"cis": [{"id": "x"}]}')
    assert errors_of(lambda: read_files([a, b, missing])) == [
        f"{b}: cis[0].type: required",
        f"{missing}: cannot read: No such file or directory",
    ]
