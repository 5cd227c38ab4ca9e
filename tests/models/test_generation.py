"""Generation backends: transformers batching, determinism, stop strings, backend selection."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from selfrefine.errors import ConfigError
from selfrefine.models.generation import (
    GenerationBackend, GenerationBackendConfig, SamplingParams, TransformersBackend, make_backend,
    truncate_at_stop, vllm_available,
)

PROMPTS = ["Human: Hi<endofcontext>\n\nA more helpful response: Assistant:",
           "Human: Tell me a long story about a dog, a cat and a very patient mouse.<endofcontext>",
           "x",
           "The weather today is"]


def test_greedy_batched_equals_unbatched(tiny):
    params = SamplingParams(temperature=0, max_new_tokens=12)
    batched = TransformersBackend(*tiny, batch_size=4).generate(PROMPTS, params)
    single = [TransformersBackend(*tiny, batch_size=1).generate([p], params)[0] for p in PROMPTS]
    assert batched == single
    for gens in batched:
        assert len(gens) == 1 and 1 <= gens[0].token_count <= 12


def test_greedy_n_samples_are_identical_copies(tiny):
    out = TransformersBackend(*tiny).generate(PROMPTS[:2], SamplingParams(temperature=0, n=3, max_new_tokens=6))
    assert [len(g) for g in out] == [3, 3]
    assert all(g[0] == g[1] == g[2] for g in out)


def test_sampling_is_deterministic_under_a_seed(tiny):
    backend = TransformersBackend(*tiny, batch_size=4)
    params = SamplingParams(temperature=1.0, top_p=0.95, n=3, max_new_tokens=8, seed=7)
    first = backend.generate(PROMPTS, params)
    assert backend.generate(PROMPTS, params) == first
    assert [len(g) for g in first] == [3] * len(PROMPTS)
    # The samples of one prompt differ from one another, and another seed changes them.
    assert len({g.text for g in first[0]}) > 1
    other = backend.generate(PROMPTS, SamplingParams(temperature=1.0, top_p=0.95, n=3, max_new_tokens=8, seed=8))
    assert other != first


def test_sampling_leaves_global_rng_alone(tiny):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TransformersBackend(*tiny).generate(PROMPTS[:1], SamplingParams(temperature=1.0, max_new_tokens=4, seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_stop_strings_cut_the_text(tiny):
    backend = TransformersBackend(*tiny)
    free = backend.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=16))[0][0]
    words = free.text.split()
    assert len(words) >= 3
    stop = words[2]
    stopped = backend.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=16, stop=(stop,)))[0][0]
    assert stopped.text == free.text[:free.text.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.token_count <= free.token_count
    assert free.finish_reason == "length" and free.token_count == 16


def test_progress_is_logged(tiny, caplog):
    with caplog.at_level(logging.INFO, logger="selfrefine"):
        TransformersBackend(*tiny, batch_size=2, log_every_seconds=0).generate(
            PROMPTS, SamplingParams(temperature=0, max_new_tokens=2))
    lines = [r.getMessage() for r in caplog.records if r.name == "selfrefine.progress"]
    assert [line.split(",")[0] for line in lines] == ["generation: 2/4 prompts (50%)", "generation: 4/4 prompts (100%)"]
    assert lines[-1].endswith("prompts/s, done")


def test_empty_prompt_list(tiny):
    assert TransformersBackend(*tiny).generate([], SamplingParams()) == []


def test_truncate_at_stop_takes_earliest():
    assert truncate_at_stop("abc\nHuman: x\n\nY", ("\n\n", "\nHuman:")) == ("abc", True)
    assert truncate_at_stop("abc", ("z",)) == ("abc", False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be"), (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(stop="\n"), "stop"),
])
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SamplingParams(**kwargs)


def test_backend_config_validation():
    with pytest.raises(ValidationError):
        GenerationBackendConfig(backend="tgi")
    with pytest.raises(ValidationError):
        GenerationBackendConfig(gpu_memory_utilization=1.5)
    with pytest.raises(ValidationError):
        GenerationBackendConfig(batchsize=4)  # typo: unknown fields are refused


def test_make_backend_auto_uses_transformers_without_gpu(tiny_dir):
    if vllm_available():
        pytest.skip("vLLM and a GPU are present here")
    backend = make_backend(GenerationBackendConfig(dtype="float32", batch_size=2), tiny_dir)
    assert isinstance(backend, TransformersBackend)
    assert isinstance(backend, GenerationBackend)
    assert backend.batch_size == 2
    out = backend.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=3))
    assert len(out) == 1 and len(out[0]) == 1
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate(PROMPTS[:1], SamplingParams())


def test_explicit_vllm_without_gpu_says_how_to_fix(tiny_dir):
    if vllm_available():
        pytest.skip("vLLM and a GPU are present here")
    with pytest.raises(ConfigError, match="'transformers'"):
        make_backend(GenerationBackendConfig(backend="vllm"), tiny_dir)


@pytest.mark.gpu
def test_vllm_backend_generates_and_closes(tiny_dir):
    if not vllm_available():
        pytest.skip("needs vllm and a CUDA GPU")
    backend = make_backend(GenerationBackendConfig(backend="vllm", gpu_memory_utilization=0.3), tiny_dir)
    params = SamplingParams(temperature=1.0, n=2, max_new_tokens=8, seed=0)
    first = backend.generate(PROMPTS, params)
    assert [len(g) for g in first] == [2] * len(PROMPTS)
    assert backend.generate(PROMPTS, params) == first
    backend.close()
