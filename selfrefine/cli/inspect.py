"""`selfrefine runs | show`: read-only views of the store (`lineage` and `diff` are in audit.py)."""

from __future__ import annotations

import argparse
import json
import uuid

from selfrefine.errors import NotFoundError
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import default_store
from selfrefine.storage.schema import Run


def register(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--limit", type=int, default=50)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_runs)

    show = sub.add_parser("show", help="a run's iterations and stages: status, times, metrics, artifacts")
    show.add_argument("run", help="run id or unique prefix")
    show.add_argument("--json", action="store_true")
    show.add_argument("--verbose", action="store_true",
                      help="every stage's outputs with full digests, metrics and Prefect ids")
    show.set_defaults(func=_show)


def _duration(start, end) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f}s"


def _runs(args) -> int:
    with default_store().session() as s:
        rows = repo.list_runs(s, args.limit)
        data = [{"id": str(r.id), "name": r.name, "status": r.status.value,
                 "n_iterations": r.n_iterations, "created": repo.ago(r.created),
                 "prefect_flow_run_id": r.prefect_flow_run_id} for r in rows]
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if not data:
        print("no runs yet")
        return 0
    print(f"{'id':36}  {'status':9}  {'iters':5}  {'created':19}  name")
    for r in data:
        print(f"{r['id']:36}  {r['status']:9}  {r['n_iterations']:<5}  {r['created']:19}  {r['name']}")
    return 0


def run_report(session, run: Run) -> dict:
    """Everything `show` prints, as plain data (also used by the flows' summaries)."""
    report = {"id": str(run.id), "name": run.name, "status": run.status.value,
              "n_iterations": run.n_iterations, "prefect_flow_run_id": run.prefect_flow_run_id,
              "created": repo.ago(run.created), "error": run.error, "iterations": []}
    for it in repo.iterations_of(session, run.id):
        stages = []
        for sr in repo.stage_runs_of(session, it.id):
            producer = repo.producing_stage_run(session, sr)
            stages.append({
                "id": str(sr.id), "stage": sr.stage, "status": sr.status.value, "attempt": sr.attempt,
                "stage_key": sr.stage_key, "duration": _duration(sr.started_at, sr.ended_at),
                "reused_from": str(sr.reused_from_id) if sr.reused_from_id else None,
                "prefect_flow_run_id": sr.prefect_flow_run_id,
                "prefect_task_run_id": sr.prefect_task_run_id,
                "error": (sr.error or "").strip().splitlines()[-1] if sr.error else None,
                "outputs": {role: {"id": str(a.id), "kind": a.kind, "sha256": a.sha256}
                            for role, a in repo.stage_outputs(session, sr).items()},
                "metrics": [{"name": m.name, "value": m.value, "labels": m.labels}
                            for m in repo.metrics_of(session, producer.id)],
            })
        report["iterations"].append({"id": str(it.id), "index": it.index, "status": it.status.value,
                                     "prefect_flow_run_id": it.prefect_flow_run_id, "stages": stages})
    from selfrefine.flows.plots import plots_of  # the run's pictures (a report stage after the last iteration)

    report["plots"] = {role: {"id": str(a.id), "kind": a.kind, "sha256": a.sha256}
                       for role, a in plots_of(session, run.id).items()}
    return report


def _show(args) -> int:
    with default_store().session() as s:
        obj = repo.resolve(s, args.run)
        if not isinstance(obj, Run):
            raise NotFoundError(f"{args.run!r} is a {repo.describe(obj)}, not a run; "
                                "use `selfrefine lineage` for artifacts and stage runs")
        report = run_report(s, obj)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not args.verbose:
        _print_concise(report)
        return 0
    _print_run_header(report, with_prefect=True)
    for it in report["iterations"]:
        print(f"iteration {it['index']}  [{it['status']}]  prefect {it['prefect_flow_run_id'] or '-'}")
        for st in it["stages"]:
            reused = f" from {st['reused_from'][:8]}" if st["reused_from"] else ""
            # A stage dispatched to a work pool ran in a flow run of its own.
            elsewhere = st["prefect_flow_run_id"] not in (None, it["prefect_flow_run_id"])
            prefect = f"prefect flow {st['prefect_flow_run_id']}" if elsewhere else \
                f"prefect task {st['prefect_task_run_id'] or '-'}"
            print(f"  {st['stage']:22} {st['status']:11}{reused} attempt {st['attempt']}  "
                  f"{st['duration']:>8}  stage run {st['id'][:8]}  {prefect}")
            for role, out in st["outputs"].items():  # full digests: the exact bytes of each output
                print(f"      {role}: {out['kind']} {out['id']} sha256:{out['sha256']}")
            for m in st["metrics"]:
                labels = ",".join(f"{k}={v}" for k, v in sorted(m["labels"].items()))
                print(f"      {m['name']}{'{' + labels + '}' if labels else ''} = {m['value']:.4g}")
            if st["error"]:
                print(f"      error: {st['error']}")
    for role, out in report["plots"].items():
        print(f"plots: {role}: {out['kind']} {out['id']} sha256:{out['sha256']}")
    return 0


def _print_concise(report: dict) -> None:
    """Per iteration, one line per stage (status, time, output ids), then the headline judge and
    policy figures of the summary table; `--verbose` lists everything."""
    from selfrefine.flows.report import summary_table
    from selfrefine.storage.engine import default_store

    _print_run_header(report, with_prefect=False)
    for it in report["iterations"]:
        print(f"iteration {it['index']}  [{it['status']}]")
        for st in it["stages"]:
            reused = f" from {st['reused_from'][:8]}" if st["reused_from"] else ""
            outputs = "  ".join(f"{role} {out['id'][:8]}" for role, out in st["outputs"].items())
            print(f"  {st['stage']:22} {st['status']:9}{reused:14} {st['duration']:>8}  {outputs}")
            if st["error"]:
                print(f"      error: {st['error']}")
    if report["iterations"]:
        print(summary_table(default_store(), uuid.UUID(report["id"])))
    print(f"full listing: selfrefine show {report['id']} --verbose")


def _print_run_header(report: dict, *, with_prefect: bool) -> None:
    print(f"run {report['id']}  {report['name']}  [{report['status']}]  "
          f"{report['n_iterations']} iterations  created {report['created']}")
    if with_prefect and report["prefect_flow_run_id"]:
        print(f"  prefect flow run {report['prefect_flow_run_id']}")
    if report["error"]:
        print(f"  error: {report['error'].strip().splitlines()[-1]}")
