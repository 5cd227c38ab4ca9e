"""Does the loop improve its judge? Three self-refine iterations on human-labelled data, per iteration.

Data (read in place from ../shared/data; nothing is copied into the project):
- hh-rlhf-harmless-dev.jsonl.gz: the first 800 valid pairs are human seed data for `harmless`, the
  rest (about 200) are held out;
- alpacaeval-bon-dev.jsonl.gz: the first 200 prompts give seed data for `helpful` — for each prompt,
  up to --pairs-per-prompt pairs of a candidate preferred over the reference (preference > 1.5) and
  one that is not (< 1.5), every combination, the widest preference gap first — and are the prompt pool for generation; the
  remaining prompts, with their 11 candidates each, measure the best-of-11 win rate (random picking
  0.30, perfect picking 0.59).

The run is the real loop: `self_refine` on the `quality` preset (or --preset) with this data, in a
throwaway Prefect server and store. Printed per iteration: held-out pairwise accuracy, ECE, position
consistency, best-of-11 win rate (the accuracy and the win rate ± their standard errors), rationale keep
rate, filter keep rate and wall time. Full runs
rewrite this script's section of bench/RESULTS.md.

--tricks measures the seed paper's judge tricks against the plain generative recipe (the same data,
the `quality` preset with judge_kind generative, trained on the absolute and the pairwise prompt so
that the side-by-side readings ask it something it learnt): 2-shot demonstrations, chain of thought with
self-consistency (k=5), absolute vs pairwise best-of-n, each on the iteration-1 judge (only the
evaluate stage reruns: the stage runner reuses the rest), and STaR-SFT vs STaR-DPO on the
iteration-2 judge. Tricks are evaluated on --trick-pairs held-out pairs and --trick-bestofn items.

    python bench/quality.py [--iterations 3] [--seed 0] [--set train_judge.reward_recipe.learning_rate=5e-5]
    python bench/quality.py --tricks

Last line: RESULT final_accuracy=<x> final_bon=<y> (with --tricks: RESULT plain_accuracy=… and one
figure per trick).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results_file.py

from harness import missing_data, start_logging  # noqa: E402
from results_file import write_section  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HH = SHARED / "hh-rlhf-harmless-dev.jsonl.gz"
ALPACA = SHARED / "alpacaeval-bon-dev.jsonl.gz"
TARGETS = {"accuracy": 0.62, "bon": 0.36}


# -- data ---------------------------------------------------------------------------------------

def helpful_pairs(rows: list[dict], per_prompt: int) -> list[dict]:
    """prompt/chosen/rejected records: candidates preferred over the reference (preference > 1.5)
    against ones that are not (< 1.5), at most `per_prompt` per prompt, the widest preference gaps
    first. Every (preferred, not preferred) combination of a prompt is a pair, so a prompt with
    several of each gives several contrasts that share the prompt: the contrast best-of-n asks for."""
    records = []
    for row in rows:
        winners = [c for c in row["candidates"] if c["preference"] > 1.5]
        losers = [c for c in row["candidates"] if c["preference"] < 1.5]
        combos = sorted(itertools.product(winners, losers), key=lambda p: p[1]["preference"] - p[0]["preference"])
        for good, bad in combos[:per_prompt]:
            records.append({"prompt": row["instruction"], "chosen": good["output"], "rejected": bad["output"],
                            "dimension": "helpful", "source": "alpacaeval"})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def bench_data(tmp: Path, n_prompts: int, per_prompt: int) -> tuple[dict, str]:
    """The run config's `data` section for the shared files, and a line describing it."""
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        alpaca = [json.loads(line) for line in f if line.strip()]
    seed_rows = alpaca[:n_prompts]
    pairs = write_jsonl(tmp / "alpacaeval-helpful-pairs.jsonl", helpful_pairs(seed_rows, per_prompt))
    prompts = write_jsonl(tmp / "alpacaeval-prompts.jsonl",
                          [{"prompt": r["instruction"], "dimension": "helpful", "source": "alpacaeval"}
                           for r in seed_rows])
    n_pairs = sum(1 for _ in open(pairs, encoding="utf-8"))
    hh = {"kind": "local", "path": str(HH), "dimension": "harmless", "source": "hh-rlhf/harmless-base",
          "on_invalid": "skip"}
    data = {
        "seed_pairs": [{**hh, "limit": 800}, {"kind": "local", "path": str(pairs)}],
        "prompts": [{"kind": "local", "path": str(prompts)}],
        "heldout_pairs": [{**hh, "skip": 800}],
        "bestofn": [{"kind": "local", "path": str(ALPACA), "dimension": "helpful", "source": "alpacaeval",
                     "skip": n_prompts}],
    }
    line = (f"seed: 800 hh-rlhf harmless pairs + {n_pairs} AlpacaEval helpful pairs from the first {n_prompts} "
            f"prompts (≤ {per_prompt} per prompt); generation prompts: those {n_prompts}; held out: the "
            f"remaining hh-rlhf harmless pairs; best-of-11: the remaining {len(alpaca) - n_prompts} AlpacaEval prompts")
    return data, line


# -- runs ---------------------------------------------------------------------------------------

def build_config(preset: str, data: dict, seed: int, overrides: list[str]):
    from selfrefine.cli.run import apply_overrides
    from selfrefine.flows.config import load_preset, parse_config

    raw = load_preset(preset).model_dump(mode="json")
    raw.update(data=data, seed=seed)
    return parse_config(apply_overrides(raw, overrides), where="bench/quality.py")


def iteration_table(run_id: str) -> list[dict]:
    """Per iteration: the headline metrics and wall time, from the store."""
    from selfrefine.flows.report import iteration_rows
    from selfrefine.storage.engine import default_store

    rows = []
    for r in iteration_rows(default_store(), uuid.UUID(run_id)):
        evaluated = stage_metrics(run_id, r["iteration"], "evaluate")
        rows.append({"iteration": r["iteration"], "accuracy": r["judge acc"], "ece": r["ECE"],
                     "consistency": r["pos. consist."], "bon": r["best-of-n"],
                     "accuracy_se": evaluated.get("pairwise_accuracy_se"),
                     "bon_se": evaluated.get("bestofn_win_rate_se"),
                     "rationale_keep": r["rationale keep"], "filter_keep": r["filter keep"],
                     "seconds": r["seconds"]})
    return rows


def stage_metric(run_id: str, iteration: int, stage: str, name: str) -> float | None:
    return stage_metrics(run_id, iteration, stage).get(name)


def stage_metrics(run_id: str, iteration: int, stage: str, **labels: str) -> dict[str, float]:
    """The metrics of `stage` in `iteration` (of the run that produced it, if reused) whose labels
    are exactly `labels` (none: the stage's overall figures)."""
    from selfrefine.storage import repository as repo
    from selfrefine.storage.engine import default_store

    store = default_store()
    with store.session() as s:
        for it in repo.iterations_of(s, uuid.UUID(run_id)):
            if it.index != iteration:
                continue
            for sr in repo.stage_runs_of(s, it.id):
                if sr.stage == stage:
                    producer = repo.producing_stage_run(s, sr)
                    return {m.name: m.value for m in repo.metrics_of(s, producer.id) if m.labels == labels}
    return {}


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_se(value, se) -> str:
    """A figure with its standard error over the evaluated items, as AlpacaEval reports win rates."""
    return fmt(value) if value is None or se is None else f"{value:.3f} ± {se:.3f}"


def judge_choice(run_id: str, iteration: int, dimensions: tuple[str, ...] = ("harmless", "helpful")) -> str:
    """Which judge the iteration used under keep_best, with the validation accuracies behind it
    (for a judge per dimension, each dimension's)."""
    by_dimension = [(d, stage_metrics(run_id, iteration, "train_judge", dimension=d)) for d in dimensions]
    by_dimension = [(d, values) for d, values in by_dimension if values]
    if by_dimension:
        return "; ".join(f"{d}: {gate_outcome(values)}" for d, values in by_dimension)
    return gate_outcome(stage_metrics(run_id, iteration, "train_judge"))


def gate_outcome(values: dict[str, float]) -> str:
    new, previous = values.get("validation_accuracy_new"), values.get("validation_accuracy_previous")
    if new is None:
        return "new (no keep_best)"
    if previous is None:
        return f"new ({new:.3f})"
    averaged = values.get("validation_accuracy_averaged")
    also = f"new {new:.3f}" if averaged is None else f"averaged {averaged:.3f}, new alone {new:.3f}"
    if values.get("kept_previous_judge"):
        return f"previous kept ({previous:.3f}; {also})"
    if averaged is not None:
        return f"averaged with previous ({averaged:.3f}; new alone {new:.3f}, previous {previous:.3f})"
    return f"new ({new:.3f}; previous {previous:.3f})"


def main_table(rows: list[dict], rationale_pairs: list[float | None], judges: list[str]) -> list[str]:
    lines = ["| iteration | held-out accuracy | ECE | position consistency | best-of-11 win rate "
             "| rationale keep rate | filter keep rate | judge (validation accuracy) | wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r, n, judge in zip(rows, rationale_pairs, judges):
        keep = fmt(r["rationale_keep"]) if n else "— (no rationales)"
        lines.append(f"| {r['iteration']} | {fmt_se(r['accuracy'], r['accuracy_se'])} | {fmt(r['ece'])} "
                     f"| {fmt(r['consistency'], 2)} | {fmt_se(r['bon'], r['bon_se'])} | {keep} "
                     f"| {fmt(r['filter_keep'], 2)} | {judge} | {r['seconds'] / 60:.1f} min |")
    return lines


def verdicts(rows: list[dict]) -> list[str]:
    """One line per target: met, or missed by how much."""
    first, last = rows[0], rows[-1]
    lines = []
    for label, value, target, se in (
            ("accuracy after iteration 1", first["accuracy"], TARGETS["accuracy"], first["accuracy_se"]),
            (f"accuracy at iteration {last['iteration']} ≥ iteration 1", last["accuracy"], first["accuracy"], None),
            (f"best-of-11 at iteration {last['iteration']}", last["bon"], TARGETS["bon"], last["bon_se"])):
        if value is None or target is None:
            lines.append(f"- {label}: not measured")
        elif value >= target:
            lines.append(f"- {label}: {value:.3f} ≥ {target:.3f} — met")
        else:
            spread = f" ({(target - value) / se:.1f} standard errors)" if se else ""
            lines.append(f"- {label}: {value:.3f} < {target:.3f} — missed by {target - value:.3f}{spread}")
    return lines


def run_loop(args, data: dict, data_line: str) -> None:
    from selfrefine.flows.self_refine import self_refine

    cfg = build_config(args.preset, data, args.seed, args.set)
    start = time.perf_counter()
    run_id = self_refine(config=cfg, n_iterations=args.iterations)
    wall = time.perf_counter() - start
    rows = iteration_table(run_id)
    rationale_pairs = [stage_metric(run_id, r["iteration"], "bootstrap_rationales", "pairs") for r in rows]
    lines = main_table(rows, rationale_pairs, [judge_choice(run_id, r["iteration"]) for r in rows])
    print("\n".join(lines))
    checks = verdicts(rows)
    print("\n".join(checks))
    print(f"total wall time {wall / 60:.1f} min; load average at the end {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    if not args.smoke:
        command = "python bench/quality.py " + " ".join(sys.argv[1:])
        write_section("bench/quality.py loop", [
            f"## Self-refine quality (bench/quality.py, preset `{args.preset}`)", "",
            f"`{command.strip()}` — run seed {args.seed} (stage seeds derive from it), {args.iterations} "
            f"iterations, {wall / 60:.0f} min in all on {os.cpu_count()} cores. {data_line}.", "",
            *lines, "", "Targets:", *checks])
    last = rows[-1]
    print(f"RESULT final_accuracy={fmt(last['accuracy'])} final_bon={fmt(last['bon'])}")


# -- tricks -------------------------------------------------------------------------------------

TRICKS = {
    # name: (label, iterations, overrides on top of the plain generative recipe)
    "plain": ("plain generative judge", 1, []),
    "two_shot": ("2-shot demonstrations", 1, ["evaluate.demonstrations=2"]),
    "cot_sc5": ("chain of thought, self-consistency k=5", 1,
                ["evaluate.pairwise_verdicts=prompt", "evaluate.chain_of_thought={samples: 5}"]),
    "pairwise_bon": ("pairwise best-of-n (knockout)", 1, ["evaluate.bestofn_scoring=pairwise"]),
    "star_sft": ("STaR-SFT (iteration 2)", 2, ["train_judge.rationale_training=sft"]),
    "star_dpo": ("STaR-DPO (iteration 2)", 2, ["train_judge.rationale_training=star_dpo"]),
}


def run_tricks(args, data: dict, data_line: str) -> None:
    from selfrefine.flows.self_refine import self_refine

    # The judge also learns the pairwise prompt, so the side-by-side readings (knockout best-of-n,
    # chain of thought) ask it something it was trained on.
    generative = ["train_judge.judge_kind=generative", "train_judge.example_kinds=[absolute, pairwise]",
                  "evaluate.pairwise_verdicts=prompt", "evaluate.bestofn_scoring=absolute",
                  f"train_judge.max_seed_pairs={args.trick_seed_pairs}",
                  f"bootstrap_rationales.max_pairs={args.trick_rationale_pairs}",
                  f"evaluate.max_pairs={args.trick_pairs}", f"evaluate.max_bestofn={args.trick_bestofn}",
                  *args.set]
    results = {}
    for name, (label, iterations, overrides) in TRICKS.items():
        cfg = build_config(args.preset, data, args.seed, [*generative, *overrides])
        start = time.perf_counter()
        run_id = self_refine(config=cfg, n_iterations=iterations)
        row = iteration_table(run_id)[-1]
        row["seconds"] = time.perf_counter() - start
        row["label"] = label
        results[name] = row
        print(f"{label}: accuracy {fmt(row['accuracy'])}, ECE {fmt(row['ece'])}, best-of-n {fmt(row['bon'])} "
              f"({row['seconds'] / 60:.1f} min, stages reused where their keys match)")
    lines = ["| judge trick | held-out accuracy | ECE | position consistency | best-of-n win rate | wall time |",
             "|---|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['label']} | {fmt(r['accuracy'])} | {fmt(r['ece'])} | {fmt(r['consistency'], 2)} "
                     f"| {fmt(r['bon'])} | {r['seconds'] / 60:.1f} min |")
    print("\n".join(lines))
    if not args.smoke:
        command = "python bench/quality.py " + " ".join(sys.argv[1:])
        write_section("bench/quality.py tricks", [
            "## Judge tricks against the plain recipe (bench/quality.py --tricks)", "",
            f"`{command.strip()}` — seed {args.seed}; the generative judge of preset `{args.preset}` trained on "
            f"{args.trick_seed_pairs} seed pairs; evaluated on {args.trick_pairs} held-out pairs and "
            f"{args.trick_bestofn} best-of-11 items. {data_line}. Rows 1–4 share one iteration-1 judge "
            "(only evaluate reruns); STaR rows are iteration 2, whose judge trains on iteration 1's kept "
            "rationales (SFT) or on (correct, incorrect) rationale pairs (DPO).", "", *lines])
    print("RESULT " + " ".join(f"{name}_accuracy={fmt(r['accuracy'])} {name}_bon={fmt(r['bon'])}"
                               for name, r in results.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=200, help="AlpacaEval prompts for seed pairs and generation")
    parser.add_argument("--pairs-per-prompt", type=int, default=10, help="helpful seed pairs per AlpacaEval prompt")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a run-config field (as `selfrefine run --set`)")
    parser.add_argument("--tricks", action="store_true", help="measure the judge tricks instead of the loop")
    parser.add_argument("--trick-seed-pairs", type=int, default=400, help="seed pairs the tricks' generative judge trains on")
    parser.add_argument("--trick-rationale-pairs", type=int, default=48, help="seed pairs STaR bootstraps rationales on")
    parser.add_argument("--trick-pairs", type=int, default=100, help="held-out pairs the tricks are evaluated on")
    parser.add_argument("--trick-bestofn", type=int, default=40, help="best-of-11 items the tricks are evaluated on")
    parser.add_argument("--smoke", action="store_true", help="leave bench/RESULTS.md alone (for trial runs)")
    args = parser.parse_args()
    start_logging("prefect")
    if missing_data(HH, ALPACA):
        return
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no usage heartbeats

    with tempfile.TemporaryDirectory(prefix="quality-") as tmp, prefect_test_harness(server_startup_timeout=120):
        os.environ["SELFREFINE_HOME"] = str(Path(tmp) / "home")
        os.environ.setdefault("SELFREFINE_MODEL_CACHE", str(Path.home() / ".selfrefine" / "models"))
        data, data_line = bench_data(Path(tmp), args.prompts, args.pairs_per_prompt)
        print(f"data: {data_line}")
        (run_tricks if args.tricks else run_loop)(args, data, data_line)


if __name__ == "__main__":
    main()
