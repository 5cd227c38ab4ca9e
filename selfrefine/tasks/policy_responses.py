"""`policy_responses` and `base_responses`: a policy's answers to the held-out policy prompts.

For every prompt of the `policy_prompts_*` inputs, one response to "A more {adj} response:
Assistant:" (the policy's answer, the one the win rates compare) and one to "A less {adj}
response: Assistant:" (for controllability), with fixed, recorded settings: greedy decoding by
default, or seeded sampling. The prompt format is the one the loop trains the policy on
(`policy_round`), for every policy including the base model, so the comparisons are paired by
prompt and format and differ only in the weights.

The same function runs under two stage names: `policy_responses` answers with the iteration's
policy (input `policy`), `base_responses` with the run's base policy (`model` in the config, pinned
by content). Both take the run's fixed evaluation seed, not the iteration's, so the stage key of
the base's responses is the same in every iteration and every run that uses the same base model,
prompts and settings: they are generated once and reused.

Inputs: `policy_prompts_*`, `policy` (or `model` in the config). Output: `responses` (JSONL, one
line per prompt and direction).
"""

from __future__ import annotations

import json
import logging

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.errors import ConfigError
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.models.generation.base import (
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    GenerationBackendConfig,
    SamplingParams,
)
from selfrefine.runtime.inputs import inputs_with_prefix, read_items, require, sample
from selfrefine.runtime.keys import model_fingerprint
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn
from selfrefine.tasks.generate import STOP

DIRECTIONS = ("more", "less")
log = logging.getLogger(__name__)


class ResponseSettings(BaseModel):
    """How a policy answers the held-out policy prompts: fixed so that every policy is compared on
    the same prompts under the same decoding."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_prompts: int | None = Field(None, ge=1, description=(
        "Answer at most this many policy prompts (a seeded sample, the same for every policy)."))
    max_new_tokens: int = Field(96, ge=1, le=MAX_NEW_TOKENS, description=(
        "Longest response, in tokens (cut at run time to what the model's context leaves)."))
    temperature: float = Field(0.0, ge=0, le=10, description=(
        "0 = greedy decoding (the default: one deterministic answer per prompt); above 0, seeded sampling."))
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with temperature > 0).")
    max_prompt_tokens: int = Field(512, ge=16, le=MAX_PROMPT_TOKENS,
                                   description="Longer prompts lose their oldest turns.")
    backend: GenerationBackendConfig = Field(default_factory=GenerationBackendConfig,
                                             description="Generation engine (transformers or vLLM).")


class RespondConfig(ResponseSettings):
    """The stage config: the response settings plus which model answers when no `policy` input is given."""

    model: str | None = Field(None, description=(
        "The model that answers when the stage has no `policy` input (the run's base policy): an "
        "alias, a model directory or a hub id."))
    model_fingerprint: str | None = Field(None, description=(
        "Filled in by `pin`: the content of `model`, so changed weights give new responses."))
    dimension_definitions: dict[str, str] = dimension_definitions_field()


def pin(config: RespondConfig) -> RespondConfig:
    if config.model is None:
        return config
    return config.model_copy(update={"model_fingerprint": model_fingerprint(config.model)})


def run(ctx: StageContext) -> StageReturn:
    from selfrefine.models.generation import generate_once
    from selfrefine.models.judge_info import as_policy
    from selfrefine.models.loading import load_tokenizer

    cfg: RespondConfig = ctx.config
    sources = inputs_with_prefix(ctx.inputs, "policy_prompts")
    if not sources:
        require(ctx.inputs, "policy_prompts", ctx.stage)  # raises: names the missing role
    prompts = sample(read_items(sources, "prompts", cfg.dimension_definitions), cfg.max_prompts, ctx.seed or 0)
    if "policy" in ctx.inputs:
        model = as_policy(str(ctx.inputs["policy"].path))
    elif cfg.model:
        model = cfg.model
    else:
        raise ConfigError(f"stage {ctx.stage} needs a `policy` input artifact or `model` in its config")
    tokenizer = load_tokenizer(model)
    requests, texts = [], []
    for item in prompts:
        dim = get_dimension(item.dimension, cfg.dimension_definitions)
        for direction in DIRECTIONS:
            fitted = P.fit_to_budget(lambda c, d=direction, dim=dim: P.controllable_prompt(c, dim, d),
                                     item.context, tokenizer, cfg.max_prompt_tokens)
            requests.append((item, direction))
            texts.append(fitted.text)
    params = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                            seed=ctx.seed or 0, stop=STOP)
    generations, seconds = generate_once(cfg.backend, model, texts, params)
    out = ctx.out_dir / "responses.jsonl"
    tokens = 0
    with open(out, "w", encoding="utf-8") as f:
        for (item, direction), (g,) in zip(requests, generations):
            tokens += g.token_count
            # An empty answer stays: it is the policy's answer, and the evaluator judges it.
            f.write(json.dumps({"prompt_id": item.id, "context": item.context, "dimension": item.dimension,
                                "source": item.source, "direction": direction, "text": g.text.strip(),
                                "tokens": g.token_count, "finish_reason": g.finish_reason},
                               ensure_ascii=False, sort_keys=True) + "\n")
    log.info("%s: %d responses to %d prompts in %.1fs (%.1f tokens/s)", ctx.stage, len(requests),
             len(prompts), seconds, tokens / max(seconds, 1e-9))
    metrics = [("prompts", float(len(prompts)), {}), ("responses", float(len(requests)), {}),
               ("tokens_per_second", tokens / max(seconds, 1e-9), {})]
    meta = {"rows": len(requests), "model": "policy input" if "policy" in ctx.inputs else cfg.model,
            "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens}
    return StageReturn({"responses": Output(out, "responses", meta)}, metrics)


# The iteration's policy and the run's base policy answer as two stages, so the base's answers keep one
# stage key across iterations and runs.
STAGE = Stage(name="policy_responses", code_version="1", config=RespondConfig, run=run, pin=pin, gpu=True)
BASE_STAGE = Stage(name="base_responses", code_version="1", config=RespondConfig, run=run, pin=pin, gpu=True)
