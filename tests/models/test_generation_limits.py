"""Generation lengths: bounded in every config, and cut at run time to what the model's context
leaves after the prompt, with one warning."""

from __future__ import annotations

import json
import logging

import pytest
from selfrefine.errors import ConfigError
from selfrefine.models.generation import SamplingParams, TransformersBackend
from selfrefine.models.generation.base import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS
from selfrefine.models.loading import load_model

PROMPTS = ["The weather today is", "Human: Tell me a long story about a dog and a cat.<endofcontext>"]
CONTEXT = 40


@pytest.fixture
def short_context(tiny_dir):
    """The tiny model, told that its positions end at CONTEXT (its own copy: `tiny` is shared)."""
    model, tokenizer = load_model(tiny_dir, dtype="float32", device="cpu")
    model.config.max_position_embeddings = CONTEXT
    return model, tokenizer


def test_new_tokens_are_cut_to_the_context_left_by_the_longest_prompt(short_context, caplog):
    model, tokenizer = short_context
    longest = max(len(ids) for ids in tokenizer(PROMPTS, add_special_tokens=True)["input_ids"])
    assert longest < CONTEXT
    params = SamplingParams(temperature=0, max_new_tokens=MAX_NEW_TOKENS)
    with caplog.at_level(logging.WARNING, logger="selfrefine.models.generation"):
        out = TransformersBackend(model, tokenizer, batch_size=1).generate(PROMPTS, params)
    counts = [g.token_count for gens in out for g in gens]
    assert max(counts) <= CONTEXT - longest
    # The random tiny model rarely ends on its own: at least one answer runs to the cut.
    assert any(g.finish_reason == "length" and g.token_count == CONTEXT - longest for gens in out for g in gens)
    warnings = [r for r in caplog.records if "max_new_tokens" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert f"at most {CONTEXT - longest} new tokens" in warnings[0].getMessage()


def test_a_length_that_fits_is_left_alone(short_context, caplog):
    model, tokenizer = short_context
    with caplog.at_level(logging.WARNING, logger="selfrefine.models.generation"):
        out = TransformersBackend(model, tokenizer).generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=3))
    assert out[0][0].token_count <= 3 and not caplog.records


def test_a_prompt_that_fills_the_context_is_a_config_error(short_context):
    model, tokenizer = short_context
    with pytest.raises(ConfigError, match=f"fills the model's context of {CONTEXT} tokens.*max_prompt_tokens"):
        TransformersBackend(model, tokenizer).generate(["word " * CONTEXT], SamplingParams(max_new_tokens=4))


def test_sampling_params_are_bounded_and_finite():
    with pytest.raises(ConfigError, match=f"max_new_tokens must be in \\[1, {MAX_NEW_TOKENS}\\]"):
        SamplingParams(max_new_tokens=MAX_NEW_TOKENS + 1)
    with pytest.raises(ConfigError, match="temperature"):
        SamplingParams(temperature=float("nan"))


@pytest.mark.parametrize("dotted, value", [
    ("generate.max_new_tokens", MAX_NEW_TOKENS + 1),
    ("generate.max_prompt_tokens", MAX_PROMPT_TOKENS + 1),
    ("bootstrap_rationales.max_new_tokens", MAX_NEW_TOKENS + 1),
    ("evaluate_policy.responses.max_new_tokens", MAX_NEW_TOKENS + 1),
    ("evaluate.chain_of_thought", {"max_new_tokens": MAX_NEW_TOKENS + 1}),
])
def test_config_lengths_have_upper_bounds(dotted, value):
    from selfrefine.cli.run import build_config

    with pytest.raises(ConfigError, match=f"field '{dotted}[.a-z_]*': Input should be less than or equal to"):
        build_config("tiny", None, [f"{dotted}={json.dumps(value)}"])


def test_the_max_new_tokens_knob_is_bounded():
    from pydantic import ValidationError

    from selfrefine.flows.knobs import RunKnobs

    with pytest.raises(ValidationError, match="less than or equal to 32768"):
        RunKnobs(max_new_tokens=MAX_NEW_TOKENS + 1)
