"""Do the two dimensions' seed pairs help or hurt each other in one reward head?

The `quality` loop trains one Bradley–Terry reward head on hh-rlhf harmless pairs and AlpacaEval
helpful pairs together (the dimension is named in the head's prompt). More helpful pairs should
raise best-of-11; this measures what they cost the harmless judgement. Three heads, each from the
packaged model with the `quality` preset's reward recipe (last 8 blocks, lr 5e-5, one epoch, 8 pairs
per step, cosine), trained on:

- harmless: the first 800 valid hh-rlhf harmless pairs;
- helpful: AlpacaEval pairs from the first 200 prompts, up to --pairs-per-prompt per prompt, built as
  bench/quality.py builds them (a candidate preferred over the reference against one that is not,
  widest preference gap first);
- both: the two sets together, as the loop's iteration 1 trains (without its held-back tenth).

Each head is measured through `tasks.evaluate.evaluate_judge` on the held-out hh-rlhf harmless pairs
(pairwise accuracy) and on best-of-11 over the remaining 203 AlpacaEval prompts (win rate), both
scored at 768 tokens as the preset's evaluate stage does. Data is read in place from ../shared/data.

    python bench/dimension_mix.py [--pairs-per-prompt 10] [--sets harmless,helpful,both]

About 40 minutes on two cores with AMX at the default 10 pairs per prompt. Full runs write this
script's section of bench/RESULTS.md; --smoke, --limit-train and --n-eval runs leave it alone.

--reward-input-format chat_template trains and reads the heads in the model's chat template.
--margin-per-gap M trains with a Bradley–Terry margin of M times each helpful pair's preference gap
(the harmless pairs are not graded: no margin). --grm-alpha A adds GRM's SFT regulariser at weight A.
--odin trains with ODIN's length head beside the reward head (dropped when the judge is saved).

Last line: RESULT harmless_acc=… harmless_bon=… helpful_acc=… helpful_bon=… both_acc=… both_bon=…
helpful_bon_se=… longest_bon=… margin=… margin_se=… length_spearman=… harmless_acc_se=… (the helpful
head's best-of-11 against the longest-response rule, and the harmless head's accuracy)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from judges import train_reward  # noqa: E402
from quality import ALPACA, HH, bench_data, read_alpaca  # noqa: E402
from harness import command_line, missing_data, reading_label, start_logging  # noqa: E402
from results_file import write_section  # noqa: E402

SETS = ("harmless", "helpful", "both")
SECTION = "bench/dimension_mix.py"
N_PROMPTS = 200


def load_data(tmp: Path, per_prompt: int, limit_train: int | None, n_eval: int | None):
    """Training pairs by set, the held-out harmless pairs and the best-of-11 items: the sources
    bench/quality.py gives the loop, loaded as its stages load them."""
    from selfrefine.data import DataSource, load_bestofn, load_pairs

    data, _ = bench_data(tmp, read_alpaca(), N_PROMPTS, per_prompt, policy_rows=None, n_evaluator=0)
    harmless_source, helpful_source = (DataSource(**source) for source in data["seed_pairs"])
    harmless = load_pairs(harmless_source)[:limit_train]
    helpful = load_pairs(helpful_source)[:limit_train]
    held_out = load_pairs(DataSource(**data["heldout_pairs"][0]))[:n_eval]
    bestofn = load_bestofn(DataSource(**data["bestofn"][0]))[:n_eval]
    return {"harmless": harmless, "helpful": helpful, "both": harmless + helpful}, held_out, bestofn


def measure(path: Path, held_out, bestofn) -> dict:
    from selfrefine.models.judge_kind import load_judge
    from selfrefine.scoring.judge_eval import evaluate_judge

    start = time.perf_counter()
    result = evaluate_judge(load_judge(str(path), max_length=768, batch_size=16), held_out, bestofn)
    bon = result["bestofn"]
    return {"accuracy": result["pairwise"]["accuracy"], "accuracy_se": result["pairwise"].get("accuracy_se"),
            "bon": bon["win_rate"], "bon_se": bon["win_rate_se"], "random": bon["random_win_rate"],
            "oracle": bon["oracle_win_rate"], "longest": bon["longest_win_rate"],
            "margin": bon["margin_over_longest"], "margin_se": bon["margin_over_longest_se"],
            "length_spearman": bon["length_spearman"], "eval_seconds": time.perf_counter() - start}


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| trained on | pairs | harmless held-out accuracy | best-of-11 win rate | margin over the longest rule "
             "| length Spearman | train min | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['pairs']} | {fmt_se(r['accuracy'], r['accuracy_se'])} | "
                     f"{fmt_se(r['bon'], r['bon_se'])} | {r['margin']:+.3f} ± {r['margin_se']:.3f} | "
                     f"{r['length_spearman']:.3f} | {r['train_seconds'] / 60:.1f} | {r['note']} |")
    return lines


def fmt_se(value: float, se: float | None) -> str:
    return f"{value:.3f} ± {se:.3f}" if se is not None else f"{value:.3f}"


def result_line(rows: dict[str, dict]) -> str:
    """Per set its accuracy and best-of-11; then, when both single-dimension heads ran, the helpful
    judge's figures against the longest rule and the harmless judge's accuracy."""
    parts = [f"{n}_acc={r['accuracy']:.3f} {n}_bon={r['bon']:.3f}" for n, r in rows.items()]
    if "helpful" in rows:
        h = rows["helpful"]
        parts.append(f"helpful_bon_se={h['bon_se']:.3f} longest_bon={h['longest']:.3f} margin={h['margin']:.3f} "
                     f"margin_se={h['margin_se']:.3f} length_spearman={h['length_spearman']:.3f}")
    if "harmless" in rows:
        parts.append(f"harmless_acc_se={rows['harmless']['accuracy_se']:.3f}")
    return "RESULT " + " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-prompt", type=int, default=10, help="helpful pairs per AlpacaEval prompt")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    parser.add_argument("--reward-lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=504, help="training inputs are fitted to this many tokens")
    parser.add_argument("--train-last-layers", type=int, default=8)
    parser.add_argument("--reward-batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--reward-input-format", choices=("plain", "chat_template"), default="plain",
                        help="how the heads read a conversation (reward_recipe.input_format)")
    parser.add_argument("--margin-per-gap", type=float, default=0.0,
                        help="Bradley–Terry margin per unit of a helpful pair's preference gap (reward_recipe.margin_per_gap)")
    parser.add_argument("--grm-alpha", type=float, default=0.0,
                        help="GRM's SFT regulariser at this weight α (reward_recipe.grm; 0 = plain Bradley–Terry)")
    parser.add_argument("--odin", action="store_true",
                        help="train with ODIN's length head, dropped at scoring (reward_recipe.odin)")
    parser.add_argument("--limit-train", type=int, default=None, help="first N pairs of each set (smoke runs)")
    parser.add_argument("--n-eval", type=int, default=None,
                        help="first N held-out pairs and best-of-11 items (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="leave bench/RESULTS.md alone (for trial runs)")
    args = parser.parse_args()
    # The fields bench/judges.py's `train_reward` reads: the linear head, no LoRA.
    args.model, args.reward_lora_r = "packaged", 0
    start_logging()
    if missing_data(HH, ALPACA):
        return
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if set(sets) - set(SETS):
        parser.error(f"--sets: unknown {sorted(set(sets) - set(SETS))}; sets are {', '.join(SETS)}")

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dimension-mix-") as scratch:
        train, held_out, bestofn = load_data(Path(scratch), args.pairs_per_prompt, args.limit_train, args.n_eval)
        for name in sets:
            result, note = train_reward("grm" if args.grm_alpha else "reward_head", train[name], Path(scratch) / name, args)
            rows[name] = {**measure(Path(scratch) / name, held_out, bestofn), "pairs": len(train[name]),
                          "trained": result.num_examples, "train_seconds": result.seconds, "note": note}
            r = rows[name]
            print(f"{name}: harmless accuracy {r['accuracy']:.3f}, best-of-11 {r['bon']:.3f} "
                  f"({result.steps} steps in {result.seconds:.0f} s, evaluation {r['eval_seconds']:.0f} s)")

    lines = table(rows)
    first = next(iter(rows.values()))
    baselines = (f"Best-of-11 on {len(bestofn)} prompts: random picking {first['random']:.3f}, perfect picking "
                 f"{first['oracle']:.3f}, always the longest candidate {first['longest']:.3f}; "
                 f"{len(held_out)} held-out harmless pairs.")
    print("\n".join(lines))
    print(baselines)
    if args.limit_train is None and args.n_eval is None and not args.smoke:
        command = command_line()
        write_section(SECTION, ["## One reward head for two dimensions (bench/dimension_mix.py)", "",
                                f"`{command}` — seed {args.seed}, {reading_label()}; reward heads from the packaged model, helpful pairs "
                                f"≤ {args.pairs_per_prompt} per prompt"
                                + (f", margin {args.margin_per_gap:g} per preference gap" if args.margin_per_gap else "")
                                + (f", GRM (SFT regulariser) α={args.grm_alpha:g}" if args.grm_alpha else "")
                                + (", ODIN length head" if args.odin else "")
                                + f". {baselines}", "", *lines, "",
                                f"`{result_line(rows)}`"])
    else:
        print("smoke run (--smoke, --limit-train or --n-eval): bench/RESULTS.md left unchanged")
    print(result_line(rows))


if __name__ == "__main__":
    main()
