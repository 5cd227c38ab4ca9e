"""`selfrefine lineage ID --format mermaid|dot|json` on a finished tiny run, and unknown ids."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from selfrefine.cli import main
from tests.audit.conftest import REPO
from tests.audit.graph_syntax import (
    dot_json, dot_missing, mermaid_parse, mermaid_structure, mermaid_tools_missing,
)


def _out(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def _judge_of_iteration(capsys, run_id: str, index: int) -> dict:
    report = json.loads(_out(capsys, "show", run_id, "--json"))
    it = next(i for i in report["iterations"] if i["index"] == index)
    return next(st for st in it["stages"] if st["stage"] == "train_judge")["outputs"]["judge"]


def _nid(prefix: str, ident: str) -> str:
    return f"{prefix}_{ident.replace('-', '')}"


def _expected(graph: dict) -> tuple[set[str], set[tuple[str, str, str]]]:
    """Node ids and (from, to, label) edges the drawing must have, from the JSON lineage."""
    nodes = {_nid("a", a["id"]) for a in graph["artifacts"]} | {_nid("s", s["id"]) for s in graph["stage_runs"]}
    edges = set()
    for e in graph["edges"]:
        a, s = _nid("a", e["artifact"]), _nid("s", e["stage_run"])
        edges.add((a, s, e["role"]) if e["kind"] == "uses" else (s, a, e["role"]))
    stage_ids = {s["id"] for s in graph["stage_runs"]}
    for s in graph["stage_runs"]:
        if s["reused_from"] in stage_ids:
            edges.add((_nid("s", s["id"]), _nid("s", s["reused_from"]), "reused"))
    return nodes, edges


@pytest.fixture
def judge_graph(runs, capsys):
    """Iteration 2's judge: its JSON lineage and its Mermaid and DOT drawings."""
    judge = _judge_of_iteration(capsys, runs.base, 2)
    graph = json.loads(_out(capsys, "lineage", judge["id"], "--format", "json"))
    return judge, graph, _out(capsys, "lineage", judge["id"], "--format", "mermaid"), \
        _out(capsys, "lineage", judge["id"], "--format", "dot")


def test_mermaid_has_exactly_the_lineage_nodes_and_edges_with_full_digests(judge_graph):
    judge, graph, mermaid, _ = judge_graph
    drawn = mermaid_structure(mermaid)
    nodes, edges = _expected(graph)
    assert set(drawn.nodes) == nodes
    assert {(src, dst, label) for src, _, label, dst in drawn.edges} == edges
    assert len(drawn.edges) == len(edges)  # no edge drawn twice
    # Every artifact node names its kind, role, id and full digest.
    for a in graph["artifacts"]:
        label = drawn.nodes[_nid("a", a["id"])]
        assert f"sha256:{a['sha256']}" in label and a["id"] in label and f"{a['kind']}:{a['name']}" in label
    assert drawn.classes["focus"] == {_nid("a", judge["id"])}
    # Stage runs sit in their iteration's subgraph: iteration 2's train_judge made the focus.
    maker = next(s for s in graph["stage_runs"] if s["stage"] == "train_judge" and s["iteration"] == 2)
    (group,) = [g for g, members in drawn.subgraphs.items() if _nid("s", maker["id"]) in members]
    assert group.endswith("_2") and _nid("a", judge["id"]) in drawn.subgraphs[group]
    # The judge's ancestry reaches the seed data and iteration 1's judge.
    names = {a["name"] for a in graph["artifacts"]}
    assert {"seed_pairs_0", "judge", "pairs", "rationales"} <= names


def test_mermaid_is_accepted_by_mermaids_own_parser(judge_graph):
    if reason := mermaid_tools_missing():
        pytest.skip(reason)
    _, _, mermaid, _ = judge_graph
    assert mermaid_parse(mermaid)["diagramType"].startswith("flowchart")
    with pytest.raises(AssertionError, match="rejected"):  # the check itself can fail
        mermaid_parse(mermaid + '\n  broken["an unclosed node\n')


def test_dot_is_accepted_by_graphviz_with_the_same_nodes_and_edges(judge_graph):
    if reason := dot_missing():
        pytest.skip(reason)
    judge, graph, _, dot = judge_graph
    laid_out = dot_json(dot)
    objects = laid_out["objects"]
    drawn_nodes = {o["name"] for o in objects if "nodes" not in o}   # clusters list their nodes
    clusters = [o for o in objects if "nodes" in o]
    nodes, edges = _expected(graph)
    assert drawn_nodes == nodes
    drawn_edges = {(objects[e["tail"]]["name"], objects[e["head"]]["name"], e["label"]) for e in laid_out["edges"]}
    assert drawn_edges == edges and len(laid_out["edges"]) == len(edges)
    focus = next(o for o in objects if o["name"] == _nid("a", judge["id"]))
    assert focus["penwidth"] == "3" and judge["sha256"] in focus["label"].replace("\\n", "\n")
    assert {c["label"].split(", ")[1] for c in clusters} == {"iteration 1", "iteration 2"}
    with pytest.raises(AssertionError, match="rejected"):
        dot_json(dot.replace("->", "=>", 1))


def test_lineage_json_flag_and_format_json_agree(runs, capsys):
    a = _out(capsys, "lineage", runs.base, "--json")
    b = _out(capsys, "lineage", runs.base, "--format", "json")
    assert json.loads(a) == json.loads(b)
    # The run's lineage reaches its plots: the report stage uses every iteration's metrics.
    graph = json.loads(a)
    report = [s for s in graph["stage_runs"] if s["stage"] == "report"]
    assert report and {a["name"] for a in graph["artifacts"]} >= {"metrics_plot", "reliability_iter_2"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfrefine", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("ident, fmt", [("0000dead", "tree"), ("00000000-0000-4000-8000-000000000000", "mermaid"),
                                        ("sha256:ffff0000", "dot")])
def test_an_unknown_id_is_one_line_and_a_non_zero_exit(runs, ident, fmt):
    proc = _cli("lineage", ident, "--format", fmt)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfrefine: no run, iteration, stage run or artifact"), proc.stderr
    assert ident in lines[0]
