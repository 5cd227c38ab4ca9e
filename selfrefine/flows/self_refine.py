"""The self-refine flows: N iterations of the six stages, and resume.

    self_refine(preset, n_iterations, knobs, config)   a new run
    resume(run_id)                              continue a failed or killed run

Both drive the same loop: every stage goes through the stage runner, so on resume the stages
that completed are reused (their keys match, their outputs verify) and the failed stage and
everything after it run. Iteration i's judge, policy, filtered pairs and rationales feed
iteration i+1.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from prefect import flow, task

from selfrefine.errors import ConfigError, LeaseHeldError, SelfRefineError, StageFailedError
from selfrefine.flows import plots, report
from selfrefine.flows.config import STAGES, RunConfig, load_preset
from selfrefine.flows.dispatch import dispatch_stage
from selfrefine.flows.knobs import RunKnobs, apply_knobs
from selfrefine.flows.lease import RunLease
from selfrefine.flows.preflight import config_digest, evaluator_artifact, prepare_resume, preflight
from selfrefine.provenance import config_snapshot, host_name, library_versions, redact_text
from selfrefine.runtime.runner import prefect_run_ids
from selfrefine.runtime.stage import StageOutcome
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store, default_store
from selfrefine.storage.schema import Iteration, Run, RunStatus, utcnow
from selfrefine.tasks import ingest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Carry:
    """Artifact ids one iteration hands to the next."""

    judge: uuid.UUID | None = None
    policy: uuid.UUID | None = None
    self_pairs: uuid.UUID | None = None
    rationales: uuid.UUID | None = None
    metrics: uuid.UUID | None = None
    policy_responses: uuid.UUID | None = None


def stage_seed(run_seed: int, iteration: int, stage: str) -> int:
    """A distinct, reproducible seed per (run seed, iteration, stage)."""
    return run_seed * 100_003 + iteration * 101 + STAGES.index(stage)


# -- stage tasks ---------------------------------------------------------------------------------


@task(name="stage", task_run_name="{stage}", persist_result=False)
def stage_task(stage: str, config, inputs: dict[str, uuid.UUID], iteration_id: uuid.UUID,
               seed: int | None, placement: str) -> StageOutcome:
    """One stage as a Prefect task: dispatched inline or to its work pool."""
    return dispatch_stage(stage, config, inputs, iteration_id=iteration_id, seed=seed,
                          placement=placement)


def _run(stage: str, cfg: RunConfig, config, inputs, iteration: Iteration, index: int,
         retries: int, seed: int | None = None) -> StageOutcome:
    if seed is None and stage != "ingest_data":
        seed = stage_seed(cfg.seed, index, stage)
    placement = "inline" if stage == "ingest_data" else cfg.placement_of(stage)
    inputs = {role: art for role, art in inputs.items() if art is not None}
    return stage_task.with_options(retries=retries)(stage, config, inputs, iteration.id, seed, placement)


# -- one iteration -------------------------------------------------------------------------------


@flow(name="iteration", flow_run_name="iteration-{index}", persist_result=False)
def iteration_flow(run_id: uuid.UUID, index: int, cfg: RunConfig, ingest_config: ingest.IngestConfig,
                   carry: Carry, retries: int = 0) -> Carry:
    store = default_store()
    flow_id, _ = prefect_run_ids()
    with store.session() as s:
        it = repo.get_or_create_iteration(s, run_id, index)
        it.status, it.prefect_flow_run_id, it.started_at, it.error = RunStatus.running, flow_id, utcnow(), None
    try:
        new = _iteration_stages(cfg, ingest_config, carry, it, index, retries)
    except BaseException as exc:
        if not isinstance(exc, LeaseHeldError):  # the new driver owns the iteration's status now
            with store.session() as s:
                row = s.get_one(Iteration, it.id)
                row.status, row.ended_at, row.error = RunStatus.failed, utcnow(), str(exc)[:4000]
        raise
    with store.session() as s:
        row = s.get_one(Iteration, it.id)
        row.status, row.ended_at = RunStatus.completed, utcnow()
    report.publish_iteration(store, run_id, index)
    return new


def _iteration_stages(cfg: RunConfig, ingest_config, carry: Carry, it: Iteration, index: int,
                      retries: int) -> Carry:
    data = _run("ingest_data", cfg, ingest_config, {}, it, index, retries).outputs
    seeds = {role: a for role, a in data.items() if role.startswith("seed_pairs")}
    judge = _run("train_judge", cfg, cfg.train_judge, {
        **seeds, "self_pairs": carry.self_pairs, "rationales": carry.rationales, "init_judge": carry.judge,
    }, it, index, retries).outputs["judge"]
    # The first iteration's policy is the judge itself (controllable generation from CoH training).
    policy = carry.policy or judge
    prompts = {role: a for role, a in data.items() if role.startswith("prompts")}
    candidates = _run("generate", cfg, cfg.generate, {**prompts, "policy": policy},
                      it, index, retries).outputs["candidates"]
    rationales = _run("bootstrap_rationales", cfg, cfg.bootstrap_rationales, {
        **{r.replace("seed_pairs", "pairs"): a for r, a in seeds.items()}, "judge": judge,
    }, it, index, retries).outputs["rationales"]
    filtered = _run("score_filter", cfg, cfg.score_filter, {"candidates": candidates, "judge": judge},
                    it, index, retries).outputs
    new_policy = _run("policy_round", cfg, cfg.policy_round, {
        "pairs": filtered["pairs"], "scores": filtered["scores"], "policy": policy,
    }, it, index, retries).outputs["policy"]
    heldout = {r.replace("heldout_pairs", "heldout"): a for r, a in data.items() if r.startswith("heldout_pairs")}
    bestofn = {r: a for r, a in data.items() if r.startswith("bestofn")}
    # n-shot evaluation draws its demonstrations from the seed pairs, never from held-out data.
    demos = {r.replace("seed_pairs", "demo_pairs"): a for r, a in seeds.items()} if cfg.evaluate.demonstrations else {}
    metrics = _run("evaluate", cfg, cfg.evaluate, {
        **heldout, **bestofn, **demos, "judge": judge, "previous_metrics": carry.metrics,
    }, it, index, retries).outputs["metrics"]
    responses = None
    if cfg.evaluates_policy:
        responses = _evaluate_policy(cfg, data, new_policy, carry, it, index, retries)
    return Carry(judge=judge, policy=new_policy, self_pairs=filtered["pairs"], rationales=rationales,
                 metrics=metrics, policy_responses=responses)


def response_seed(cfg: RunConfig) -> int:
    """One seed for every policy's answers in a run, whatever the iteration: greedy answers take 0, so
    that the base policy's answers are the same stage (key) in every run."""
    if cfg.evaluate_policy.responses.temperature == 0:
        return 0
    return stage_seed(cfg.seed, 0, "policy_responses")


def _evaluate_policy(cfg: RunConfig, data: dict[str, uuid.UUID], policy: uuid.UUID, carry: Carry,
                     it: Iteration, index: int, retries: int) -> uuid.UUID:
    """The base's and the iteration's policy's answers to the policy prompts, judged by the evaluator;
    returns the policy's answers (the next iteration's `previous_responses`)."""
    prompts = {r: a for r, a in data.items() if r.startswith("policy_prompts")}
    seed = response_seed(cfg)
    base = _run("base_responses", cfg, cfg.evaluate_policy.respond_config(model=cfg.base_policy()), prompts, it,
                index, retries, seed=seed).outputs["responses"]
    responses = _run("policy_responses", cfg, cfg.evaluate_policy.respond_config(), {**prompts, "policy": policy},
                     it, index, retries, seed=seed).outputs["responses"]
    bestofn = {r: a for r, a in data.items() if r.startswith("bestofn")}
    evaluator = evaluator_artifact(cfg)
    if cfg.evaluate_policy.check_evaluator and bestofn:
        check = cfg.evaluate_policy.evaluator_check_config(by_artifact=evaluator is not None)
        _run("evaluate_evaluator", cfg, check, {**bestofn, "judge": evaluator}, it, index, retries, seed=0)
    _run("evaluate_policy", cfg, cfg.evaluate_policy, {
        "responses": responses, "base_responses": base,
        # Iteration 1 is compared with the policy before the run: the base.
        "previous_responses": carry.policy_responses or base, "evaluator": evaluator,
    }, it, index, retries)
    return responses


# -- runs ----------------------------------------------------------------------------------------


def _drive(store: Store, run_id: uuid.UUID, cfg: RunConfig, ingest_config: ingest.IngestConfig,
           n_iterations: int, retries: int) -> None:
    flow_id, _ = prefect_run_ids()
    with RunLease(store, run_id):
        with store.session() as s:
            run = s.get_one(Run, run_id)
            run.status, run.error, run.ended_at = RunStatus.running, None, None
            run.started_at = run.started_at or utcnow()
            run.prefect_flow_run_id = flow_id or run.prefect_flow_run_id
            run.host = host_name()
        carry = Carry()
        try:
            for index in range(1, n_iterations + 1):
                carry = iteration_flow(run_id, index, cfg, ingest_config, carry, retries)
            plots.plot_run_task(run_id)  # the run's pictures, linked from the last iteration
        except BaseException as exc:
            if isinstance(exc, LeaseHeldError):
                # Another process took the run over: its status is that driver's to write.
                raise
            with store.session() as s:
                run = s.get_one(Run, run_id)
                run.status, run.ended_at, run.error = RunStatus.failed, utcnow(), redact_text(str(exc))[:4000]
            if isinstance(exc, Exception) and not isinstance(exc, SelfRefineError):
                # A stage raised: the run is recorded as failed with the stage's traceback; the
                # user needs the one-line reason and the way on, not the traceback.
                first = (str(exc).strip().splitlines() or [""])[0]
                raise StageFailedError(
                    f"run {run_id} failed: {type(exc).__name__}: {first} — the traceback is recorded "
                    f"(selfrefine show {run_id}); continue with `selfrefine resume {run_id}`") from exc
            raise
        with store.session() as s:
            run = s.get_one(Run, run_id)
            run.status, run.ended_at = RunStatus.completed, utcnow()
    report.publish_run(store, run_id)


@flow(name="self-refine", persist_result=False)
def self_refine(preset: str = "cpu", n_iterations: int = 2, knobs: RunKnobs = RunKnobs(),
                config: RunConfig | None = None, stage_retries: int = 0) -> str:
    """Start a self-refine run; returns the run id.

    Args:
        preset: The shipped preset the run starts from: tiny (seconds, random tiny model, for
            tests), cpu (the packaged SmolLM2-135M model), gpu, … (selfrefine/presets/*.yaml).
        n_iterations: Number of self-refine iterations (judge, generation, rationales, filter,
            policy, evaluation), at least 1.
        knobs: The main settings, set on top of the preset; a knob left empty keeps the preset's value.
        config: The full run configuration; when given it replaces the preset (knobs still apply).
        stage_retries: How often Prefect retries a failing stage in place.
    """
    if n_iterations < 1:
        raise ConfigError(f"n_iterations must be at least 1, got {n_iterations}")
    cfg = apply_knobs(config if config is not None else load_preset(preset), knobs)
    ingest_config = preflight(cfg)  # bad data fails here, before the store is touched
    store = default_store()
    flow_id, _ = prefect_run_ids()
    with store.session() as s:
        run = repo.create_run(s, name=cfg.name, n_iterations=n_iterations,
                              config=config_snapshot(cfg), config_digest=config_digest(cfg),
                              host=host_name(), versions=library_versions(), prefect_flow_run_id=flow_id)
        run_id = run.id
    log.info("selfrefine run %s: %d iterations of %r", run_id, n_iterations, cfg.name)
    _drive(store, run_id, cfg, ingest_config, n_iterations, stage_retries)
    return str(run_id)


@flow(name="resume", persist_result=False)
def resume(run_id: str, config: RunConfig | None = None, allow_config_change: bool = False,
           stage_retries: int = 0) -> str:
    """Continue a failed or killed run: completed stages are reused, the rest run.

    With `config`, the run continues under that configuration only if `allow_config_change`
    is set; then exactly the stages whose keys change recompute.
    """
    store = default_store()
    run_uuid, cfg, n_iterations = prepare_resume(run_id, config, allow_config_change)
    if config is not None:
        with store.session() as s:
            row = s.get_one(Run, run_uuid)
            row.config, row.config_digest = config_snapshot(cfg), config_digest(cfg)
    log.info("resuming selfrefine run %s", run_uuid)
    _drive(store, run_uuid, cfg, preflight(cfg), n_iterations, stage_retries)
    return str(run_uuid)
