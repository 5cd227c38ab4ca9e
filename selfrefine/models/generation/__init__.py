"""Generation backends behind one interface (`GenerationBackend.generate(prompts, params)`).

- `TransformersBackend`: any transformers causal LM, CPU or GPU, batched with left padding.
- `VLLMBackend`: vLLM, used when it is installed and a CUDA GPU is present.

`make_backend(config, model_name)` picks one ("auto" = vLLM when available, else transformers).
"""

from __future__ import annotations

import importlib.util
import logging

from selfrefine.errors import ConfigError
from selfrefine.models.generation.base import (
    Generation, GenerationBackend, GenerationBackendConfig, SamplingParams, truncate_at_stop,
)
from selfrefine.models.generation.hf import TransformersBackend

logger = logging.getLogger(__name__)

__all__ = ["Generation", "GenerationBackend", "GenerationBackendConfig", "SamplingParams",
           "TransformersBackend", "generate_once", "make_backend", "vllm_available", "truncate_at_stop"]


def vllm_available() -> bool:
    """vLLM is installed and a CUDA GPU is visible (checked without importing vllm)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def make_backend(config: GenerationBackendConfig | None, model_name: str) -> GenerationBackend:
    """The backend `config.backend` names, loaded with `model_name` (an alias, directory or hub id)."""
    config = config or GenerationBackendConfig()
    choice = config.backend
    if choice == "auto":
        choice = "vllm" if vllm_available() else "transformers"
        logger.info("generation backend 'auto' -> %s", choice)
    if choice == "vllm":
        if not vllm_available():
            raise ConfigError("generation backend 'vllm' needs the vllm package and a CUDA GPU, and this "
                              "machine lacks one of them; set backend to 'transformers' or 'auto'")
        from selfrefine.models.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model_name, config)
    return TransformersBackend.from_pretrained(model_name, config)


def generate_once(config: GenerationBackendConfig | None, model_name: str, prompts: list[str],
                  params: SamplingParams) -> tuple[list[list[Generation]], float]:
    """Load the backend, generate `params.n` samples for every prompt, release the backend (its
    memory, a vLLM engine's GPU) even on failure; the samples and the seconds generation took."""
    import time

    backend = make_backend(config, model_name)
    start = time.perf_counter()
    try:
        generations = backend.generate(prompts, params)
    finally:
        backend.close()
    return generations, time.perf_counter() - start
