"""A small SVG drawing of a CI's neighbourhood in the dependency graph.

Server-rendered, no JavaScript: the root cause in the middle row, what it depends
on (upstream) in the rows above, what depends on it (downstream) in the rows below,
up to `hops` hops each way and at most `cap` nodes. Every text and attribute value
is escaped here (CI names come from CMDB imports, which anyone with the import
rights can fill with markup). Alerting CIs carry a dashed outline and a "!" marker,
the root cause a double outline, and a legend says so: never colour alone.

The layout is layered and deterministic: rows are ordered by the mean position of
each node's neighbours in the row nearer the root (so edges cross less), ties by id.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from urllib.parse import quote

from markupsafe import Markup, escape

from daemon.correlation.topology import Topology

NODE_W = 150
NODE_H = 40
GAP_X = 16
GAP_Y = 44
MARGIN = 12
REACH = 2_000  # CIs walked at most: a hub's many dependents are not all visited
PER_ROW = 6  # a layer wider than this wraps onto further rows
LEGEND_H = 60
LABEL_CHARS = 20
MIN_WIDTH = 400
PHONE_WIDTH = 360  # narrower than this the drawing scrolls: its text stays legible


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    type: str
    layer: int  # -hops..-1 upstream, 0 the root, 1..hops downstream
    alerting: bool
    x: int = 0
    y: int = 0

    @property
    def root(self) -> bool:
        return self.layer == 0


@dataclass(frozen=True, slots=True)
class Drawing:
    root: str
    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]  # (dependent, dependency), both drawn
    more: int  # neighbours within reach left out by the cap
    width: int
    height: int
    complete: bool = True  # False: a hub; `more` counts only what the walk reached

    @property
    def more_text(self) -> str:
        """`+12 more not shown`, or `at least +1975 more not shown`; "" when none."""
        if not self.more:
            return ""
        return f"{'' if self.complete else 'at least '}+{self.more} more not shown"

    @property
    def label(self) -> str:
        """The drawing's accessible name (`aria-label`)."""
        up = sum(1 for n in self.nodes if n.layer < 0)
        down = sum(1 for n in self.nodes if n.layer > 0)
        alerting = sum(1 for n in self.nodes if n.alerting)
        text = (f"Dependencies around {self.root}: {up} upstream, {down} downstream, "
                f"{alerting} alerting")
        return text + (f", {self.more_text}" if self.more else "")


def neighbourhood(topology: Topology, root: str, *, alerting: Collection[str] = (),
                  hops: int = 2, cap: int = 25) -> Drawing:
    """The laid-out neighbourhood of `root` (which need not be in the CMDB)."""
    layers, complete = _layers(topology, root, hops)
    # Nearest first, upstream before downstream at equal distance, then by id.
    ordered = sorted(layers, key=lambda c: (abs(layers[c]), layers[c] > 0, c))
    kept = set(ordered[:max(cap, 1)])
    more = len(ordered) - len(kept)
    edges = tuple(sorted((a, b) for a in kept for b in topology.dependencies(a) if b in kept))
    rows = _rows(kept, layers, edges)
    nodes, width, height = _place(topology, rows, layers, set(alerting))
    return Drawing(root=root, nodes=tuple(nodes), edges=edges, more=more, width=width,
                   height=height, complete=complete)


def _layers(topology: Topology, root: str, hops: int) -> tuple[dict[str, int], bool]:
    """Each CI within reach → its signed distance, nearer hops first and upstream
    before downstream at one distance (a cycle); False when the walk stopped at REACH."""
    layer = {root: 0}
    frontiers = {-1: [root], 1: [root]}
    steps = {-1: topology.dependencies, 1: topology.dependents}
    for hop in range(1, hops + 1):
        for sign in (-1, 1):
            nxt: list[str] = []
            for node in frontiers[sign]:
                for other in sorted(steps[sign](node)):
                    if other in layer:
                        continue
                    if len(layer) > REACH:
                        return layer, False
                    layer[other] = sign * hop
                    nxt.append(other)
            frontiers[sign] = nxt
    return layer, True


def _rows(kept: set[str], layers: dict[str, int], edges: Iterable[tuple[str, str]]
          ) -> dict[int, list[str]]:
    """The ids of each layer in drawing order: the root's row first, then outwards."""
    neighbours: dict[str, set[str]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    rows: dict[int, list[str]] = {}
    for layer in sorted({layers[c] for c in kept}, key=lambda v: (abs(v), v)):
        inner = layer - 1 if layer > 0 else layer + 1  # the row nearer the root
        index = {c: i for i, c in enumerate(rows.get(inner, []))}

        def weight(c: str, index: dict[str, int] = index) -> tuple[float, str]:
            near = [index[n] for n in neighbours.get(c, ()) if n in index]
            return (sum(near) / len(near) if near else float(len(index)), c)

        rows[layer] = sorted((c for c in kept if layers[c] == layer), key=weight)
    return rows


def _place(topology: Topology, rows: dict[int, list[str]], layers: dict[str, int],
           alerting: set[str]) -> tuple[list[Node], int, int]:
    lines: list[list[str]] = []  # top to bottom, wide layers wrapped
    for layer in sorted(rows):
        ids = rows[layer]
        lines.extend(ids[i:i + PER_ROW] for i in range(0, len(ids), PER_ROW))
    widest = max((len(line) for line in lines), default=1)
    # Never narrower than the legend.
    width = max(2 * MARGIN + widest * NODE_W + (widest - 1) * GAP_X, MIN_WIDTH)
    nodes: list[Node] = []
    for row, line in enumerate(lines):
        used = len(line) * NODE_W + (len(line) - 1) * GAP_X
        left = (width - used) // 2  # each line centred
        for col, ci_id in enumerate(line):
            ci = topology.cis.get(ci_id)
            nodes.append(Node(id=ci_id, name=ci.name if ci else ci_id,
                              type=ci.type if ci else "unknown", layer=layers[ci_id],
                              alerting=ci_id in alerting,
                              x=left + col * (NODE_W + GAP_X),
                              y=MARGIN + row * (NODE_H + GAP_Y)))
    height = MARGIN + len(lines) * (NODE_H + GAP_Y) - GAP_Y + MARGIN + LEGEND_H
    return nodes, width, height


# -- SVG ------------------------------------------------------------------------------

_STYLE = {  # (fill, stroke, stroke-width, dash)
    "root": ("#fff4e5", "#7a3e00", 3, ""),
    "alerting": ("#fdecec", "#a4161a", 2, "6 3"),
    "plain": ("#f4f6f8", "#4a5561", 1, ""),
}


def svg(drawing: Drawing, *, element_id: str = "topology") -> Markup:
    """The drawing as an inline `<svg role="img">` with links to each CI's page."""
    parts = [
        f'<svg id="{escape(element_id)}" role="img" aria-label="{escape(drawing.label)}" '
        f'viewBox="0 0 {drawing.width} {drawing.height}" width="{drawing.width}" '
        f'style="width:100%;max-width:{drawing.width}px;'
        f'min-width:{min(drawing.width, PHONE_WIDTH)}px;height:auto" font-family="sans-serif" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(drawing.label)}</title>",
        '<defs><marker id="topology-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0 0L10 5L0 10z" fill="#4a5561"/></marker></defs>',
    ]
    at = {n.id: n for n in drawing.nodes}
    for dependent, dependency in drawing.edges:
        parts.append(_edge(at[dependent], at[dependency]))
    parts.extend(_node(n) for n in drawing.nodes)
    parts.append(_legend(drawing))
    parts.append("</svg>")
    return Markup("".join(parts))


def _edge(dependent: Node, dependency: Node) -> str:
    """An arrow from a CI to what it depends on."""
    x1, x2 = dependent.x + NODE_W // 2, dependency.x + NODE_W // 2
    if dependent.y > dependency.y:
        y1, y2 = dependent.y, dependency.y + NODE_H
    elif dependent.y < dependency.y:
        y1, y2 = dependent.y + NODE_H, dependency.y
    else:  # same row (a cycle, or a dependency within one layer): side to side
        y1 = y2 = dependent.y + NODE_H // 2
        x1, x2 = ((dependent.x + NODE_W, dependency.x) if dependent.x < dependency.x
                  else (dependent.x, dependency.x + NODE_W))
    return (f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#4a5561" '
            f'stroke-width="1.5" marker-end="url(#topology-arrow)"/>')


def _node(n: Node) -> str:
    kind = "root" if n.root else "alerting" if n.alerting else "plain"
    fill, stroke, width, dash = _STYLE[kind]
    classes = " ".join(["node", *(["root"] if n.root else []),
                        *(["alerting"] if n.alerting else [])])
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    if n.alerting:
        dash_attr = f' stroke-dasharray="{_STYLE["alerting"][3]}"'
        stroke = _STYLE["alerting"][1]
    title = f"{n.name} ({n.id}, {n.type})" + (", alerting" if n.alerting else "") + (
        ", root cause" if n.root else "")
    out = [
        f'<a href="/ui/cmdb/{escape(quote(n.id, safe=""))}" class="{classes}" '
        f'data-ci="{escape(n.id)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{n.x}" y="{n.y}" width="{NODE_W}" height="{NODE_H}" rx="6" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash_attr}/>',
    ]
    if n.root:  # the second outline of the double border
        out.append(f'<rect x="{n.x + 4}" y="{n.y + 4}" width="{NODE_W - 8}" '
                   f'height="{NODE_H - 8}" rx="4" fill="none" stroke="{stroke}" '
                   f'stroke-width="1"/>')
    if n.alerting:
        out.append(_warning(n.x + NODE_W - 16, n.y + 4))
    out.append(f'<text x="{n.x + NODE_W // 2}" y="{n.y + 17}" text-anchor="middle" '
               f'font-size="12" fill="#111">{escape(_short(n.name))}</text>')
    out.append(f'<text x="{n.x + NODE_W // 2}" y="{n.y + 32}" text-anchor="middle" '
               f'font-size="10" fill="#333">{escape(_short(n.type))}</text>')
    out.append("</a>")
    return "".join(out)


def _warning(x: int, y: int) -> str:
    """A small triangle with "!": the alerting mark that is a shape, not a colour."""
    return (f'<path d="M{x + 6} {y}L{x + 12} {y + 11}L{x} {y + 11}z" fill="#a4161a"/>'
            f'<text x="{x + 6}" y="{y + 10}" text-anchor="middle" font-size="9" '
            f'font-weight="bold" fill="#fff">!</text>')


def _legend(drawing: Drawing) -> str:
    y = drawing.height - LEGEND_H + 8
    root_fill, root_stroke, _, _ = _STYLE["root"]
    al_fill, al_stroke, _, al_dash = _STYLE["alerting"]
    out = [
        '<g class="legend" font-size="11" fill="#111">',
        f'<rect x="{MARGIN}" y="{y}" width="22" height="14" rx="3" fill="{root_fill}" '
        f'stroke="{root_stroke}" stroke-width="3"/>',
        f'<text x="{MARGIN + 28}" y="{y + 11}">root cause (double outline)</text>',
        f'<rect x="{MARGIN + 200}" y="{y}" width="22" height="14" rx="3" fill="{al_fill}" '
        f'stroke="{al_stroke}" stroke-width="2" stroke-dasharray="{al_dash}"/>',
        _warning(MARGIN + 226, y + 1),
        f'<text x="{MARGIN + 244}" y="{y + 11}">alerting (dashed, !)</text>',
        f'<text x="{MARGIN}" y="{y + 28}">Arrows point to what a CI depends on:</text>',
        f'<text x="{MARGIN}" y="{y + 44}">upstream above, downstream below.'
        + (f" {drawing.more_text}." if drawing.more else "") + "</text>",
        "</g>",
    ]
    return "".join(out)


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"
