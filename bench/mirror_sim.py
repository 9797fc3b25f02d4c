#!/usr/bin/env python3
"""Discrete-event simulation of many nodes pulling one image at once, to
see how the mirror's cold-pull sharing scales past the five nodes the
benchmark can build on one machine.

A fluid model: every transfer is a flow whose rate is the max-min fair
share of the links it crosses (the registry's egress; the sending node's
egress; the receiving node's ingress, capped by what its CPU can take),
recomputed at every event — a flow starting or ending, or a reader
catching up with the node it reads from (then it is held to that node's
rate). A node reading another node's
download can be no further along than that node's verified bytes (one
4 MiB piece behind it, as the mirror shows another node's bytes piece by
piece — modelled as a steady one-piece lag); the registry's bytes have no
lag.

Strategies, all nodes starting at once:
- direct: every node pulls every layer from the registry;
- no sharing of downloads in flight (Spegel's behaviour: a node pulls
  from the registry what no peer has yet — and at a cold start no peer
  has anything, so this is direct with extra lookups);
- one fetcher serving every reader: per layer, the first node to ask
  fetches it from the registry and every other node reads along from
  that node's download (berth's claims before they formed a chain);
- berth: the first to ask fetches, every later node reads from a node
  that serves no other reader yet, so they form a chain (the claims of
  `mirror/src/claims.rs`, `FANOUT = 1`);
- a binary tree: the same with two readers per node.

Driven by what `bench/mirror.py` measured (bench/mirror-results.json: link
rates, image sizes, the mirrors' CPU per GiB), and checked against it: the
five-node case is simulated at each measured rate and set beside the
measurement. Writes a table and an SVG plot into docs/mirror.md.

    python3 bench/mirror_sim.py
"""

import json
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIECE = 4 << 20
GIB = 1 << 30


class Flow:
    __slots__ = ("src", "dst", "layer", "size", "done", "rate", "parent", "finished")

    def __init__(self, src, dst, layer, size, parent=None):
        self.src, self.dst, self.layer, self.size = src, dst, layer, size
        self.done, self.rate, self.parent, self.finished = 0.0, 0.0, parent, False


def allocate(flows, capacity):
    """Max-min fair rates (progressive filling) for `flows` over links with
    `capacity`; then a flow reading a download it has caught up with is
    held to that download's own rate (parents before children, so along a
    chain; what this frees on a link is not handed to others, which makes
    the times slightly pessimistic)."""
    live = [f for f in flows if not f.finished]
    for f in live:
        f.rate = 0.0
    users = {}
    for f in live:
        for k in (("out", f.src), ("in", f.dst)):
            users.setdefault(k, []).append(f)
    left = {k: capacity[k] for k in users}
    active = {k: len(fs) for k, fs in users.items()}
    unfrozen = set(id(f) for f in live)
    level = 0.0

    def freeze(link):
        # The flows through a full link keep the rate they have reached.
        for f in users[link]:
            if id(f) in unfrozen:
                unfrozen.discard(id(f))
                f.rate = level
                for k in (("out", f.src), ("in", f.dst)):
                    active[k] -= 1

    while unfrozen:
        # The next link to fill: the smallest fair share of what is left.
        k_min, share = None, math.inf
        for k, n in active.items():
            if n and left[k] / n < share:
                k_min, share = k, left[k] / n
        level += share
        for k in active:
            left[k] -= share * active[k]
        freeze(k_min)
        for k, n in list(active.items()):
            if n and left[k] <= 1e-6:
                freeze(k)
    for f in live:
        p = f.parent
        if p is not None and not p.finished and f.done >= available(p) - 1e-3:
            f.rate = min(f.rate, p.rate)
    return live


def available(p):
    """Bytes of download `p` that its readers may have: all of the
    registry's as they come; a node's one piece behind (it shows another
    node's bytes piece by piece, as each verifies — modelled as a steady
    lag of one whole piece, the worst case, so that the simulation needs
    no event per piece)."""
    if p.finished:
        return p.size
    if p.src == "registry":
        return p.done
    return max(0.0, p.done - PIECE)


def simulate(nodes, rate_bps, layers, cpu_bps, strategy, fanout=None, seed=1):
    """Seconds until every node has every layer, registry bytes sent, the
    busiest node's bytes sent."""
    rng = random.Random(seed)
    link = rate_bps / 8
    capacity = {("out", "registry"): link}
    for n in range(nodes):
        capacity[("out", n)] = link
        capacity[("in", n)] = min(link, cpu_bps)
    flows = []
    for li, size in enumerate(layers):
        if strategy in ("direct", "nosharing"):
            flows += [Flow("registry", n, li, size) for n in range(nodes)]
            continue
        order = list(range(nodes))
        rng.shuffle(order)  # who asks first
        fetcher = Flow("registry", order[0], li, size)
        flows.append(fetcher)
        if fanout is None:
            flows += [Flow(order[0], n, li, size, parent=fetcher) for n in order[1:]]
        else:
            # Breadth first: each node serves at most `fanout` readers.
            holders = [fetcher]
            served = {order[0]: 0}
            for n in order[1:]:
                src_flow = next(h for h in holders if served[h.dst] < fanout)
                served[src_flow.dst] += 1
                f = Flow(src_flow.dst, n, li, size, parent=src_flow)
                flows.append(f)
                holders.append(f)
                served[n] = 0
    t = 0.0
    while True:
        live = allocate(flows, capacity)
        if not live:
            break
        dt = math.inf
        for f in live:
            if f.rate > 1e-9:
                dt = min(dt, (f.size - f.done) / f.rate)
            p = f.parent
            if p is not None and not p.finished:
                gap = available(p) - f.done
                closing = f.rate - p.rate
                if gap > 1e-3 and closing > 1e-9:
                    dt = min(dt, gap / closing)
        if dt == math.inf:
            raise SystemExit("sim: stuck (no flow can move)")
        dt = max(dt, 1e-6)
        for f in live:
            f.done = min(f.size, f.done + f.rate * dt)
            p = f.parent
            if p is not None and not p.finished:
                f.done = min(f.done, available(p))
        for f in live:
            if f.size - f.done <= 1e-3:
                f.finished = True
        t += dt
    sent = {}
    for f in flows:
        sent[f.src] = sent.get(f.src, 0) + f.size
    busiest = max((v for k, v in sent.items() if k != "registry"), default=0)
    return t, sent.get("registry", 0), busiest


STRATEGIES = [
    ("direct", "direct pulls", None),
    ("nosharing", "no sharing of downloads in flight (Spegel)", None),
    ("berth", "one fetcher serving every reader (berth before the chain)", None),
    ("berth", "berth: a chain, each node serving one reader", 1),
    ("berth", "a binary tree (fan-out 2)", 2),
]


def svg(points, path):
    """Time to all nodes against node count, one line per strategy."""
    w, h, left, bottom, top, right = 640, 360, 70, 50, 20, 250
    xs = sorted({n for s in points.values() for n, _ in s})
    ymax = max(t for s in points.values() for _, t in s)
    ylog_max = math.ceil(math.log10(ymax))
    ylog_min = math.floor(math.log10(min(t for s in points.values() for _, t in s)))

    def x(n):
        return left + (math.log10(n) - math.log10(xs[0])) / (math.log10(xs[-1]) - math.log10(xs[0])) * (
            w - left - right)

    def y(t):
        return top + (ylog_max - math.log10(t)) / (ylog_max - ylog_min) * (h - top - bottom)

    colours = ["#888888", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"]
    dashes = ["", "6,3", "2,2", "", "3,3"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>']
    for e in range(ylog_min, ylog_max + 1):
        yy = y(10 ** e)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{w - right}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{10 ** e:g} s</text>')
    for n in xs:
        out.append(f'<line x1="{x(n):.1f}" y1="{top}" x2="{x(n):.1f}" y2="{h - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x(n):.1f}" y="{h - bottom + 16}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 12}" text-anchor="middle">nodes pulling a 1 GiB '
               f'image at once (1 Gbit/s links)</text>')
    out.append(f'<text x="16" y="{(top + h - bottom) / 2:.0f}" transform="rotate(-90 16 '
               f'{(top + h - bottom) / 2:.0f})" text-anchor="middle">time until all have it</text>')
    for i, (label, series) in enumerate(points.items()):
        pts = " ".join(f"{x(n):.1f},{y(t):.1f}" for n, t in series)
        dash = f' stroke-dasharray="{dashes[i]}"' if dashes[i] else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colours[i]}" stroke-width="2"{dash}/>')
        for n, t in series:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(t):.1f}" r="3" fill="{colours[i]}"/>')
        ly = top + 10 + i * 34
        out.append(f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 36}" y2="{ly}" stroke="{colours[i]}" '
                   f'stroke-width="2"{dash}/>')
        words, line = label.split(), ""
        rows = []
        for word in words:
            if len(line) + len(word) > 30:
                rows.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        rows.append(line)
        for j, r in enumerate(rows):
            out.append(f'<text x="{w - right + 42}" y="{ly + 4 + j * 13}">{r}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main():
    results_path = ROOT / "bench" / "mirror-results.json"
    if not results_path.exists():
        sys.exit("sim: no bench/mirror-results.json: run `sudo python3 bench/mirror.py` first")
    measured = json.loads(results_path.read_text())
    # The mirrors' CPU per GiB served, as measured; one core per node.
    cpu_s_per_gib = max(r["cpu_s_per_gib"] for r in measured["rates"])
    cpu_bps = GIB / cpu_s_per_gib if cpu_s_per_gib > 0 else math.inf

    # In the benchmark the five nodes share one machine: with the links
    # unshaped, each node took the image at size / (time all five needed).
    u = measured["unshaped"]
    shared_bps = u["size"] / u["mirror_s"]
    check = ["| link | image | measured: direct | simulated: direct | measured: berth | simulated: berth |",
             "|---|---|---|---|---|---|"]
    for r in measured["rates"]:
        layers = [r["size"] / 4] * 4
        sd = simulate(5, r["rate_bps"], layers, u["size"] / u["direct_s"], "direct")[0]
        sb = simulate(5, r["rate_bps"], layers, shared_bps, "berth", 1)[0]
        check.append(f"| {r['label']} | {r['size'] / (1 << 20):,.0f} MiB | {r['direct_s']:.1f} s | {sd:.1f} s | "
                     f"{r['mirror_s']:.1f} s | {sb:.1f} s |")

    rows = ["| nodes | strategy | time until all have it | registry egress / image | busiest node's egress / image |",
            "|---|---|---|---|---|"]
    layers = [GIB / 4] * 4
    points = {}
    for n in (10, 50, 200):
        for key, label, fanout in STRATEGIES:
            t, reg, busiest = simulate(n, 1e9, layers, cpu_bps, key, fanout)
            points.setdefault(label, []).append((n, t))
            rows.append(f"| {n} | {label} | {t:,.0f} s | {reg / GIB:.2f} | {busiest / GIB:.2f} |")
        print(f"sim: {n} nodes done", file=sys.stderr)
    svg(points, ROOT / "docs" / "mirror-sim.svg")

    doc = ROOT / "docs" / "mirror.md"
    text = doc.read_text()
    begin, end = "<!-- simulation: begin -->", "<!-- simulation: end -->"
    section = "\n".join([
        begin,
        "",
        f"Reproduce: `python3 bench/mirror_sim.py` (reads `bench/mirror-results.json`, which "
        f"`bench/mirror.py` writes; CPU per node from it: {cpu_s_per_gib:.2f} s per GiB, one core per node).",
        "",
        "Checked against the five-node benchmark (all five at once; the simulated nodes limited to the "
        f"{shared_bps * 8 / 1e6:,.0f} Mbit/s each that five nodes sharing this machine's CPU reached with the "
        "links unshaped):",
        "",
        *check,
        "",
        "Many nodes, a 1 GiB image of four 256 MiB layers, 1 Gbit/s links, all starting at once:",
        "",
        *rows,
        "",
        "![time until all nodes have the image against node count](mirror-sim.svg)",
        "",
        end,
    ])
    if begin in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## At scale: simulation\n\n" + section + "\n"
    doc.write_text(text)
    print("\n".join(check + [""] + rows))


if __name__ == "__main__":
    main()
