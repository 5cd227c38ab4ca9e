"""GPU smoke run: one self-refine iteration with the `gpu` preset's code paths on a small model, then
generation throughput of vLLM against transformers on the same model and prompts.

    python bench/gpu_smoke.py [--model HuggingFaceTB/SmolLM2-360M-Instruct] [--prompts 64] [--max-new-tokens 128]

The iteration is the `gpu` preset (vLLM generation, DeepSpeed ZeRO-3 training when `deepspeed` is
installed, flash-attention 2 when `flash-attn` is) with its model, evaluator and data cut down to
minutes, every stage inline in this process, in a throwaway SELFREFINE_HOME unless one is set.
Then the same prompts are answered by each backend (`generate_once`, sampling at temperature 0.8);
tokens/s counts generated tokens over generation time, model loading excluded.

Last line: RESULT vllm_tokens_per_s=… hf_tokens_per_s=… speedup=…
On a machine without a CUDA GPU (or without vLLM) nothing runs: the only line printed is
`RESULT skipped=no_gpu …` (or `RESULT skipped=no_vllm …`) saying why, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = ("How do I keep basil alive indoors?", "Explain what a hash table is to a new programmer.",
             "Write a short note thanking a colleague for their help.", "What should I pack for a rainy hike?",
             "How does compound interest work?", "Give me three ideas for a quick vegetarian dinner.",
             "Why is the sky blue?", "How can I get better at remembering names?")


def skip_reason() -> str | None:
    """Why this machine cannot run the smoke test, as the RESULT line's fields; None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "skipped=no_gpu reason=torch.cuda.is_available()_is_false"
    if importlib.util.find_spec("vllm") is None:
        return "skipped=no_vllm reason=vllm_not_installed_(pip_install_selfrefine[gpu])"
    return None


def smoke_config(model: str):
    """The `gpu` preset on `model`, cut to one quick iteration with every stage inline."""
    from selfrefine.flows.config import load_preset, parse_config
    from selfrefine.models.training.deepspeed import deepspeed_installed

    raw = load_preset("gpu").model_dump(mode="json")
    raw["placement"] = {}
    raw["data"] = {"seed_pairs": [{"kind": "demo", "limit": 16}], "prompts": [{"kind": "demo", "limit": 8}],
                   "heldout_pairs": [{"kind": "demo", "skip": 40, "limit": 16}],
                   "bestofn": [{"kind": "demo", "limit": 4}],
                   "policy_prompts": [{"kind": "demo", "skip": 16, "limit": 4}]}
    raw["train_judge"]["base_model"] = model
    raw["evaluate_policy"]["evaluator"] = model  # the preset's 8B reward model is not needed to smoke-test
    ds = deepspeed_installed()
    for recipe in (raw["train_judge"]["recipe"], raw["train_judge"]["star_dpo_recipe"],
                   raw["policy_round"]["dpo"], raw["policy_round"]["sft"]):
        recipe.update(max_steps=2, per_device_batch_size=2, gradient_accumulation_steps=1, max_length=1024)
        if not ds:
            recipe["deepspeed"] = None
    for stage in ("generate", "evaluate_policy"):
        section = raw[stage] if stage == "generate" else raw[stage]["responses"]
        section.update(max_new_tokens=64)
        section["backend"].update(gpu_memory_utilization=0.4, max_model_len=2048)
    raw["bootstrap_rationales"].update(max_pairs=8, max_new_tokens=64)
    raw["score_filter"].update(top_k=16, n_clusters=4, per_cluster=4)
    return parse_config(raw, "bench/gpu_smoke.py"), ds


def tokens_per_second(backend: str, model: str, prompts: list[str], max_new_tokens: int) -> float:
    from selfrefine.models.generation import GenerationBackendConfig, SamplingParams, generate_once

    config = GenerationBackendConfig(backend=backend, batch_size=16, gpu_memory_utilization=0.4, max_model_len=2048)
    params = SamplingParams(n=1, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    generations, seconds = generate_once(config, model, prompts, params)
    tokens = sum(g.token_count for gens in generations for g in gens)
    print(f"{backend}: {tokens} tokens in {seconds:.1f}s")
    return tokens / max(seconds, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-360M-Instruct", help="hub id or directory")
    parser.add_argument("--prompts", type=int, default=64, help="prompts each backend answers")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    reason = skip_reason()
    if reason is not None:
        print(f"RESULT {reason}")
        return 0

    from bench.harness import start_logging

    start_logging("prefect")
    os.environ.setdefault("SELFREFINE_HOME", tempfile.mkdtemp(prefix="selfrefine-gpu-smoke-"))
    from selfrefine.flows.self_refine import self_refine

    cfg, with_deepspeed = smoke_config(args.model)
    print(f"one iteration of the gpu preset on {args.model}: vLLM generation, DeepSpeed ZeRO-3 "
          f"{'on' if with_deepspeed else 'off (not installed)'}, flash-attention 2 "
          f"{'on' if importlib.util.find_spec('flash_attn') else 'off (not installed)'}; store in {os.environ['SELFREFINE_HOME']}")
    run_id = self_refine(preset="gpu", n_iterations=1, config=cfg)
    print(f"run {run_id} completed (see `selfrefine show {run_id}`)")

    prompts = [f"Human: {QUESTIONS[i % len(QUESTIONS)]}\n\nAssistant:" for i in range(args.prompts)]
    vllm_rate = tokens_per_second("vllm", args.model, prompts, args.max_new_tokens)
    hf_rate = tokens_per_second("transformers", args.model, prompts, args.max_new_tokens)
    print(f"RESULT vllm_tokens_per_s={vllm_rate:.1f} hf_tokens_per_s={hf_rate:.1f} "
          f"speedup={vllm_rate / max(hf_rate, 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
