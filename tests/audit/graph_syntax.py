"""Checks that a lineage graph is a valid Mermaid flowchart / Graphviz digraph, and what it holds.

`mermaid_structure` is a strict line grammar of the flowchart subset `render_mermaid` writes
(any other line is an error naming its number); `mermaid_parse` runs Mermaid's own parser in
Node (mermaid + jsdom from `make graph-tools`); `dot_json` runs Graphviz `dot -Tjson`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_TOOLS = Path(os.environ.get("SELFREFINE_TEST_NODE_TOOLS", REPO / ".cache" / "node"))

_ID = r"[as]_[0-9a-f]{32}"
_LABEL = r'"([^"]*)"'
_PATTERNS = {
    "header": re.compile(r"^flowchart LR$"),
    "subgraph": re.compile(r'^  subgraph (it_[0-9a-f]{32}_\d+)\["([^"]*)"\]$'),
    "end": re.compile(r"^  end$"),
    "artifact": re.compile(rf"^ +(a_[0-9a-f]{{32}})\(\[{_LABEL}\]\)$"),
    "stage": re.compile(rf"^ +(s_[0-9a-f]{{32}})\[\[{_LABEL}\]\]$"),
    "edge": re.compile(rf"^  ({_ID}) (-->|-\.->)\|([A-Za-z0-9_.-]+)\| ({_ID})$"),
    "classDef": re.compile(r"^  classDef (\w+) [\w#:,.-]+$"),
    "class": re.compile(rf"^  class ((?:{_ID},)*{_ID}) (\w+)$"),
}


@dataclass
class MermaidGraph:
    nodes: dict[str, str] = field(default_factory=dict)        # id → label
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)  # (src, arrow, label, dst)
    subgraphs: dict[str, list[str]] = field(default_factory=dict)
    classes: dict[str, set[str]] = field(default_factory=dict)


def mermaid_structure(text: str) -> MermaidGraph:
    """Parse `text` strictly; raise AssertionError naming the first line that does not fit."""
    graph, current, class_defs = MermaidGraph(), None, set()
    lines = text.rstrip("\n").split("\n")
    for number, line in enumerate(lines, 1):
        kind = next((k for k, p in _PATTERNS.items() if p.match(line)), None)
        assert kind is not None, f"line {number} is not Mermaid flowchart syntax: {line!r}"
        assert (kind == "header") == (number == 1), f"line {number}: the header must be the first line only"
        m = _PATTERNS[kind].match(line)
        if kind == "subgraph":
            assert current is None, f"line {number}: nested subgraph"
            current = m.group(1)
            graph.subgraphs[current] = []
        elif kind == "end":
            assert current is not None, f"line {number}: `end` without a subgraph"
            current = None
        elif kind in ("artifact", "stage"):
            nid, label = m.groups()
            assert nid not in graph.nodes, f"line {number}: node {nid} defined twice"
            graph.nodes[nid] = label
            if current:
                graph.subgraphs[current].append(nid)
        elif kind == "edge":
            src, arrow, label, dst = m.groups()
            assert src in graph.nodes and dst in graph.nodes, f"line {number}: edge between undefined nodes"
            graph.edges.append((src, arrow, label, dst))
        elif kind == "classDef":
            class_defs.add(m.group(1))
        elif kind == "class":
            ids, name = m.group(1).split(","), m.group(2)
            assert name in class_defs, f"line {number}: class {name} is not defined"
            assert all(i in graph.nodes for i in ids), f"line {number}: class of an undefined node"
            graph.classes.setdefault(name, set()).update(ids)
    assert current is None, "a subgraph is never closed"
    return graph


def mermaid_tools_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_TOOLS / "node_modules" / "mermaid").is_dir() or not (NODE_TOOLS / "node_modules" / "jsdom").is_dir():
        return f"mermaid and jsdom are not installed under {NODE_TOOLS} (run `make graph-tools`)"
    return None


_MERMAID_PARSE = """
import { JSDOM } from 'jsdom';
import { readFileSync } from 'fs';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
try {
  const result = await mermaid.parse(readFileSync(0, 'utf8'));
  console.log(JSON.stringify(result));
} catch (e) { console.error(e.message); process.exit(1); }
"""


def mermaid_parse(text: str) -> dict:
    """Mermaid's own parser (mermaid.parse) on `text`: its result, or AssertionError with its message."""
    proc = subprocess.run(["node", "--input-type=module", "-e", _MERMAID_PARSE], input=text, cwd=NODE_TOOLS,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mermaid rejected the graph: {proc.stderr.strip()[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dot_missing() -> str | None:
    return None if shutil.which("dot") else "Graphviz `dot` is not installed (run `make graph-tools`)"


def dot_json(text: str) -> dict:
    """Graphviz's reading of `text` (`dot -Tjson`), or AssertionError with dot's message."""
    proc = subprocess.run(["dot", "-Tjson"], input=text, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr.strip(), f"dot rejected the graph: {proc.stderr.strip()[-2000:]}"
    return json.loads(proc.stdout)
