"""The checks a run passes before anything is written: every data source loads and validates
(errors name file, line and field), the policy's evaluation prompts are held out from generation,
and every model the config names resolves and loads.

The `run` command calls `preflight` before it imports the flows, so a bad input is reported
without importing Prefect; `resume` calls `prepare_resume` first for the same reason.
"""

from __future__ import annotations

import logging
import uuid

from selfrefine.errors import ConfigError, NotFoundError
from selfrefine.flows.config import RunConfig, parse_config
from selfrefine.flows.lease import RunLease
from selfrefine.provenance import digest_json
from selfrefine.runtime.keys import output_affecting
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import default_store
from selfrefine.storage.schema import Run
from selfrefine.tasks import ingest

log = logging.getLogger(__name__)


def data_sources(cfg: RunConfig) -> dict[str, tuple[str, object]]:
    roles: dict[str, tuple[str, object]] = {}
    for field, kind in (("seed_pairs", "pairs"), ("prompts", "prompts"), ("heldout_pairs", "pairs"),
                        ("bestofn", "bestofn"), ("policy_prompts", "prompts")):
        for i, source in enumerate(getattr(cfg.data, field)):
            roles[f"{field}_{i}"] = (kind, source)
    return roles


def preflight(cfg: RunConfig) -> ingest.IngestConfig:
    """Validate every data source and model name before anything is written (data errors name
    file, line and field)."""
    config, counts = ingest.prepare(data_sources(cfg), cfg.dimension_definitions)
    log.info("data validated: %s", ", ".join(f"{role}={n}" for role, n in sorted(counts.items())))
    if cfg.evaluates_policy:
        check_policy_prompts_held_out(config)
    check_models(cfg)
    return config


def check_policy_prompts_held_out(config: ingest.IngestConfig) -> None:
    """The policy is evaluated on prompts the loop never generates training candidates for."""
    from selfrefine.errors import DataError

    def prompts_of(prefix: str) -> dict[str, str]:
        keys = {}
        for role, spec in sorted(config.sources.items()):
            if role.startswith(prefix):
                for item in ingest.load_items(spec, config.dimension_definitions):
                    keys.setdefault(item.id, spec.source.path or spec.source.source or spec.source.kind)
        return keys

    generation, held_out = prompts_of("prompts_"), prompts_of("policy_prompts_")
    shared = sorted(set(generation) & set(held_out))
    if shared:
        raise DataError(f"data.policy_prompts shares {len(shared)} of its {len(held_out)} prompts with data.prompts "
                        f"(from {held_out[shared[0]]}); the policy must be evaluated on prompts it is never "
                        "trained on: take them out of one of the two (for the demo source, with skip/limit)")


# The config fields that name a model (an alias, a hub id, an artifact id or a local directory).
MODEL_FIELDS = ("train_judge.base_model", "evaluate.judge_model", "evaluate_policy.evaluator",
                "evaluate_policy.base_policy", "score_filter.embedding_model")


def check_model_paths(cfg: RunConfig) -> None:
    """Every local model directory the config names lies inside $SELFREFINE_DATA_ROOT when it is set
    (a config typed into the UI reads no directory the operator did not allow)."""
    from selfrefine.data.paths import confine_model_name

    for field in MODEL_FIELDS:
        section, name = field.split(".")
        confine_model_name(getattr(getattr(cfg, section), name), field)


def check_models(cfg: RunConfig) -> None:
    """A missing, unreachable or corrupted model fails here, not after the run's first stages."""
    from selfrefine.models.embedding import resolve_embedder
    from selfrefine.models.loading import check_model

    check_model_paths(cfg)  # before anything is read from a model directory
    names = [cfg.train_judge.base_model, cfg.evaluate.judge_model]
    if cfg.evaluates_policy:
        names.append(cfg.base_policy())
        if evaluator_artifact(cfg) is None:
            names.append(cfg.evaluate_policy.evaluator)
    for name in names:
        if name:
            check_model(name)
    resolve_embedder(cfg.score_filter.embedding_model)


def evaluator_artifact(cfg: RunConfig) -> uuid.UUID | None:
    """The model artifact evaluate_policy.evaluator names, if it names one (else a path, alias or hub id)."""
    return repo.model_artifact_id(cfg.evaluate_policy.evaluator) if cfg.evaluate_policy.evaluator else None


def config_digest(cfg: RunConfig) -> str:
    """The digest of what in `cfg` affects outputs: a run records it, and a resume must match it."""
    return digest_json(output_affecting(cfg))


def prepare_resume(run_id: str, config: RunConfig | None = None,
                   allow_config_change: bool = False) -> tuple[uuid.UUID, RunConfig, int]:
    """Check that a run can be resumed (exists, config compatible, not driven by a live process)
    and return its id, the config to continue under and its number of iterations."""
    store = default_store()
    with store.session() as s:
        obj = repo.resolve(s, run_id)
        if not isinstance(obj, Run):
            raise NotFoundError(f"{run_id!r} is a {repo.describe(obj)}, not a run")
        run_uuid, stored, n_iterations, stored_digest = obj.id, obj.config, obj.n_iterations, obj.config_digest
    # A snapshot the config schema no longer reads (a store from an older version) is a clear refusal too.
    cfg = config if config is not None else parse_config(
        stored, where=f"run {run_uuid}'s stored config (resume it with --config FILE)")
    if config is None and config_digest(cfg) != stored_digest:
        # The stored snapshot no longer yields the digest the run started with (a snapshot recorded
        # with values redacted): continuing from it would run a different config.
        raise ConfigError(f"run {run_uuid}'s stored config does not reproduce the config it was started "
                          "with; resume it with that config given again (selfrefine resume RUN --config FILE)")
    if config_digest(cfg) != stored_digest and not allow_config_change:
        raise ConfigError(f"run {run_uuid} was started with a different configuration; resume "
                          "with its own config, or pass allow_config_change to recompute the "
                          "stages whose keys change")
    RunLease.check_free(store, run_uuid)
    return run_uuid, cfg, n_iterations
