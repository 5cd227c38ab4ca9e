"""`generate`: controllable generation of more- and less-{dimension} responses.

For every prompt, `samples_per_direction` responses to "A more {adj} response: Assistant:" and as
many to "A less {adj} response: Assistant:", from the current policy (in the first iteration the
judge itself: Chain-of-Hindsight training makes it a controllable generator; of a judge per
dimension, the sub-judge its `judge.json` names as the policy). Inputs: `prompts_*`,
`policy`. Output: `candidates` (JSONL, one line per sample).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import PromptItem
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
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn

DIRECTIONS = ("more", "less")
# A controllable continuation ends where the training text would start its next part.
STOP = ("\n\nA less", "\n\nA more", "\n\nHuman:", "\nHuman:", P.END_OF_CONTEXT)
log = logging.getLogger(__name__)


class GenerateConfig(BaseModel):
    """How candidates are sampled."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts (seeded sample).")
    samples_per_direction: int = Field(2, ge=1, description="Samples per prompt for each of 'more' and 'less'.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(96, ge=1, le=MAX_NEW_TOKENS, description=(
        "Longest response, in tokens (cut at run time to what the model's context leaves)."))
    max_prompt_tokens: int = Field(512, ge=16, le=MAX_PROMPT_TOKENS,
                                   description="Longer prompts lose their oldest turns.")
    backend: GenerationBackendConfig = Field(default_factory=GenerationBackendConfig,
                                             description="Generation engine (transformers or vLLM).")
    dimension_definitions: dict[str, str] = dimension_definitions_field()


def generation_requests(prompts: Sequence[PromptItem], extra: Mapping[str, str] | None = None
                        ) -> list[tuple[PromptItem, str]]:
    """(prompt item, direction) for every prompt and both directions, in a fixed order."""
    for item in prompts:
        get_dimension(item.dimension, extra)  # unknown dimensions fail before any generation
    return [(item, direction) for item in prompts for direction in DIRECTIONS]


def candidate_rows(requests: Sequence[tuple[PromptItem, str]], generations) -> list[dict]:
    rows = []
    for (item, direction), samples in zip(requests, generations):
        for index, g in enumerate(samples):
            text = g.text.strip()
            if not text:
                continue  # an empty sample is no candidate
            rows.append({"prompt_id": item.id, "context": item.context, "dimension": item.dimension,
                         "source": item.source, "direction": direction, "sample": index, "text": text,
                         "tokens": g.token_count, "finish_reason": g.finish_reason})
    return rows


def run(ctx: StageContext) -> StageReturn:
    from selfrefine.models.generation import generate_once
    from selfrefine.models.judge_info import as_policy
    from selfrefine.models.loading import load_tokenizer

    cfg: GenerateConfig = ctx.config
    seed = ctx.seed or 0
    sources = inputs_with_prefix(ctx.inputs, "prompts")
    if not sources:
        require(ctx.inputs, "prompts", ctx.stage)  # raises: names the missing role
    prompts = sample(read_items(sources, "prompts", cfg.dimension_definitions), cfg.max_prompts, seed)
    policy = as_policy(str(require(ctx.inputs, "policy", ctx.stage).path))
    requests = generation_requests(prompts, cfg.dimension_definitions)
    tokenizer = load_tokenizer(policy)
    texts, turns_cut = [], 0
    for item, direction in requests:
        dim = get_dimension(item.dimension, cfg.dimension_definitions)
        r = P.fit_to_budget(lambda c, d=direction, dim=dim: P.controllable_prompt(c, dim, d),
                            item.context, tokenizer, cfg.max_prompt_tokens)
        texts.append(r.text)
        turns_cut += r.turns_cut
    params = SamplingParams(n=cfg.samples_per_direction, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, seed=seed, stop=STOP)
    generations, seconds = generate_once(cfg.backend, policy, texts, params)
    rows = candidate_rows(requests, generations)
    out = ctx.out_dir / "candidates.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    tokens = sum(r["tokens"] for r in rows)
    log.info("generate: %d candidates for %d prompts in %.1fs (%.1f tokens/s)",
             len(rows), len(prompts), seconds, tokens / max(seconds, 1e-9))
    metrics = [("candidates", float(len(rows)), {}), ("prompts", float(len(prompts)), {}),
               ("tokens_per_second", tokens / max(seconds, 1e-9), {}),
               ("empty_samples", float(len(requests) * cfg.samples_per_direction - len(rows)), {}),
               ("turns_cut", float(turns_cut), {})]
    return StageReturn({"candidates": Output(out, "candidates", {"rows": len(rows)})}, metrics)


STAGE = Stage(name="generate", code_version="1", config=GenerateConfig, run=run, gpu=True)
