"""Generation with vLLM on CUDA GPUs. `vllm` is imported only when this backend is constructed."""

from __future__ import annotations

import gc
import logging
import time

from selfrefine.errors import ConfigError
from selfrefine.models.generation.base import Generation, GenerationBackendConfig, SamplingParams

logger = logging.getLogger(__name__)


class VLLMBackend:
    """A vLLM engine over one model. Call `close()` before loading another model in the process
    (e.g. the next iteration's checkpoint): vLLM keeps its GPU memory until the engine and its
    distributed state are torn down.

    Each request carries its own seed, so samples do not depend on how vLLM batches them.
    """

    def __init__(self, model_name: str, config: GenerationBackendConfig | None = None):
        config = config or GenerationBackendConfig(backend="vllm")
        try:
            import vllm
        except ImportError as exc:
            raise ConfigError("generation backend 'vllm' needs the vllm package and a CUDA GPU; install "
                              "the gpu extra (`pip install selfrefine[gpu]`) or set backend to "
                              "'transformers'") from exc
        from selfrefine.models.loading import resolve_model

        self._vllm = vllm
        self.config = config
        engine_args = dict(model=resolve_model(model_name), tensor_parallel_size=config.tensor_parallel_size,
                           gpu_memory_utilization=config.gpu_memory_utilization,
                           dtype="auto" if config.dtype == "auto" else config.dtype,
                           load_format="safetensors")  # never unpickle .bin/.pt weights
        if config.max_model_len is not None:
            engine_args["max_model_len"] = config.max_model_len
        self.llm = vllm.LLM(**engine_args)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Generation]]:
        if self.llm is None:
            raise RuntimeError("this backend was closed; create a new one")
        if not prompts:
            return []
        # Greedy samples are identical: ask for one and copy it (some vLLM versions refuse n > 1
        # with temperature 0), as the transformers backend does.
        n = 1 if params.greedy else params.n
        sampling = self._vllm.SamplingParams(
            n=n, temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_new_tokens, seed=params.seed, stop=list(params.stop) or None)
        started = time.perf_counter()
        outputs = self.llm.generate(list(prompts), sampling, use_tqdm=False)
        results = [[Generation(text=o.text, token_count=len(o.token_ids),
                               finish_reason="length" if o.finish_reason == "length" else "stop")
                    for o in request.outputs] * (params.n // n) for request in outputs]
        elapsed = max(time.perf_counter() - started, 1e-9)
        tokens = sum(g.token_count for gens in results for g in gens)
        logger.info("vLLM generated %d prompts: %.2f prompts/s, %.1f new tokens/s",
                    len(prompts), len(prompts) / elapsed, tokens / elapsed)
        return results

    def close(self) -> None:
        """Tear the engine down and free its GPU memory."""
        if self.llm is None:
            return
        llm, self.llm = self.llm, None
        del llm
        try:  # the module moved between vLLM releases; either location frees the process group
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment, destroy_model_parallel,
            )
            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as exc:  # noqa: BLE001 - best effort: a failed teardown must not hide results
            logger.warning("vLLM distributed teardown failed: %s", exc)
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
