"""`selfrefine eval --policy … --baseline … --evaluator … --prompts …`: a policy against a baseline,
outside a run.

The same three stages a run uses (`policy_responses`, `base_responses`, `evaluate_policy`) go
through the stage runner, so the answers and figures are stored with their lineage and reused
when the same policy, prompts and settings come again (a baseline's answers are generated once).
"""

from __future__ import annotations

import json

from selfrefine.errors import ConfigError


def _settings(overrides: list[str]):
    from pydantic import ValidationError

    from selfrefine.cli.overrides import apply_overrides
    from selfrefine.tasks.evaluate_policy import EvaluatePolicyConfig

    raw = apply_overrides(EvaluatePolicyConfig().model_dump(mode="json"), overrides)
    try:
        return EvaluatePolicyConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--set: field 'evaluate_policy.{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def _answers(store, stage: str, settings, name: str, prompts: dict, seed: int):
    """Run (or reuse) one policy's answers: a model artifact as the `policy` input, anything else by name."""
    from selfrefine.models.loading import check_model
    from selfrefine.runtime.registry import execute
    from selfrefine.storage import repository as repo

    artifact = repo.model_artifact_id(name, store)
    if artifact is None:
        check_model(name)
    config = settings.respond_config(model=None if artifact else name)
    inputs = {**prompts, **({"policy": artifact} if artifact else {})}
    return execute(stage, config, inputs, iteration_id=None, seed=seed, store=store).outputs["responses"]


def evaluate_policy_command(args) -> int:
    from selfrefine.data import DataSource
    from selfrefine.models.loading import check_model
    from selfrefine.runtime.registry import execute
    from selfrefine.storage import repository as repo
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.engine import default_store
    from selfrefine.storage.schema import Artifact
    from selfrefine.tasks import ingest

    settings = _settings(args.set).model_copy(update={"evaluator": args.evaluator})
    settings = settings.model_copy(update={"judge": settings.judge.model_copy(update={"dtype": args.dtype})})
    source = DataSource(kind="local", path=args.prompts, dimension=args.dimension or "helpful", limit=args.limit,
                        on_invalid="skip" if args.skip_invalid else None)
    ingest_config, counts = ingest.prepare({"policy_prompts_0": ("prompts", source)})  # validates before any write
    store = default_store()
    evaluator = repo.model_artifact_id(args.evaluator, store)
    if evaluator is None:
        check_model(args.evaluator)  # a missing evaluator fails before anything is generated
    prompts = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store).outputs
    seed = 0 if settings.responses.temperature == 0 else 1
    policy = _answers(store, "policy_responses", settings, args.policy, prompts, seed)
    baseline = _answers(store, "base_responses", settings, args.baseline, prompts, seed)
    inputs = {"responses": policy, "base_responses": baseline, **({"evaluator": evaluator} if evaluator else {})}
    outcome = execute("evaluate_policy", settings, inputs, iteration_id=None, seed=0, store=store)
    with store.session() as s:
        art = s.get_one(Artifact, outcome.outputs["metrics"])
        metrics = json.loads(ArtifactStore().local_path(art.uri).read_text())
        metrics_id = art.id
    metrics.pop("rewards", None)  # every response's reward stays in the artifact
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
        return 0
    vs = metrics["vs_base"]
    print(f"policy {args.policy} against {args.baseline} on {args.prompts} ({counts['policy_prompts_0']} prompts), "
          f"evaluator {args.evaluator}")
    print(f"  win rate {vs['win_rate']:.3f} ± {vs['win_rate_se'] or 0:.3f}  length-controlled "
          f"{vs['lc_win_rate']:.3f} ± {vs['lc_win_rate_se'] or 0:.3f}  ties {vs['ties']}")
    print(f"  controllability {metrics['controllability']['controllability']:.3f}  mean length "
          f"{vs['mean_length']:.0f} chars (baseline {vs['baseline_mean_length']:.0f})")
    for dim, m in sorted(metrics.get("by_dimension", {}).items()):
        print(f"  {dim}: win rate {m['vs_base']['win_rate']:.3f}, length-controlled {m['vs_base']['lc_win_rate']:.3f}"
              f" ({m['n_prompts']} prompts)")
    print(f"metrics artifact {metrics_id} (selfrefine lineage {metrics_id})")
    return 0
