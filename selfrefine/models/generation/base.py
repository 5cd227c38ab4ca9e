"""The generation interface shared by every backend: sampling parameters in, n samples per prompt out."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.errors import ConfigError

logger = logging.getLogger(__name__)

# Upper bounds of the length fields in configs. No model selfrefine targets writes more than 32k
# tokens in one answer or reads a prompt past 128k; a larger value is a typo that would otherwise
# allocate a huge cache. At run time the new tokens are further clamped to the model's context.
MAX_NEW_TOKENS = 32768
MAX_PROMPT_TOKENS = 131072


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `temperature == 0` means greedy decoding (then the n samples are identical).

    `seed` makes a call deterministic: the same prompts, parameters and model give the same
    samples. `stop` strings end a sample early; the returned text excludes them.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"SamplingParams.n must be >= 1, got {self.n}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ConfigError(f"SamplingParams.max_new_tokens must be in [1, {MAX_NEW_TOKENS}], "
                              f"got {self.max_new_tokens}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError("SamplingParams.stop must be a tuple of non-empty strings, "
                              f"got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Generation:
    """One sample: its text (stop strings and special tokens removed), the number of tokens the
    model produced for it (including a final end-of-sequence token), and why it ended."""

    text: str
    token_count: int
    finish_reason: Literal["stop", "length"]


@runtime_checkable
class GenerationBackend(Protocol):
    """Anything that turns prompts into `params.n` samples each, in prompt order."""

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Generation]]: ...

    def close(self) -> None: ...


class GenerationBackendConfig(BaseModel):
    """Which backend generates, and its engine settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="'auto' uses vLLM when it is installed and a CUDA GPU is present, "
                            "else transformers.")
    batch_size: int = Field(8, ge=1, description="transformers: sequences generated together "
                                                 "(prompts per batch = batch_size // n, at least 1).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = bfloat16 where the hardware supports it natively.")
    device: str = Field("auto", description="transformers: 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs to shard the model over.")
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vLLM: fraction of GPU memory the engine may take.")
    max_model_len: int | None = Field(
        None, ge=16, description="vLLM: context length to reserve KV cache for (default: the model's).")
    log_every_seconds: float = Field(
        30.0, gt=0, description="Log progress (prompts/s, tokens/s) at most this often during long calls.")


def context_length(model_config: Any) -> int | None:
    """The longest sequence (prompt + generation) the model's positions cover, if its config says."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_to_context(params: SamplingParams, longest_prompt: int, context: int | None) -> SamplingParams:
    """`params` with `max_new_tokens` cut so the longest prompt plus its answer fits `context`
    (one warning when it is cut); a prompt that fills the context alone is a `ConfigError`."""
    if context is None or longest_prompt + params.max_new_tokens <= context:
        return params
    room = context - longest_prompt
    if room < 1:
        raise ConfigError(f"a prompt of {longest_prompt} tokens fills the model's context of {context} "
                          "tokens, leaving no room to answer; lower max_prompt_tokens below "
                          f"{context}")
    logger.warning("max_new_tokens=%d does not fit the model's context of %d tokens after a prompt "
                   "of %d tokens; generating at most %d new tokens", params.max_new_tokens, context,
                   longest_prompt, room)
    return replace(params, max_new_tokens=room)


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; return (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
