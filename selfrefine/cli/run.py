"""`selfrefine run | resume | eval`: start runs, continue them, evaluate a judge outside a run."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

from selfrefine.cli.overrides import apply_overrides
from selfrefine.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="start a self-refine run (a Prefect flow run)")
    _config_args(run)
    run.add_argument("-n", "--iterations", type=int, default=2, help="number of iterations (default 2)")
    run.set_defaults(func=_run)

    res = sub.add_parser("resume", help="continue a failed or killed run, reusing completed stages")
    res.add_argument("run", help="run id or unique prefix")
    res.add_argument("--config", help="YAML run config to continue under (needs --allow-config-change)")
    res.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override one field of the run's config (needs --allow-config-change)")
    res.add_argument("--allow-config-change", action="store_true",
                     help="continue under a changed config: only stages whose keys change recompute")
    res.add_argument("--retries", type=int, default=0, help="Prefect retries per stage")
    res.set_defaults(func=_resume)

    ev = sub.add_parser("eval", help="evaluate a judge on a pairs or best-of-n file (--judge, --data), or a "
                                     "policy against a baseline by an evaluator (--policy, --baseline, --evaluator, "
                                     "--prompts), outside a run")
    ev.add_argument("--judge", help="judge: model artifact id, model directory, 'packaged', 'tiny' or a hub id")
    ev.add_argument("--data", help="JSONL / JSONL.gz / Parquet of pairs or best-of-n items")
    ev.add_argument("--policy", help="policy to evaluate: model artifact id, model directory, alias or hub id")
    ev.add_argument("--baseline", help="policy to compare it with (same forms as --policy)")
    ev.add_argument("--evaluator", help="evaluator: a judge (artifact, directory, alias) or a hub id of a "
                                        "sequence-classification reward model")
    ev.add_argument("--prompts", help="JSONL / JSONL.gz / Parquet of prompts the two policies answer")
    ev.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a field of evaluate (with --judge, e.g. --set pairwise_verdicts=prompt; the "
                         "judge's recorded reading is the default) or of evaluate_policy (with --policy, e.g. "
                         "--set responses.max_new_tokens=128)")
    ev.add_argument("--dimension", help="dimension for records that have none (default helpful)")
    ev.add_argument("--limit", type=int, help="evaluate at most this many items (the first ones)")
    ev.add_argument("--skip-invalid", action="store_true", help="skip invalid records instead of stopping")
    ev.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(func=_eval)


def _config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", default="cpu", help="preset name (tiny, cpu, gpu, quality)")
    group.add_argument("--config", help="YAML run config file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set generate.max_new_tokens=64 "
                             "(VALUE is parsed as YAML)")
    parser.add_argument("--retries", type=int, default=0, help="Prefect retries per stage")


def build_config(preset: str | None, config_file: str | None, overrides: list[str]):
    from selfrefine.flows.config import load_config_file, load_preset, parse_config

    cfg = load_config_file(config_file) if config_file else load_preset(preset or "cpu")
    if not overrides:
        return cfg
    return parse_config(apply_overrides(cfg.model_dump(mode="json"), overrides), where="--set")


def print_summary(run_id: str) -> None:
    from selfrefine.flows.report import summary_table
    from selfrefine.storage.engine import default_store

    from selfrefine.storage.schema import Run

    store = default_store()
    print(summary_table(store, uuid.UUID(run_id)))
    with store.session() as s:
        flow_run_id = s.get_one(Run, uuid.UUID(run_id)).prefect_flow_run_id
    ui = prefect_ui_url()
    if ui and flow_run_id:
        print(f"Prefect UI: {ui}/runs/flow-run/{flow_run_id}")
    print(f"details: selfrefine show {run_id}    lineage: selfrefine lineage {run_id}")


def prefect_ui_url() -> str | None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    api = PREFECT_API_URL.value()
    if not api:
        return None
    return PREFECT_UI_URL.value() or api.removesuffix("/api")


def _run(args) -> int:
    from selfrefine.flows.preflight import preflight

    if args.iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, got {args.iterations}")
    cfg = build_config(args.preset, args.config, args.set)
    preflight(cfg)  # bad data: one clear line before any flow run or store row exists, and before Prefect is imported
    from selfrefine.flows.self_refine import self_refine
    from selfrefine.storage.engine import default_store

    default_store()  # an unreachable or unmigrated store: the same, before any flow run
    run_id = self_refine(config=cfg, n_iterations=args.iterations, stage_retries=args.retries)
    print_summary(run_id)
    return 0


def _resume(args) -> int:
    from selfrefine.flows.config import load_config_file, parse_config
    from selfrefine.flows.preflight import prepare_resume
    from selfrefine.storage import repository as repo
    from selfrefine.storage.engine import default_store
    from selfrefine.storage.schema import Run

    config = None
    if args.config:
        config = load_config_file(args.config)
    if args.set:
        if config is None:
            with default_store().session() as s:
                obj = repo.resolve(s, args.run)
                if not isinstance(obj, Run):
                    raise ConfigError(f"{args.run!r} is a {repo.describe(obj)}, not a run")
                config = parse_config(obj.config, where=f"run {obj.id}'s stored config (resume it with --config FILE)")
        config = parse_config(apply_overrides(config.model_dump(mode="json"), args.set), where="--set")
    # Refusals come before any flow run, and before Prefect is imported.
    prepare_resume(args.run, config, args.allow_config_change)
    from selfrefine.flows.self_refine import resume

    run_id = resume(run_id=args.run, config=config, allow_config_change=args.allow_config_change,
                    stage_retries=args.retries)
    print_summary(run_id)
    return 0


def detect_kind(path: str) -> str:
    """'bestofn' when the first record has candidates, else 'pairs'."""
    from selfrefine.data.readers import iter_records

    for line, record in iter_records(path):
        return "bestofn" if isinstance(record, dict) and "candidates" in record else "pairs"
    raise DataError("the file holds no records", path=path)


def _judge_eval_config(args, judge_artifact, store):
    """evaluate's config for `eval --judge`: the judge read as it was trained to be read (the
    reading in its judge.json), then the user's --set overrides."""
    from pydantic import ValidationError

    from selfrefine.models.judge_info import judge_reading
    from selfrefine.scoring.judge_settings import JudgeSettings
    from selfrefine.tasks.evaluate import EvaluateConfig

    if judge_artifact is not None:
        from selfrefine.storage.artifacts import ArtifactStore
        from selfrefine.storage.schema import Artifact

        with store.session() as s:
            judge_dir = ArtifactStore().local_path(s.get_one(Artifact, judge_artifact).uri)
    else:
        judge_dir = Path(args.judge)
    reading = judge_reading(judge_dir) if judge_dir.is_dir() else None
    raw = EvaluateConfig(judge_model=None if judge_artifact else args.judge,
                         judge=JudgeSettings(dtype=args.dtype)).model_dump(mode="json")
    raw = apply_overrides(raw | (reading or {}), args.set)
    try:
        return EvaluateConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--set: field 'evaluate.{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def _eval(args) -> int:
    if args.policy or args.baseline or args.evaluator or args.prompts:
        from selfrefine.cli.policy_eval import evaluate_policy_command

        missing = [f"--{name}" for name in ("policy", "baseline", "evaluator", "prompts") if not getattr(args, name)]
        if missing or args.judge or args.data:
            raise ConfigError("policy evaluation takes --policy, --baseline, --evaluator and --prompts (missing: "
                              f"{', '.join(missing) or 'none'}), and neither --judge nor --data")
        return evaluate_policy_command(args)
    if not args.judge or not args.data:
        raise ConfigError("eval needs --judge and --data (a judge on labelled data), or --policy, --baseline, "
                          "--evaluator and --prompts (a policy against a baseline)")
    from selfrefine.data import DataSource
    from selfrefine.runtime.registry import execute
    from selfrefine.storage import repository as repo
    from selfrefine.storage.engine import default_store
    from selfrefine.storage.schema import Artifact
    from selfrefine.tasks import ingest

    kind = detect_kind(args.data)
    source = DataSource(kind="local", path=args.data, dimension=args.dimension or "helpful", limit=args.limit,
                        on_invalid="skip" if args.skip_invalid else None)
    role = "bestofn_0" if kind == "bestofn" else "heldout_0"
    ingest_config, counts = ingest.prepare({role: (kind, source)})  # validates before any write
    store = default_store()
    judge_artifact = repo.model_artifact_id(args.judge, store)
    if judge_artifact is None:
        from selfrefine.models.loading import check_model

        check_model(args.judge)  # a missing or corrupted judge fails before the data is stored
    config = _judge_eval_config(args, judge_artifact, store)  # bad --set fails before the data is stored
    data = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store).outputs
    inputs = {role: data[role], **({"judge": judge_artifact} if judge_artifact else {})}
    outcome = execute("evaluate", config, inputs, iteration_id=None, seed=0, store=store)
    with store.session() as s:
        art = s.get_one(Artifact, outcome.outputs["metrics"])
        from selfrefine.storage.artifacts import ArtifactStore

        metrics = json.loads(ArtifactStore().local_path(art.uri).read_text())
        metrics.pop("item_scores", None)  # every item's score, kept in the artifact for the next evaluation
        metrics_id = art.id
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
        return 0
    print(f"judge {args.judge} on {args.data} ({counts[role]} {kind} items)")
    for section in ("pairwise", "absolute", "bestofn"):
        if section in metrics:
            flat = {k: v for k, v in metrics[section].items() if isinstance(v, (int, float))}
            if "calibration" in metrics[section]:
                flat["ece"] = metrics[section]["calibration"]["ece"]
            print(f"  {section:9} " + "  ".join(f"{k}={v:.4g}" for k, v in flat.items()))
    for source_name, m in sorted(metrics.get("by_source", {}).items()):
        print(f"  source {source_name}: pairwise accuracy {m['pairwise']['accuracy']:.4g}")
    print(f"metrics artifact {metrics_id} (selfrefine lineage {metrics_id})")
    return 0
