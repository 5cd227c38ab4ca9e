"""Generation with transformers: length-sorted, left-padded batches under `torch.inference_mode()`."""

from __future__ import annotations

import logging
import time
from typing import Any

from selfrefine.models.generation.base import (
    Generation, GenerationBackendConfig, SamplingParams, context_length, fit_to_context, truncate_at_stop,
)
from selfrefine.progress import Progress

logger = logging.getLogger(__name__)


class TransformersBackend:
    """Generate with an already loaded transformers model (e.g. the judge itself, for CoT rationales).

    Prompts are sorted by token length so that each batch pads little, generated in batches of
    `batch_size` sequences with left padding, and returned in the caller's order.

    Determinism: each batch seeds its own RNG (`params.seed` + batch index) inside a forked RNG
    state, so a call with the same prompts and parameters always gives the same samples and leaves
    the global RNG untouched. Sampled outputs do depend on how prompts are grouped into batches;
    greedy outputs do not (up to float rounding).
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8,
                 log_every_seconds: float = 30.0):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.log_every_seconds = log_every_seconds

    @classmethod
    def from_pretrained(cls, model_name: str, config: GenerationBackendConfig | None = None
                        ) -> "TransformersBackend":
        from selfrefine.models.loading import load_model

        config = config or GenerationBackendConfig()
        model, tokenizer = load_model(model_name, dtype=config.dtype, device=config.device)
        return cls(model, tokenizer, batch_size=config.batch_size,
                   log_every_seconds=config.log_every_seconds)

    def close(self) -> None:
        """Drop the model so its memory can be freed before the next one is loaded."""
        self.model = None
        self.tokenizer = None

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Generation]]:
        import torch

        if self.model is None:
            raise RuntimeError("this backend was closed; create a new one")
        if not prompts:
            return []
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        # One limit for the whole call (from the longest prompt), so that how prompts are grouped
        # into batches never changes a greedy answer.
        params = fit_to_context(params, max(lengths), context_length(self.model.config))
        # Longest first: the most memory-hungry batch runs first, so an out-of-memory shows at once.
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        samples_per_prompt = 1 if params.greedy else params.n
        per_batch = max(1, self.batch_size // samples_per_prompt)
        results: list[list[Generation] | None] = [None] * len(prompts)
        started = time.perf_counter()
        tokens = 0
        progress = Progress("generation", len(prompts), "prompts", min_interval=self.log_every_seconds)
        for batch_index, start in enumerate(range(0, len(order), per_batch)):
            indices = order[start:start + per_batch]
            batch = self._generate_batch([prompts[i] for i in indices], params, batch_index)
            for i, gens in zip(indices, batch):
                results[i] = gens if not params.greedy else gens * params.n
                tokens += sum(g.token_count for g in gens)
            progress.update(len(indices))
        progress.close()
        logger.info("generated %d prompts: %.1f new tokens/s", len(prompts),
                    tokens / max(time.perf_counter() - started, 1e-9))
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[str], params: SamplingParams, batch_index: int
                        ) -> list[list[Generation]]:
        import torch

        model, tokenizer = self.model, self.tokenizer
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                           add_special_tokens=True).to(model.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens,
                                      pad_token_id=tokenizer.pad_token_id)
        if params.greedy:
            kwargs.update(do_sample=False)
        else:
            # top_k=0: no top-k cut (transformers would apply its default of 50), as in vLLM.
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=0, num_return_sequences=params.n)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed + batch_index)
            output = model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        per_prompt = 1 if params.greedy else params.n
        generations = [self._to_generation(row, params) for row in new_tokens]
        return [generations[i * per_prompt:(i + 1) * per_prompt] for i in range(len(prompts))]

    def _to_generation(self, row: list[int], params: SamplingParams) -> Generation:
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        count = len(row)
        for position, token in enumerate(row):
            if token in eos_ids:  # rows that finish early are padded after their end token
                count = position + 1
                break
        else:
            while count and row[count - 1] == pad and pad not in eos_ids:
                count -= 1
        text = self.tokenizer.decode(row[:count], skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        ended = stopped or (count > 0 and row[count - 1] in eos_ids) or count < params.max_new_tokens
        return Generation(text=text, token_count=count, finish_reason="stop" if ended else "length")
