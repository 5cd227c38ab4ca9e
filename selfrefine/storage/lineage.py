"""Lineage queries: the ancestors and descendants of an artifact, stage run or run.

The graph is bipartite: stage runs use and make artifacts. Each direction is one recursive CTE
over `artifact_edges` (uses/makes), so the query cost grows with the size of the answer, not the
number of round trips.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

from selfrefine.storage.repository import producing_stage_run
from selfrefine.storage.schema import (
    Artifact,
    ArtifactEdge,
    Base,
    EdgeKind,
    Iteration,
    Run,
    StageRun,
)


@dataclass
class LineageGraph:
    focus: list[str]
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    stage_runs: dict[str, StageRun] = field(default_factory=dict)
    # (stage_run_id, artifact_id, kind, role)
    edges: set[tuple[str, str, str, str]] = field(default_factory=set)
    iteration_index: dict[str, int] = field(default_factory=dict)
    run_of_iteration: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "focus": self.focus,
            "artifacts": [_artifact_json(a) for a in sorted(self.artifacts.values(), key=lambda a: a.created)],
            "stage_runs": [self._stage_json(s) for s in sorted(self.stage_runs.values(), key=lambda s: s.created)],
            "edges": [{"stage_run": s, "artifact": a, "kind": k, "role": r}
                      for s, a, k, r in sorted(self.edges)],
        }

    def _stage_json(self, s: StageRun) -> dict[str, Any]:
        it = str(s.iteration_id) if s.iteration_id else None
        return {"id": str(s.id), "stage": s.stage, "status": s.status.value, "stage_key": s.stage_key,
                "iteration_id": it, "iteration": self.iteration_index.get(it) if it else None,
                "run_id": self.run_of_iteration.get(it) if it else None,
                "reused_from": str(s.reused_from_id) if s.reused_from_id else None,
                "prefect_flow_run_id": s.prefect_flow_run_id, "prefect_task_run_id": s.prefect_task_run_id}

    def makers(self) -> dict[str, str]:
        return {a: s for s, a, k, _ in self.edges if k == EdgeKind.makes.value}

    def uses_of(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for s, a, k, r in sorted(self.edges):
            if k == EdgeKind.uses.value:
                out[s].append((r, a))
        return out

    def users_of(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for s, a, k, _ in sorted(self.edges):
            if k == EdgeKind.uses.value:
                out[a].append(s)
        return out

    def made_by(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for s, a, k, r in sorted(self.edges):
            if k == EdgeKind.makes.value:
                out[s].append((r, a))
        return out


def _artifact_json(a: Artifact) -> dict[str, Any]:
    return {"id": str(a.id), "kind": a.kind, "name": a.name, "sha256": a.sha256, "uri": a.uri,
            "size_bytes": a.size_bytes, "stage_run": str(a.stage_run_id) if a.stage_run_id else None}


def _closure(session: Session, start: set[uuid.UUID], upward: bool) -> set[uuid.UUID]:
    """Artifact ids reachable from `start` through stage runs: upward = inputs of the makers,
    downward = outputs of the users."""
    if not start:
        return set()
    first, then = (EdgeKind.makes, EdgeKind.uses) if upward else (EdgeKind.uses, EdgeKind.makes)
    seed = select(Artifact.id.label("artifact_id")).where(Artifact.id.in_(start))
    reach = seed.cte("reach", recursive=True)
    hop1, hop2 = aliased(ArtifactEdge), aliased(ArtifactEdge)
    step = (select(hop2.artifact_id)
            .select_from(reach)
            .join(hop1, and_(hop1.artifact_id == reach.c.artifact_id, hop1.kind == first))
            .join(hop2, and_(hop2.stage_run_id == hop1.stage_run_id, hop2.kind == then)))
    reach = reach.union(step)
    return set(session.scalars(select(reach.c.artifact_id)))


def lineage(session: Session, obj: Base) -> LineageGraph:
    """Everything upstream and downstream of a run, iteration, stage run or artifact."""
    if isinstance(obj, Artifact):
        focus_stage_runs, up_start, down_start = [], {obj.id}, {obj.id}
    elif isinstance(obj, StageRun):
        focus_stage_runs = [obj]
    elif isinstance(obj, Iteration):
        focus_stage_runs = list(session.scalars(select(StageRun).where(StageRun.iteration_id == obj.id)))
    elif isinstance(obj, Run):
        focus_stage_runs = list(session.scalars(
            select(StageRun).join(Iteration, Iteration.id == StageRun.iteration_id)
            .where(Iteration.run_id == obj.id)))
    else:  # pragma: no cover - resolve() only returns the four kinds above
        raise TypeError(type(obj))
    if focus_stage_runs:
        producers = [producing_stage_run(session, s) for s in focus_stage_runs]
        ids = {s.id for s in focus_stage_runs} | {p.id for p in producers}
        edges = session.scalars(select(ArtifactEdge).where(ArtifactEdge.stage_run_id.in_(ids))).all()
        up_start = {e.artifact_id for e in edges}
        down_start = {e.artifact_id for e in edges if e.kind == EdgeKind.makes}
    artifact_ids = _closure(session, up_start, True) | _closure(session, down_start, False)
    graph = LineageGraph(focus=[str(obj.id)])
    _fill(session, graph, artifact_ids, extra_stage_runs={s.id for s in focus_stage_runs})
    return graph


def _fill(session: Session, graph: LineageGraph, artifact_ids: set[uuid.UUID],
          extra_stage_runs: set[uuid.UUID]) -> None:
    # Plain rows from the tables, not ORM entities: a lineage answer can hold tens of thousands of
    # rows, and entities in the identity map would make every later query's autoflush scan them.
    arts, edges, stages, iters = (t.__table__ for t in (Artifact, ArtifactEdge, StageRun, Iteration))
    ids = list(artifact_ids)
    for chunk in _chunks(ids, 500):
        for a in session.execute(select(arts).where(arts.c.id.in_(chunk))):
            graph.artifacts[str(a.id)] = a
        for e in session.execute(select(edges.c.stage_run_id, edges.c.artifact_id, edges.c.kind,
                                        edges.c.role).where(edges.c.artifact_id.in_(chunk))):
            graph.edges.add((str(e.stage_run_id), str(e.artifact_id), e.kind.value, e.role))
    stage_ids = {uuid.UUID(s) for s, _, _, _ in graph.edges} | extra_stage_runs
    for chunk in _chunks(list(stage_ids), 500):
        for s in session.execute(select(stages).where(stages.c.id.in_(chunk))):
            graph.stage_runs[str(s.id)] = s
    iteration_ids = {s.iteration_id for s in graph.stage_runs.values() if s.iteration_id}
    for chunk in _chunks(list(iteration_ids), 500):
        for it in session.execute(select(iters.c.id, iters.c.index, iters.c.run_id)
                                  .where(iters.c.id.in_(chunk))):
            graph.iteration_index[str(it.id)] = it.index
            graph.run_of_iteration[str(it.id)] = str(it.run_id)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


# -- rendering ---------------------------------------------------------------------------------


def _label_artifact(a: Artifact) -> str:
    return f"artifact {str(a.id)[:8]} {a.kind}:{a.name} sha256:{a.sha256[:16]} ({a.size_bytes} B)"


def _label_stage(graph: LineageGraph, s: StageRun) -> str:
    it = graph.iteration_index.get(str(s.iteration_id)) if s.iteration_id else None
    where = f" iter {it}" if it is not None else ""
    reused = f" reused {str(s.reused_from_id)[:8]}" if s.reused_from_id else ""
    return f"stage {str(s.id)[:8]} {s.stage}{where} [{s.status.value}{reused}]"


def render_tree(graph: LineageGraph, focus: Base) -> str:
    """Indented ancestors (←) and descendants (→) of the focus; repeated subtrees are elided."""
    makers, uses, users, made = graph.makers(), graph.uses_of(), graph.users_of(), graph.made_by()
    lines: list[str] = []

    def up_artifact(aid: str, depth: int, seen: set[str]) -> None:
        a = graph.artifacts.get(aid)
        if a is None:
            return
        maker = makers.get(aid)
        repeat = aid in seen and maker is not None
        lines.append("  " * depth + _label_artifact(a) + (" (see above)" if repeat else ""))
        seen.add(aid)
        if maker and not repeat and maker in graph.stage_runs:
            lines.append("  " * (depth + 1) + "← made by " + _label_stage(graph, graph.stage_runs[maker]))
            for role, used in uses.get(maker, []):
                lines.append("  " * (depth + 2) + f"← uses {role}:")
                up_artifact(used, depth + 3, seen)

    def down_artifact(aid: str, depth: int, seen: set[str]) -> None:
        for sid in users.get(aid, []):
            s = graph.stage_runs.get(sid)
            if s is None:
                continue
            repeat = sid in seen
            lines.append("  " * depth + "→ used by " + _label_stage(graph, s) + (" (see above)" if repeat else ""))
            if repeat:
                continue
            seen.add(sid)
            for role, out in made.get(sid, []):
                if out in graph.artifacts:
                    lines.append("  " * (depth + 1) + f"→ makes {role}: " + _label_artifact(graph.artifacts[out]))
                    down_artifact(out, depth + 2, seen)

    if isinstance(focus, Artifact):
        lines.append("ancestors:")
        up_artifact(str(focus.id), 1, set())
        lines.append("descendants:")
        down_artifact(str(focus.id), 1, set())
    else:
        focus_stages = [s for s in graph.stage_runs.values()
                        if s.id == getattr(focus, "id", None) or s.iteration_id == getattr(focus, "id", None)
                        or graph.run_of_iteration.get(str(s.iteration_id)) == str(focus.id)]
        seen_up: set[str] = set()
        seen_down: set[str] = set()
        for s in sorted(focus_stages, key=lambda s: (graph.iteration_index.get(str(s.iteration_id), -1), s.created)):
            lines.append(_label_stage(graph, s))
            producer = str(s.reused_from_id) if s.reused_from_id else str(s.id)
            for role, used in uses.get(str(s.id), []):
                lines.append(f"  ← uses {role}:")
                up_artifact(used, 2, seen_up)
            for role, out in made.get(producer, []):
                if out in graph.artifacts:
                    lines.append(f"  → makes {role}: " + _label_artifact(graph.artifacts[out]))
                    down_artifact(out, 2, seen_down)
    return "\n".join(lines)


# -- graph formats: Mermaid and Graphviz DOT ---------------------------------------------------
# Both draw the same bipartite graph: artifacts (full sha256 in the label, so a picture is as
# exact as the tree) and stage runs grouped by run and iteration; `uses`/`makes` edges carry the
# role; a reused stage run points at the stage run whose outputs it took.


def _node_id(prefix: str, ident: str) -> str:
    return f"{prefix}_{ident.replace('-', '')}"


def _artifact_lines(a: Artifact) -> list[str]:
    return [f"{a.kind}:{a.name}", f"artifact {a.id}", f"sha256:{a.sha256}", f"{a.size_bytes} B"]


def _stage_lines(s: StageRun) -> list[str]:
    lines = [s.stage, f"stage run {s.id}", s.status.value]
    if s.reused_from_id:
        lines[-1] += f" (reused {str(s.reused_from_id)[:8]})"
    if s.prefect_flow_run_id:
        lines.append(f"prefect flow run {s.prefect_flow_run_id}")
    return lines


def _groups(graph: LineageGraph) -> tuple[dict[tuple[str, int], list[str]], list[str]]:
    """Node ids by (run id, iteration index), and the ids that belong to no iteration. An artifact
    sits with the stage run that made it."""
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    loose: list[str] = []
    where: dict[str, tuple[str, int]] = {}
    for sid, s in sorted(graph.stage_runs.items(), key=lambda kv: (kv[1].created, kv[0])):
        it = str(s.iteration_id) if s.iteration_id else None
        if it in graph.iteration_index:
            where[sid] = (graph.run_of_iteration[it], graph.iteration_index[it])
            groups[where[sid]].append(_node_id("s", sid))
        else:
            loose.append(_node_id("s", sid))
    makers = graph.makers()
    for aid, a in sorted(graph.artifacts.items(), key=lambda kv: (kv[1].created, kv[0])):
        group = where.get(makers.get(aid, ""))
        (groups[group] if group else loose).append(_node_id("a", aid))
    return dict(sorted(groups.items())), loose


def _graph_edges(graph: LineageGraph) -> list[tuple[str, str, str, str]]:
    """(from node, to node, label, kind) with kind uses, makes or reused."""
    out = []
    for sid, aid, kind, role in sorted(graph.edges):
        if aid not in graph.artifacts or sid not in graph.stage_runs:
            continue
        if kind == EdgeKind.uses.value:
            out.append((_node_id("a", aid), _node_id("s", sid), role, kind))
        else:
            out.append((_node_id("s", sid), _node_id("a", aid), role, kind))
    for sid, s in sorted(graph.stage_runs.items()):
        source = str(s.reused_from_id) if s.reused_from_id else None
        if source in graph.stage_runs:
            out.append((_node_id("s", sid), _node_id("s", source), "reused", "reused"))
    return out


def _focus_nodes(graph: LineageGraph) -> list[str]:
    ids = set(graph.focus)
    return ([_node_id("a", a) for a in graph.artifacts if a in ids]
            + [_node_id("s", s) for s in graph.stage_runs if s in ids])


def _mermaid_text(text: str) -> str:
    # Inside a quoted Mermaid label: entity codes for the characters the parser or HTML would eat.
    return (text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;").replace("|", "#124;"))


def _mermaid_edge_label(role: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in role) or "_"


def render_mermaid(graph: LineageGraph) -> str:
    """The lineage as a Mermaid flowchart (renders in GitHub, GitLab, mermaid.live, the CLI)."""
    lines = ["flowchart LR"]

    def node(nid: str, indent: str) -> str:
        if nid.startswith("a_"):
            a = graph.artifacts[_uuid_of(nid)]
            return f'{indent}{nid}(["{"<br/>".join(map(_mermaid_text, _artifact_lines(a)))}"])'
        s = graph.stage_runs[_uuid_of(nid)]
        return f'{indent}{nid}[["{"<br/>".join(map(_mermaid_text, _stage_lines(s)))}"]]'

    groups, loose = _groups(graph)
    for (run_id, index), members in groups.items():
        lines.append(f'  subgraph {_node_id("it", run_id)}_{index}["run {run_id[:8]}, iteration {index}"]')
        lines += [node(n, "    ") for n in members]
        lines.append("  end")
    lines += [node(n, "  ") for n in loose]
    for src, dst, label, kind in _graph_edges(graph):
        arrow = "-.->" if kind == "reused" else "-->"
        lines.append(f"  {src} {arrow}|{_mermaid_edge_label(label)}| {dst}")
    lines += ["  classDef artifact fill:#eef3fb,stroke:#3b5b8c",
              "  classDef stage fill:#eef8ee,stroke:#3c7a3c",
              "  classDef focus stroke:#c62828,stroke-width:3px"]
    for cls, prefix in (("artifact", "a_"), ("stage", "s_")):
        members = [n for ns in [*groups.values(), loose] for n in ns if n.startswith(prefix)]
        if members:
            lines.append(f"  class {','.join(members)} {cls}")
    if focus := _focus_nodes(graph):
        lines.append(f"  class {','.join(focus)} focus")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(graph: LineageGraph) -> str:
    """The lineage as a Graphviz DOT digraph (`dot -Tsvg lineage.dot > lineage.svg`)."""
    focus = set(_focus_nodes(graph))
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']

    def node(nid: str, indent: str) -> str:
        if nid.startswith("a_"):
            label = "\n".join(_artifact_lines(graph.artifacts[_uuid_of(nid)]))
            attrs = 'shape=note, style=filled, fillcolor="#eef3fb"'
        else:
            label = "\n".join(_stage_lines(graph.stage_runs[_uuid_of(nid)]))
            attrs = 'shape=box, style="rounded,filled", fillcolor="#eef8ee"'
        if nid in focus:
            attrs += ', color="#c62828", penwidth=3'
        return f"{indent}{nid} [{attrs}, label={_dot_string(label)}];"

    groups, loose = _groups(graph)
    for (run_id, index), members in groups.items():
        lines.append(f"  subgraph cluster_{run_id.replace('-', '')}_{index} {{")
        lines.append(f'    label={_dot_string(f"run {run_id[:8]}, iteration {index}")}; style=rounded; color=gray60;')
        lines += [node(n, "    ") for n in members]
        lines.append("  }")
    lines += [node(n, "  ") for n in loose]
    for src, dst, label, kind in _graph_edges(graph):
        style = ", style=dashed" if kind == "reused" else ""
        lines.append(f"  {src} -> {dst} [label={_dot_string(label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _uuid_of(node_id: str) -> str:
    return str(uuid.UUID(node_id.split("_", 1)[1]))
