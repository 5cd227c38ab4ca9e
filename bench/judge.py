"""Judge scoring and generation speed on the packaged SmolLM2-135M model, measured in one run.

Compares the judge's absolute scoring (one forward pass per prompt, `logits_to_keep=1`, batched,
length-sorted, left-padded) with a straightforward implementation of the seed method: generate up
to 8 new tokens with their scores, parse Yes/No from the text, score = +-1 + min token log-prob —
once per example (batch 1) and once batched. Then generation throughput batched vs one prompt at
a time, and the peak memory of scoring (resident set size of a separate process that loads the
model and scores, so the figure is not inflated by the rest of this benchmark).

Prompts are absolute-quality prompts built from /work/shared/data/hh-rlhf-harmless-dev.jsonl.gz,
chosen to be ~300 tokens long.

    .venv/bin/python bench/judge.py            # full run, a few minutes on 2 cores
    .venv/bin/python bench/judge.py --quick    # smaller sizes, for a smoke test

Last line: RESULT scoring_speedup=<x> generation_speedup=<y> prompts_per_s=<z> gflops=<g> scoring_peak_gb=<m>
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-dev.jsonl.gz"
ANSWER_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def load_items(path: Path, tokenizer, n: int, target_tokens: int):
    """Absolute items (chosen and rejected responses alternately) whose prompts are closest to
    `target_tokens` tokens long."""
    from selfrefine.data.hh import hh_pair
    from selfrefine.models.judge_types import AbsoluteItem
    from selfrefine.models.prompts import absolute_prompt

    candidates = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            row = json.loads(line)
            try:
                context, chosen, rejected = hh_pair(row["chosen"], row["rejected"])
            except Exception:  # noqa: BLE001 - a malformed pair is just not used for timing
                continue
            item = AbsoluteItem(context, chosen if index % 2 == 0 else rejected, "harmless")
            length = len(tokenizer(absolute_prompt(item.context, item.response, item.dimension))["input_ids"])
            candidates.append((abs(length - target_tokens), length, item))
    candidates.sort(key=lambda c: c[0])
    chosen = candidates[:n]
    return [c[2] for c in chosen], sum(c[1] for c in chosen) / max(len(chosen), 1)


def generate_and_parse(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int = 8):
    """The seed method: greedy-generate a few tokens with scores, parse Yes/No, score = +-1 + min
    log-prob of the generated tokens. Returns (answer or None, score or None) per prompt."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        inputs = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out.sequences[:, inputs["input_ids"].shape[1]:]
        logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1)
        token_lp = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(idx):
            ids = new[row].tolist()
            keep = len(ids)
            if tokenizer.eos_token_id in ids:
                keep = ids.index(tokenizer.eos_token_id) + 1
            text = tokenizer.decode(ids[:keep], skip_special_tokens=True)
            match = ANSWER_RE.search(text)
            if match is None:
                results[i] = (None, None)
                continue
            answer = match.group(1).capitalize()
            results[i] = (answer, (1.0 if answer == "Yes" else -1.0) + token_lp[row, :keep].min().item())
    return results


CPU_SECONDS = {}


def timed(fn, *args, **kwargs):
    """Wall-clock seconds of one call; its process CPU seconds go to CPU_SECONDS[fn name]."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    CPU_SECONDS[getattr(fn, "__name__", str(fn))] = time.process_time() - cpu
    return value, time.perf_counter() - start


def memory_probe(args) -> None:
    """Run in a child process: load, score, print peak RSS (GB) before and after scoring."""
    from selfrefine.models.judge import Judge
    from selfrefine.models.loading import load_model

    model, tokenizer = load_model("packaged", dtype=args.dtype)
    items, _ = load_items(DATA, tokenizer, args.n_score, args.target_tokens)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    Judge(model, tokenizer, batch_size=args.batch_size).score_absolute(items)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # ru_maxrss is KiB on Linux
    print(json.dumps({"loaded_gb": loaded, "peak_gb": peak}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-score", type=int, default=160, help="prompts for forward-pass scoring")
    parser.add_argument("--n-generate-single", type=int, default=32, help="prompts for batch-1 generate-and-parse")
    parser.add_argument("--n-generate-batched", type=int, default=96, help="prompts for batched generate-and-parse")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--target-tokens", type=int, default=300, help="prompt length to select")
    parser.add_argument("--gen-prompts", type=int, default=16, help="prompts for the generation throughput test")
    parser.add_argument("--gen-new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--skip-memory", action="store_true", help="do not run the memory subprocess")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_score, args.n_generate_single, args.n_generate_batched = 32, 8, 32
        args.gen_prompts, args.gen_new_tokens = 8, 16
    if not DATA.is_file():
        print(f"SKIP: benchmark data not found at {DATA} (needs ../shared/data/hh-rlhf-harmless-dev.jsonl.gz)")
        return 0
    if args.memory_probe:
        memory_probe(args)
        return 0

    import torch

    from selfrefine.models.generation import SamplingParams, TransformersBackend
    from selfrefine.models.judge import Judge
    from selfrefine.models.loading import load_model
    from selfrefine.models.prompts import absolute_prompt, controllable_prompt

    (model, tokenizer), load_s = timed(load_model, "packaged", dtype=args.dtype)
    print(f"model: packaged SmolLM2-135M, dtype {model.dtype}, {torch.get_num_threads()} threads, "
          f"loaded in {load_s:.1f}s; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"(other work on the machine slows every figure below)")
    n_items = max(args.n_score, args.n_generate_single, args.n_generate_batched)
    items, mean_tokens = load_items(DATA, tokenizer, n_items, args.target_tokens)
    prompts = [absolute_prompt(i.context, i.response, i.dimension) for i in items]
    print(f"prompts: {len(items)} absolute prompts from {DATA.name}, mean {mean_tokens:.0f} tokens")

    judge = Judge(model, tokenizer, batch_size=args.batch_size, max_length=1024)
    judge.score_absolute(items[:4])                                       # warm-up
    generate_and_parse(model, tokenizer, prompts[:2], batch_size=1)       # warm-up

    scores, score_s = timed(judge.score_absolute, items[:args.n_score])
    forward_rate = args.n_score / score_s
    single, single_s = timed(generate_and_parse, model, tokenizer, prompts[:args.n_generate_single], 1)
    single_rate = args.n_generate_single / single_s
    batched, batched_s = timed(generate_and_parse, model, tokenizer, prompts[:args.n_generate_batched],
                               args.batch_size)
    batched_rate = args.n_generate_batched / batched_s
    parsed = [a for a, _ in single if a is not None]
    agree = sum(a == s.answer for (a, _), s in zip(single, scores) if a is not None)
    score_cpu = CPU_SECONDS["score_absolute"]
    print(f"scoring, one forward pass (batch {args.batch_size}): {forward_rate:.2f} prompts/s "
          f"({args.n_score} prompts, {score_s:.1f}s wall, {score_cpu:.1f}s CPU = "
          f"{args.n_score / score_cpu:.2f} prompts per CPU-second)")
    print(f"generate-and-parse, batch 1, <=8 new tokens: {single_rate:.2f} prompts/s "
          f"({args.n_generate_single} prompts; Yes/No parsed in {len(parsed)}, "
          f"agreeing with the forward-pass answer in {agree})")
    print(f"generate-and-parse, batch {args.batch_size}: {batched_rate:.2f} prompts/s "
          f"({args.n_generate_batched} prompts)")
    scoring_speedup = forward_rate / single_rate
    print(f"  speedup vs per-example generate: {scoring_speedup:.2f}x (target >= 3x); "
          f"vs batched generate: {forward_rate / batched_rate:.2f}x")

    embedding = model.get_input_embeddings().weight.numel()
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    tokens_per_s = forward_rate * mean_tokens
    gflops = 2 * non_embedding * tokens_per_s / 1e9
    print(f"  {tokens_per_s:.0f} prompt tokens/s x 2 x {non_embedding / 1e6:.1f}M non-embedding "
          f"parameters = {gflops:.0f} GFLOP/s; prompts/s target >= 5")

    contexts = [i.context for i in items[:args.gen_prompts]]
    gen_prompts = [controllable_prompt(c, "harmless", "more") for c in contexts]
    params = SamplingParams(temperature=0, max_new_tokens=args.gen_new_tokens)
    one = TransformersBackend(model, tokenizer, batch_size=1)
    many = TransformersBackend(model, tokenizer, batch_size=args.batch_size)
    one.generate(gen_prompts[:1], SamplingParams(temperature=0, max_new_tokens=2))  # warm-up
    out_one, one_s = timed(one.generate, gen_prompts, params)
    out_many, many_s = timed(many.generate, gen_prompts, params)
    one_tps = sum(g[0].token_count for g in out_one) / one_s
    many_tps = sum(g[0].token_count for g in out_many) / many_s
    same = sum(a[0].text == b[0].text for a, b in zip(out_one, out_many))
    generation_speedup = many_tps / one_tps
    print(f"generation, {args.gen_prompts} prompts x <= {args.gen_new_tokens} new tokens, greedy: "
          f"one at a time {one_tps:.1f} tok/s, batch {args.batch_size} {many_tps:.1f} tok/s -> "
          f"{generation_speedup:.2f}x (target >= 3x); identical texts {same}/{len(gen_prompts)}")

    peak_gb = float("nan")
    if not args.skip_memory:
        del model, judge, one, many
        probe = [sys.executable, __file__, "--memory-probe", "--n-score", str(args.n_score),
                 "--batch-size", str(args.batch_size), "--target-tokens", str(args.target_tokens),
                 "--dtype", args.dtype]
        result = subprocess.run(probe, capture_output=True, text=True, check=True)
        memory = json.loads(result.stdout.strip().splitlines()[-1])
        peak_gb = memory["peak_gb"]
        print(f"scoring peak memory (max RSS of a process that loads the model and scores "
              f"{args.n_score} prompts): {peak_gb:.2f} GB (after loading: {memory['loaded_gb']:.2f} GB); "
              f"target < 3 GB")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"RESULT scoring_speedup={scoring_speedup:.2f} generation_speedup={generation_speedup:.2f} "
          f"prompts_per_s={forward_rate:.2f} gflops={gflops:.0f} scoring_peak_gb={peak_gb:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
