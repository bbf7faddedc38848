"""The incident page's dependency drawing: layout, the cap, escaping, alerting marks."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from daemon.correlation.topology import Topology
from daemon.models import ConfigurationItem
from daemon.web import drawing
from daemon.web.drawing import neighbourhood, svg

SVG = "{http://www.w3.org/2000/svg}"


def ci(ci_id: str, *deps: str, name: str | None = None, type_: str = "app"
       ) -> ConfigurationItem:
    return ConfigurationItem(id=ci_id, name=name or ci_id.upper(), type=type_,
                             depends_on=deps)


def chain() -> Topology:
    """san ← host ← db ← (app1, app2) ← web; plus far ← san (3 hops up: out of reach)."""
    return Topology.build([
        ci("far"), ci("san", "far"), ci("host", "san"), ci("db", "host"),
        ci("app1", "db"), ci("app2", "db"), ci("web", "app1", "app2"),
        ci("edge", "web"),  # 3 hops down: out of reach
        ci("lonely"),
    ])


def test_layers_upstream_above_root_downstream_below() -> None:
    d = neighbourhood(chain(), "db")
    layer = {n.id: n.layer for n in d.nodes}
    assert layer == {"san": -2, "host": -1, "db": 0, "app1": 1, "app2": 1, "web": 2}
    y = {n.id: n.y for n in d.nodes}
    assert y["san"] < y["host"] < y["db"] < y["app1"] == y["app2"] < y["web"]
    assert d.more == 0
    # Every drawn edge joins two drawn nodes, dependent first.
    assert set(d.edges) == {("host", "san"), ("db", "host"), ("app1", "db"), ("app2", "db"),
                            ("web", "app1"), ("web", "app2")}


def test_layout_is_deterministic_and_ordered_by_neighbours() -> None:
    topo = Topology.build([
        ci("root"), ci("a", "root"), ci("b", "root"),
        ci("za", "a"), ci("ab", "b"),  # za hangs under a (left), ab under b (right)
    ])
    first = neighbourhood(topo, "root")
    again = neighbourhood(topo, "root")
    assert first == again
    x = {n.id: n.x for n in first.nodes}
    assert x["a"] < x["b"]
    # Ordered by the parent's position, not by name: za (under a) left of ab.
    assert x["za"] < x["ab"]


def test_cap_keeps_the_nearest_and_counts_the_rest() -> None:
    many = [ci(f"dep{i:02d}", "root") for i in range(40)]
    d = neighbourhood(Topology.build([ci("root"), *many]), "root", cap=25)
    assert len(d.nodes) == 25
    assert d.more == 16
    assert "16 more not shown" in d.label
    out = str(svg(d))
    assert "+16 more not shown" in out
    # Wide layers wrap: no row holds more than PER_ROW nodes.
    rows: dict[int, int] = {}
    for n in d.nodes:
        rows[n.y] = rows.get(n.y, 0) + 1
    assert max(rows.values()) <= drawing.PER_ROW
    # Nearer hops are kept before farther ones.
    two_hops = Topology.build([ci("root"), *many[:30], ci("grand", "dep00")])
    kept = {n.id for n in neighbourhood(two_hops, "root", cap=25).nodes}
    assert "grand" not in kept


def test_hostile_names_are_escaped_and_the_svg_parses() -> None:
    topo = Topology.build([
        ci("db", name="<script>alert(1)</script>", type_='"><img src=x onerror=alert(2)>'),
        ci('app"&<x>', "db", name="A & B"),
    ])
    out = str(svg(neighbourhood(topo, "db", alerting={'app"&<x>'})))
    assert "<script>" not in out
    assert "<img" not in out
    assert "&lt;script&gt;" in out
    # The id goes into the link URL-quoted, and into attributes escaped.
    assert 'href="/ui/cmdb/app%22%26%3Cx%3E"' in out
    root = ET.fromstring(out)  # well-formed XML: nothing broke out of a tag
    assert root.get("id") == "topology"
    assert root.get("role") == "img"
    assert (root.get("aria-label") or "").startswith("Dependencies around db")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert any(t and t.startswith("<script>") for t in texts)  # shown as text


def test_alerting_and_root_marked_by_shape_with_a_legend() -> None:
    d = neighbourhood(chain(), "db", alerting={"app1", "db"})
    root = ET.fromstring(str(svg(d)))
    links = {a.get("data-ci"): a for a in root.iter(f"{SVG}a")}
    assert set(links) == {"san", "host", "db", "app1", "app2", "web"}
    for ci_id, a in links.items():
        assert a.get("href") == f"/ui/cmdb/{ci_id}"
        rect = a.find(f"{SVG}rect")
        assert rect is not None
        dashed = rect.get("stroke-dasharray") is not None
        marked = any(t.text == "!" for t in a.iter(f"{SVG}text"))
        assert dashed == marked == (ci_id in {"app1", "db"}), ci_id
        assert ("alerting" in (a.get("class") or "")) == (ci_id in {"app1", "db"})
    # The root has a second outline; nothing else does.
    assert len(links["db"].findall(f"{SVG}rect")) == 2
    assert len(links["host"].findall(f"{SVG}rect")) == 1
    legend = root.find(f"{SVG}g[@class='legend']")
    assert legend is not None
    words = " ".join(t.text or "" for t in legend.iter(f"{SVG}text"))
    assert "root cause" in words and "alerting" in words
    assert "2 alerting" in d.label


def test_root_outside_the_cmdb_is_drawn_alone() -> None:
    d = neighbourhood(chain(), "ghost")
    assert [n.id for n in d.nodes] == ["ghost"]
    assert d.edges == ()
    out = str(svg(d))
    assert re.search(r'viewBox="0 0 \d+ \d+"', out)
    assert d.width >= drawing.MIN_WIDTH


def test_a_cycle_does_not_loop() -> None:
    topo = Topology.build([ci("a", "b"), ci("b", "a"), ci("c", "a")])
    d = neighbourhood(topo, "a")
    assert {n.id: n.layer for n in d.nodes} == {"a": 0, "b": -1, "c": 1}
    assert ("b", "a") in d.edges and ("a", "b") in d.edges
    ET.fromstring(str(svg(d)))


def test_a_hub_is_walked_only_so_far() -> None:
    hub = [ci(f"dep{i:05d}", "root") for i in range(drawing.REACH + 500)]
    d = neighbourhood(Topology.build([ci("root", "up"), ci("up"), *hub]), "root", cap=25)
    assert not d.complete
    assert len(d.nodes) == 25
    assert "up" in {n.id for n in d.nodes}  # upstream hop 1 comes before the dependents
    assert d.more == drawing.REACH + 1 - 25
    assert f"at least +{d.more} more not shown" in d.label
