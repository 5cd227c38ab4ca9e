"""`selfrefine lineage | diff`: trace a model to the bytes it was made from, and compare iterations.

    selfrefine lineage ID [--format tree|json|mermaid|dot]   ancestors and descendants of an id
    selfrefine diff RUN_A:ITER RUN_B:ITER [--json]           what differs between two iterations

Every answer names artifacts by id and full sha256, so a picture or a diff is as exact as the store.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from selfrefine.errors import ConfigError, NotFoundError
from selfrefine.provenance import redact
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import default_store
from selfrefine.storage.lineage import lineage, render_dot, render_mermaid, render_tree
from selfrefine.storage.schema import Run

# Sections of a diff: (title, stage, what of the stage is compared).
ARTIFACT_SECTIONS = (("data", "ingest_data", "the ingested data sets (ingest_data outputs)"),
                     ("judge", "train_judge", "the judge and what it was trained from (train_judge)"),
                     ("policy", "policy_round", "the policy and what it was trained from (policy_round)"),
                     ("policy_evaluation", "evaluate_policy",
                      "the policy's figures and what they were measured from: answers and evaluator (evaluate_policy)"))


def register(sub: argparse._SubParsersAction) -> None:
    lin = sub.add_parser("lineage", help="ancestors and descendants of an artifact, stage run or run")
    lin.add_argument("id", help="id or unique prefix of an artifact, stage run, iteration or run; "
                                "or sha256:<digest prefix>")
    lin.add_argument("--format", choices=("tree", "json", "mermaid", "dot"), default="tree",
                     help="tree (default), json, or a graph: mermaid (flowchart) or dot (Graphviz)")
    lin.add_argument("--json", action="store_const", const="json", dest="format",
                     help="same as --format json")
    lin.set_defaults(func=_lineage)

    diff = sub.add_parser("diff", help="what differs between two iterations: data digests, config "
                                       "fields, judge and policy parents, metrics")
    diff.add_argument("a", metavar="RUN_A:ITER", help="run id or unique prefix, ':' and an iteration "
                                                      "index (without ':ITER', the run's last iteration)")
    diff.add_argument("b", metavar="RUN_B:ITER")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(func=_diff)


def _lineage(args) -> int:
    with default_store().session() as s:
        obj = repo.resolve(s, args.id)
        graph = lineage(s, obj)
        if args.format == "json":
            print(json.dumps(graph.to_json(), indent=2))
        elif args.format == "mermaid":
            print(render_mermaid(graph), end="")
        elif args.format == "dot":
            print(render_dot(graph), end="")
        else:
            print(f"lineage of {repo.describe(obj)} {obj.id}")
            print(render_tree(graph, obj))
    return 0


# -- diff ------------------------------------------------------------------------------------------


def parse_target(text: str) -> tuple[str, int | None]:
    """'RUN:ITER' → (run text, iteration index); 'RUN' → (run text, None = the last iteration)."""
    run_text, sep, index = text.rpartition(":")
    if not sep:
        return text, None
    if not index.isdigit() or int(index) < 1 or not run_text:
        raise ConfigError(f"{text!r}: expected RUN:ITER, a run id (or unique prefix) and an iteration "
                          "number from 1, e.g. 3f2a9c1e:2")
    return run_text, int(index)


def _artifact(a) -> dict[str, Any]:
    return {"id": str(a.id), "kind": a.kind, "sha256": a.sha256}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def iteration_view(session, target: str) -> dict[str, Any]:
    """Everything `diff` compares about one iteration, from the store."""
    run_text, index = parse_target(target)
    run = repo.resolve(session, run_text)
    if not isinstance(run, Run):
        raise NotFoundError(f"{run_text!r} is a {repo.describe(run)}, not a run; diff takes RUN:ITER")
    its = repo.iterations_of(session, run.id)
    if not its:
        raise NotFoundError(f"run {run.id} has no iterations yet")
    it = its[-1] if index is None else next((i for i in its if i.index == index), None)
    if it is None:
        raise NotFoundError(f"run {run.id} has iterations {its[0].index}..{its[-1].index}; "
                            f"there is no iteration {index}")
    stages = {}
    for sr in repo.stage_runs_of(session, it.id):
        producer = repo.producing_stage_run(session, sr)
        stages[sr.stage] = {
            "stage_run": str(sr.id), "status": sr.status.value, "stage_key": sr.stage_key, "seed": sr.seed,
            "reused_from": str(sr.reused_from_id) if sr.reused_from_id else None,
            "prefect_flow_run_id": sr.prefect_flow_run_id, "prefect_task_run_id": sr.prefect_task_run_id,
            "inputs": {role: _artifact(a) for role, a in repo.stage_inputs(session, sr).items()},
            "outputs": {role: _artifact(a) for role, a in repo.stage_outputs(session, sr).items()},
            "metrics": {m.name: m.value for m in repo.metrics_of(session, producer.id) if not m.labels},
        }
    return {"run": str(run.id), "run_name": run.name, "iteration": it.index, "iteration_id": str(it.id),
            "status": it.status.value, "prefect_flow_run_id": it.prefect_flow_run_id,
            "config_digest": run.config_digest,
            # Shown to a user: display redaction (the stored snapshot holds no secret field anyway).
            "config": {"n_iterations": run.n_iterations, **_flatten(redact(run.config or {}))}, "stages": stages}


def _pair(a: Any, b: Any) -> dict[str, Any]:
    return {"a": a, "b": b, "same": a == b}


def _roles(stage_a: dict, stage_b: dict, part: str) -> dict[str, Any]:
    roles = sorted(set(stage_a.get(part, {})) | set(stage_b.get(part, {})))
    return {role: _pair(stage_a.get(part, {}).get(role), stage_b.get(part, {}).get(role)) for role in roles}


def diff_views(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The differences between two `iteration_view`s, section by section (each entry has a, b, same)."""
    out: dict[str, Any] = {"a": {k: a[k] for k in ("run", "iteration", "iteration_id", "prefect_flow_run_id")},
                           "b": {k: b[k] for k in ("run", "iteration", "iteration_id", "prefect_flow_run_id")}}
    for title, stage, _ in ARTIFACT_SECTIONS:
        sa, sb = a["stages"].get(stage, {}), b["stages"].get(stage, {})
        section = {"outputs": _roles(sa, sb, "outputs")}
        if stage != "ingest_data":
            section["parents"] = _roles(sa, sb, "inputs")
        out[title] = section
    keys = sorted(set(a["config"]) | set(b["config"]))
    out["config"] = {k: _pair(a["config"].get(k), b["config"].get(k)) for k in keys}
    stages = sorted(set(a["stages"]) | set(b["stages"]), key=lambda st: _stage_order(a, b, st))
    out["stages"] = {st: {"key": _pair(a["stages"].get(st, {}).get("stage_key"), b["stages"].get(st, {}).get("stage_key")),
                          "seed": _pair(a["stages"].get(st, {}).get("seed"), b["stages"].get(st, {}).get("seed")),
                          "stage_run": _pair(a["stages"].get(st, {}).get("stage_run"),
                                             b["stages"].get(st, {}).get("stage_run"))}
                     for st in stages}
    metrics = {}
    for st in stages:
        ma, mb = a["stages"].get(st, {}).get("metrics", {}), b["stages"].get(st, {}).get("metrics", {})
        for name in sorted(set(ma) | set(mb)):
            entry = _pair(ma.get(name), mb.get(name))
            if entry["a"] is not None and entry["b"] is not None:
                entry["change"] = entry["b"] - entry["a"]
            metrics[f"{st}.{name}"] = entry
    out["metrics"] = metrics
    return out


def _stage_order(a: dict, b: dict, stage: str) -> int:
    order = list(a["stages"]) + [s for s in b["stages"] if s not in a["stages"]]
    return order.index(stage)


def _art_text(art: dict | None) -> str:
    return "-" if art is None else f"{art['kind']} artifact {art['id']} sha256:{art['sha256']}"


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


def render_diff(d: dict[str, Any]) -> str:
    lines = []
    for side in ("a", "b"):
        v = d[side]
        lines.append(f"{side.upper()}: run {v['run']} iteration {v['iteration']} "
                     f"(prefect flow run {v['prefect_flow_run_id'] or '-'})")
    for title, stage, what in ARTIFACT_SECTIONS:
        lines += ["", f"{title}: {what}"]
        for part, label in (("outputs", "makes"), ("parents", "uses")):
            for role, e in d[title].get(part, {}).items():
                mark = "=" if e["same"] else "≠"
                if e["same"]:
                    lines.append(f"  {mark} {label} {role}: {_art_text(e['a'])}")
                else:
                    lines.append(f"  {mark} {label} {role}:")
                    lines.append(f"      A {_art_text(e['a'])}")
                    lines.append(f"      B {_art_text(e['b'])}")
    differing = {k: e for k, e in d["config"].items() if not e["same"]}
    lines += ["", f"config: {len(differing)} of {len(d['config'])} fields differ"]
    for k, e in differing.items():
        lines.append(f"  ≠ {k}: A {_value_text(e['a'])}  B {_value_text(e['b'])}")
    lines += ["", "stages: key (same key = same inputs, config and code; seeds are per iteration)"]
    for st, e in d["stages"].items():
        mark = "=" if e["key"]["same"] else "≠"
        seed = "" if e["seed"]["same"] else f"  seed A {e['seed']['a']} B {e['seed']['b']}"
        key = e["key"]["a"][:16] if e["key"]["same"] and e["key"]["a"] else \
            f"A {(e['key']['a'] or '-')[:16]} B {(e['key']['b'] or '-')[:16]}"
        lines.append(f"  {mark} {st:22} {key}{seed}")
    lines += ["", "metrics: A → B (change); timings left out"]
    for name, e in d["metrics"].items():
        if name.endswith("seconds"):
            continue
        mark = "=" if e["same"] else "≠"
        change = f" ({e['change']:+.4g})" if e.get("change") is not None and not e["same"] else ""
        lines.append(f"  {mark} {name}: {_value_text(e['a'])} → {_value_text(e['b'])}{change}")
    return "\n".join(lines)


def _diff(args) -> int:
    with default_store().session() as s:
        d = diff_views(iteration_view(s, args.a), iteration_view(s, args.b))
    print(json.dumps(d, indent=2) if args.json else render_diff(d))
    return 0
