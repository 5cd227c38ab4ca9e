"""Does the loop improve its judge, and its policy? Self-refine iterations on human-labelled data, per iteration.

Data (read in place from ../shared/data; nothing is copied into the project):
- hh-rlhf-harmless-dev.jsonl.gz: the first 800 valid pairs are human seed data for `harmless`, the
  rest (about 200) are held out;
- alpacaeval-bon-dev.jsonl.gz (403 prompts, 11 scored candidates each), split by position, never by
  results:
  - the first --prompts (200) give seed data for `helpful` — for each prompt, up to
    --pairs-per-prompt pairs of a candidate preferred over the reference (preference > 1.5) and one
    that is not (< 1.5), every combination, the widest preference gap first — and are the prompt
    pool for generation;
  - all the remaining prompts (203), with their 11 candidates each, measure the judge's best-of-11
    win rate (random picking 0.30, perfect picking 0.59), as in earlier runs of this benchmark;
  - the remaining prompts are also cut in two fixed halves: the first half (101) trains the
    benchmark's evaluator, the second half (102; --policy-prompts caps them) are the held-out policy
    prompts (`data.policy_prompts`, dimension helpful): the loop never generates for them, and every
    iteration's policy answers them (`base_responses`, `policy_responses`, `evaluate_policy`).

The evaluator: a Bradley–Terry reward head on the packaged model (the tiny model with --preset tiny),
trained once by the `train_judge` stage on the evaluator prompts' helpful pairs (built as the seed
pairs, --pairs-per-prompt) with the preset's `reward_recipe`, one judge, no keep_best and no replay,
run seed 0 whatever --seed is. It lives in its own store and artifact root (--evaluator-home, default
~/.cache/selfrefine-bench/evaluator), so later runs reuse it by its stage key; the loop gets its model
directory as `evaluate_policy.evaluator` (pinned by content). Before the loop it is checked as an
instrument on the policy prompts' own 11 AlpacaEval candidates: its best-of-11 win rate against
random picking and "always pick the longest candidate" (characters). --evaluator MODEL takes an
evaluator from elsewhere instead (an alias, a judge directory or a hub id, such as a public
sequence-classification reward model on a GPU machine), checked the same way; nothing is trained for
it. Unless the preset sets `evaluate_policy`, the policies answer greedily with at most 96 new tokens
of a 256-token prompt, and the evaluator reads 768 tokens.

The run is the real loop: `self_refine` on the `quality` preset (or --preset) with this data, in a
throwaway Prefect server and a throwaway store (--keep DIR: DIR is the run's SELFREFINE_HOME, kept, so
its policies can be evaluated again with `selfrefine eval --policy …`). Printed per iteration: held-out
pairwise accuracy, ECE, position consistency, best-of-11 win rate, the policy's win rate against the
base policy, length-controlled win rate against the base, win rate against the previous iteration's
policy, controllability (figures ± their standard errors), the policy's mean response length in
characters, rationale keep rate, filter keep rate and wall time. Full runs rewrite this script's
section of bench/RESULTS.md.

Targets: held-out harmless accuracy ≥ 0.62 after iteration 1 and not lower at the last iteration;
best-of-11 ≥ 0.36 at the last iteration; at the last iteration the policy's win rate against the base
≥ 0.60, its length-controlled win rate ≥ 0.55 and controllability ≥ 0.65; and no iteration's win rate
against the base more than one standard error (its own) below the iteration before's.

--tricks measures the seed paper's judge tricks against the plain generative recipe (the same data,
the `quality` preset with judge_kind generative, trained on the absolute and the pairwise prompt so
that the side-by-side readings ask it something it learnt): 2-shot demonstrations, chain of thought with
self-consistency (k=5), absolute vs pairwise best-of-n, each on the iteration-1 judge (only the
evaluate stage reruns: the stage runner reuses the rest), and STaR-SFT vs STaR-DPO on the
iteration-2 judge. Tricks are evaluated on --trick-pairs held-out pairs and --trick-bestofn items;
they measure judges only: no policy prompts, no evaluator.

    python bench/quality.py [--iterations 3] [--seed 0] [--prompts 200] [--policy-prompts 102]
        [--evaluator-home DIR | --evaluator MODEL] [--keep DIR] [--set train_judge.reward_recipe.learning_rate=5e-5]
    python bench/quality.py --tricks

Last line: RESULT final_accuracy=<x> final_bon=<y> policy_win_rate=<w> policy_lc_win_rate=<l>
controllability=<c> helpful_bon=<y> longest_bon=… margin_se=… length_spearman=… harmless_acc=<x>
(last iteration; with --tricks: RESULT plain_accuracy=… and one figure per trick).
"""

from __future__ import annotations

import argparse
import contextlib
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

from harness import command_line, missing_data, reading_label, start_logging  # noqa: E402
from results_file import write_section  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HH = SHARED / "hh-rlhf-harmless-dev.jsonl.gz"
ALPACA = SHARED / "alpacaeval-bon-dev.jsonl.gz"
TARGETS = {"accuracy": 0.62, "bon": 0.36, "policy_win_rate": 0.60, "policy_lc_win_rate": 0.55,
           "controllability": 0.65}
# The policies' answers and the evaluator's reading when the preset has no evaluate_policy section:
# sized for a CPU (greedy, so every policy is compared on paired, deterministic answers).
CPU_POLICY_EVAL = {
    "responses": {"max_new_tokens": 96, "max_prompt_tokens": 256, "temperature": 0.0,
                  "backend": {"backend": "auto", "batch_size": 16}},
    "judge": {"max_length": 768, "batch_size": 16},
}
EVALUATOR_SEED = 0  # one evaluator whatever the run's --seed: the instrument stays the same


# -- data ---------------------------------------------------------------------------------------

def helpful_pairs(rows: list[dict], per_prompt: int) -> list[dict]:
    """prompt/chosen/rejected records: candidates preferred over the reference (preference > 1.5)
    against ones that are not (< 1.5), at most `per_prompt` per prompt, the widest preference gaps
    first. Every (preferred, not preferred) combination of a prompt is a pair, so a prompt with
    several of each gives several contrasts that share the prompt: the contrast best-of-n asks for.
    Each record carries its preference gap (`gap`, in (0, 1]) for a recipe with margin_per_gap."""
    records = []
    for row in rows:
        winners = [c for c in row["candidates"] if c["preference"] > 1.5]
        losers = [c for c in row["candidates"] if c["preference"] < 1.5]
        combos = sorted(itertools.product(winners, losers), key=lambda p: p[1]["preference"] - p[0]["preference"])
        for good, bad in combos[:per_prompt]:
            records.append({"prompt": row["instruction"], "chosen": good["output"], "rejected": bad["output"],
                            "dimension": "helpful", "source": "alpacaeval",
                            "gap": round(good["preference"] - bad["preference"], 6)})
    return records


def prompt_records(rows: list[dict]) -> list[dict]:
    return [{"prompt": r["instruction"], "dimension": "helpful", "source": "alpacaeval"} for r in rows]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_alpaca() -> list[dict]:
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def alpaca_split(alpaca: list[dict], n_prompts: int, n_policy: int | None) -> tuple[list, list, list]:
    """(evaluator rows, policy rows, policy rows left out by --policy-prompts): the prompts after the
    first `n_prompts`, cut in two fixed halves by position; the first `n_policy` of the second half."""
    rest = alpaca[n_prompts:]
    evaluator, policy = rest[:len(rest) // 2], rest[len(rest) // 2:]
    return evaluator, policy[:n_policy], policy[n_policy:] if n_policy is not None else []


def bench_data(data_dir: Path, alpaca: list[dict], n_prompts: int, per_prompt: int,
               policy_rows: list[dict] | None, n_evaluator: int) -> tuple[dict, str]:
    """The run config's `data` section for the shared files, and a line describing it. With
    `policy_rows` (None: no policy evaluation) the run also has them as its policy prompts."""
    seed_rows = alpaca[:n_prompts]
    pairs = write_jsonl(data_dir / "alpacaeval-helpful-pairs.jsonl", helpful_pairs(seed_rows, per_prompt))
    prompts = write_jsonl(data_dir / "alpacaeval-prompts.jsonl", prompt_records(seed_rows))
    n_pairs = sum(1 for _ in open(pairs, encoding="utf-8"))
    hh = {"kind": "local", "path": str(HH), "dimension": "harmless", "source": "hh-rlhf/harmless-base",
          "on_invalid": "skip"}
    data = {
        "seed_pairs": [{**hh, "limit": 800}, {"kind": "local", "path": str(pairs)}],
        "prompts": [{"kind": "local", "path": str(prompts)}],
        "heldout_pairs": [{**hh, "skip": 800}],
        # All the remaining prompts, as before the policy evaluation: the judge figures stay comparable.
        "bestofn": [{"kind": "local", "path": str(ALPACA), "dimension": "helpful", "source": "alpacaeval",
                     "skip": n_prompts}],
    }
    rest = len(alpaca) - n_prompts
    line = (f"seed: 800 hh-rlhf harmless pairs + {n_pairs} AlpacaEval helpful pairs from the first {n_prompts} "
            f"prompts (≤ {per_prompt} per prompt); generation prompts: those {n_prompts}; held out: the "
            f"remaining hh-rlhf harmless pairs; best-of-11: the remaining {rest} AlpacaEval prompts")
    if policy_rows is not None:
        policy = write_jsonl(data_dir / "alpacaeval-policy-prompts.jsonl", prompt_records(policy_rows))
        data["policy_prompts"] = [{"kind": "local", "path": str(policy), "dimension": "helpful",
                                   "source": "alpacaeval"}]
        first = n_prompts + n_evaluator + 1
        line += (f"; of those, prompts {n_prompts + 1}–{n_prompts + n_evaluator} train the evaluator and "
                 f"{len(policy_rows)} of the last {rest - n_evaluator} (from prompt {first} on) are the "
                 "policy prompts")
    return data, line


# -- the evaluator ------------------------------------------------------------------------------

@contextlib.contextmanager
def selfrefine_home(path: Path):
    """SELFREFINE_HOME (the store and the artifact root follow it) set to `path` for the block."""
    before = os.environ.get("SELFREFINE_HOME")
    os.environ["SELFREFINE_HOME"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SELFREFINE_HOME", None)
        else:
            os.environ["SELFREFINE_HOME"] = before


def preset_policy_eval(preset: str) -> dict:
    """The evaluate_policy settings the run takes: the preset's when it has an evaluate_policy section,
    else the CPU sizes above."""
    from selfrefine.flows.config import load_preset

    cfg = load_preset(preset)
    if "evaluate_policy" in cfg.model_fields_set:
        return cfg.evaluate_policy.model_dump(mode="json")
    return {**cfg.evaluate_policy.model_dump(mode="json"), **CPU_POLICY_EVAL}


def evaluator_config(preset: str):
    """The evaluator's train_judge config: one Bradley–Terry reward head from the preset's base model
    ('packaged' for every preset but tiny) with the preset's reward_recipe, no keep_best, no replay.
    Only what a reward head reads is taken from the preset (not its generative recipe), so the cached
    evaluator outlives changes to the loop's generative judge. The tiny preset's reward head also
    takes its SFT recipe's step count, batch, length and learning rate, so it trains in seconds."""
    from selfrefine.flows.config import load_preset
    from selfrefine.tasks.train_judge import TrainJudgeConfig

    tj = load_preset(preset).train_judge
    recipe = tj.reward_recipe
    if preset == "tiny":
        recipe = recipe.model_copy(update={k: getattr(tj.recipe, k) for k in (
            "max_steps", "per_device_batch_size", "max_length", "learning_rate")})
    return TrainJudgeConfig(judge_kind="reward_head", judge_per_dimension=False, keep_best=None,
                            replay_seed_pairs=None, base_model="tiny" if preset == "tiny" else "packaged",
                            reward_recipe=recipe, dimension_definitions=tj.dimension_definitions)


def train_evaluator(home: Path, preset: str, rows: list[dict], per_prompt: int) -> tuple[Path, uuid.UUID, str]:
    """(model directory, model artifact id, line) of the evaluator, trained or reused in `home`."""
    from selfrefine.data import DataSource
    from selfrefine.runtime.registry import execute
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.engine import default_store
    from selfrefine.storage.schema import Artifact
    from selfrefine.tasks import ingest

    config = evaluator_config(preset)
    pairs = write_jsonl(home / "data" / f"alpacaeval-evaluator-pairs-{preset}.jsonl", helpful_pairs(rows, per_prompt))
    n_pairs = sum(1 for _ in open(pairs, encoding="utf-8"))
    start = time.perf_counter()
    with selfrefine_home(home):
        store = default_store()
        ingest_config, _ = ingest.prepare({"seed_pairs_0": ("pairs", DataSource(kind="local", path=str(pairs)))},
                                          config.dimension_definitions)
        data = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store).outputs
        outcome = execute("train_judge", config, {"seed_pairs_0": data["seed_pairs_0"]}, iteration_id=None,
                          seed=EVALUATOR_SEED, store=store)
        judge_id = outcome.outputs["judge"]
        with store.session() as s:
            art = s.get_one(Artifact, judge_id)
            path, sha = ArtifactStore().local_path(art.uri).resolve(), art.sha256
    seconds = time.perf_counter() - start
    how = "trained" if outcome.status == "ran" else "reused (cached by its stage key)"
    line = (f"evaluator: a {config.base_model} reward head on {n_pairs} helpful pairs from {len(rows)} evaluator "
            f"prompts, {how} in {seconds:.1f} s; artifact {judge_id} (sha256 {sha[:12]}) at {path}")
    return path, judge_id, line


def candidate_wins(row: dict) -> list[float]:
    """Each candidate's win against the reference, preference − 1 (as selfrefine's best-of-n)."""
    return [c["preference"] - 1.0 for c in row["candidates"]]


def mean_se(values: list[float]) -> tuple[float, float | None]:
    from selfrefine.scoring.metrics import standard_error

    return sum(values) / len(values), standard_error(values)


def check_evaluator(home: Path, judge: uuid.UUID | str, rows: list[dict], judge_settings: dict,
                    data_dir: Path) -> tuple[dict, list[str]]:
    """The evaluator (a model artifact id in `home`'s store, or a model by name) as an instrument on
    the policy prompts' own 11 candidates: its best-of-11 win rate (the `evaluate` stage, best-of-n by
    the highest reward), random picking and the longest candidate (from the data here). Returns the
    figures and the lines to print."""
    from selfrefine.data import DataSource
    from selfrefine.runtime.registry import execute
    from selfrefine.scoring.judge_settings import JudgeSettings
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.engine import default_store
    from selfrefine.storage.schema import Artifact
    from selfrefine.tasks import ingest
    from selfrefine.tasks.evaluate import EvaluateConfig

    items = write_jsonl(data_dir / "alpacaeval-policy-bestofn.jsonl", rows)
    source = DataSource(kind="local", path=str(items), dimension="helpful", source="alpacaeval")
    start = time.perf_counter()
    with selfrefine_home(home):
        store = default_store()
        ingest_config, _ = ingest.prepare({"bestofn_0": ("bestofn", source)})
        data = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store).outputs
        by_artifact = isinstance(judge, uuid.UUID)
        config = EvaluateConfig(bestofn_scoring="yes_log_odds", judge=JudgeSettings(**judge_settings),
                                judge_model=None if by_artifact else judge)
        inputs = {"bestofn_0": data["bestofn_0"], **({"judge": judge} if by_artifact else {})}
        outcome = execute("evaluate", config, inputs, iteration_id=None, seed=0, store=store)
        with store.session() as s:
            art = s.get_one(Artifact, outcome.outputs["metrics"])
            bestofn = json.loads(ArtifactStore().local_path(art.uri).read_text())["bestofn"]
    seconds = time.perf_counter() - start
    random_rate, random_se = mean_se([sum(candidate_wins(r)) / len(r["candidates"]) for r in rows])
    longest = [max(range(len(r["candidates"])), key=lambda j, r=r: (len(r["candidates"][j]["output"]), -j))
               for r in rows]
    longest_rate, longest_se = mean_se([candidate_wins(r)[j] for r, j in zip(rows, longest)])
    oracle = sum(max(candidate_wins(r)) for r in rows) / len(rows)
    figures = {"n": len(rows), "win_rate": bestofn["win_rate"], "win_rate_se": bestofn["win_rate_se"],
               "random": random_rate, "random_se": random_se, "longest": longest_rate, "longest_se": longest_se,
               "oracle": oracle, "margin_over_longest": bestofn.get("margin_over_longest"),
               "margin_over_longest_se": bestofn.get("margin_over_longest_se"),
               "length_spearman": bestofn.get("length_spearman")}
    lines = ["| picker (best-of-11 on the policy prompts) | win rate |", "|---|---|",
             f"| evaluator (highest reward) | {fmt_se(figures['win_rate'], figures['win_rate_se'])} |",
             f"| longest candidate (characters) | {fmt_se(longest_rate, longest_se)} |",
             f"| random | {fmt(random_rate)} |", f"| perfect | {fmt(oracle)} |", "",
             f"evaluator check on the {len(rows)} policy prompts' 11 AlpacaEval candidates "
             f"({'measured' if outcome.status == 'ran' else 'reused'} in {seconds:.1f} s): margin over the longest "
             f"rule {fmt_se(figures['margin_over_longest'], figures['margin_over_longest_se'])}, "
             f"length bias (Spearman of reward and length) {fmt(figures['length_spearman'])}"]
    return figures, lines


# -- runs ---------------------------------------------------------------------------------------

def build_config(preset: str, data: dict, seed: int, overrides: list[str], evaluate_policy: dict | None = None):
    """The run config: the preset with this data and seed, `evaluate_policy` (when given) in place of
    the preset's section, then the --set overrides."""
    from selfrefine.cli.overrides import apply_overrides
    from selfrefine.flows.config import load_preset, parse_config

    raw = load_preset(preset).model_dump(mode="json")
    raw.update(data=data, seed=seed)
    if evaluate_policy is not None:
        raw["evaluate_policy"] = evaluate_policy
    return parse_config(apply_overrides(raw, overrides), where="bench/quality.py")


POLICY_METRICS = {  # row key: evaluate_policy metric
    "win": "vs_base_win_rate", "win_se": "vs_base_win_rate_se",
    "lc_win": "vs_base_lc_win_rate", "lc_win_se": "vs_base_lc_win_rate_se",
    "win_prev": "vs_previous_win_rate", "win_prev_se": "vs_previous_win_rate_se",
    "controllability": "controllability_controllability", "controllability_se": "controllability_controllability_se",
    "mean_length": "mean_length",
}


def iteration_table(run_id: str) -> list[dict]:
    """Per iteration: the headline metrics and wall time, from the store."""
    from selfrefine.flows.report import iteration_rows
    from selfrefine.storage.engine import default_store

    rows = []
    for r in iteration_rows(default_store(), uuid.UUID(run_id)):
        evaluated = stage_metrics(run_id, r["iteration"], "evaluate")
        policy = stage_metrics(run_id, r["iteration"], "evaluate_policy")
        rows.append({"iteration": r["iteration"], "accuracy": r["judge acc"], "ece": r["ECE"],
                     "consistency": r["pos. consist."], "bon": r["best-of-n"],
                     "accuracy_se": evaluated.get("pairwise_accuracy_se"),
                     "bon_se": evaluated.get("bestofn_win_rate_se"),
                     "longest": evaluated.get("bestofn_longest_win_rate"),
                     "margin": evaluated.get("bestofn_margin_over_longest"),
                     "margin_se": evaluated.get("bestofn_margin_over_longest_se"),
                     "length_spearman": evaluated.get("bestofn_length_spearman"),
                     **{key: policy.get(name) for key, name in POLICY_METRICS.items()},
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
             "| longest rule | judge − longest (paired) | policy win rate vs base | LC win rate vs base | win rate vs previous | controllability "
             "| mean length (chars) | rationale keep rate | filter keep rate | judge (validation accuracy) | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, n, judge in zip(rows, rationale_pairs, judges):
        keep = fmt(r["rationale_keep"]) if n else "— (no rationales)"
        length = "—" if r["mean_length"] is None else f"{r['mean_length']:.0f}"
        lines.append(f"| {r['iteration']} | {fmt_se(r['accuracy'], r['accuracy_se'])} | {fmt(r['ece'])} "
                     f"| {fmt(r['consistency'], 2)} | {fmt_se(r['bon'], r['bon_se'])} "
                     f"| {fmt(r['longest'])} | {fmt_se(r['margin'], r['margin_se'])} "
                     f"| {fmt_se(r['win'], r['win_se'])} | {fmt_se(r['lc_win'], r['lc_win_se'])} "
                     f"| {fmt_se(r['win_prev'], r['win_prev_se'])} "
                     f"| {fmt_se(r['controllability'], r['controllability_se'])} | {length} "
                     f"| {keep} | {fmt(r['filter_keep'], 2)} | {judge} | {r['seconds'] / 60:.1f} min |")
    return lines


def target_line(label: str, value: float | None, target: float | None, se: float | None) -> str:
    """Met, or missed by how much (and by how many standard errors of `value`)."""
    if value is None or target is None:
        return f"- {label}: not measured"
    if value >= target:
        return f"- {label}: {value:.3f} ≥ {target:.3f} — met"
    spread = f" ({(target - value) / se:.1f} standard errors)" if se else ""
    return f"- {label}: {value:.3f} < {target:.3f} — missed by {target - value:.3f}{spread}"


def no_drop_line(rows: list[dict]) -> str:
    """No iteration's win rate vs base more than one (its own) standard error below the one before."""
    label = "no iteration's policy win rate vs base more than one standard error below the one before"
    steps = [(a, b) for a, b in zip(rows, rows[1:]) if a["win"] is not None and b["win"] is not None]
    if not steps:
        return f"- {label}: not measured ({len(rows)} iteration{'s' if len(rows) != 1 else ''})"
    floor = lambda a, b: a["win"] - (b["win_se"] or 0.0)  # noqa: E731
    worst_a, worst_b = min(steps, key=lambda s: s[1]["win"] - floor(*s))
    if worst_b["win"] >= floor(worst_a, worst_b):
        return f"- {label}: " + ", ".join(f"{b['win']:.3f} ≥ {floor(a, b):.3f} (iteration {b['iteration']})"
                                          for a, b in steps) + " — met"
    return target_line(f"{label} (iteration {worst_b['iteration']} against {worst_a['iteration']}'s "
                       f"{worst_a['win']:.3f} − {worst_b['win_se'] or 0.0:.3f})",
                       worst_b["win"], floor(worst_a, worst_b), worst_b["win_se"])


def verdicts(rows: list[dict]) -> list[str]:
    """One line per target: met, or missed by how much."""
    first, last = rows[0], rows[-1]
    n = last["iteration"]
    return [
        target_line("held-out harmless accuracy after iteration 1", first["accuracy"], TARGETS["accuracy"],
                    first["accuracy_se"]),
        target_line(f"held-out harmless accuracy at iteration {n} ≥ iteration 1", last["accuracy"],
                    first["accuracy"], None),
        target_line(f"best-of-11 at iteration {n}", last["bon"], TARGETS["bon"], last["bon_se"]),
        target_line(f"policy win rate vs base at iteration {n}", last["win"], TARGETS["policy_win_rate"],
                    last["win_se"]),
        target_line(f"length-controlled win rate vs base at iteration {n}", last["lc_win"],
                    TARGETS["policy_lc_win_rate"], last["lc_win_se"]),
        no_drop_line(rows),
        target_line(f"controllability at iteration {n}", last["controllability"], TARGETS["controllability"],
                    last["controllability_se"]),
    ]


def run_loop(args, cfg, data_line: str, evaluator_lines: list[str], home: Path) -> None:
    from selfrefine.flows.self_refine import self_refine

    start = time.perf_counter()
    with selfrefine_home(home):
        run_id = self_refine(config=cfg, n_iterations=args.iterations)
        wall = time.perf_counter() - start
        rows = iteration_table(run_id)
        rationale_pairs = [stage_metric(run_id, r["iteration"], "bootstrap_rationales", "pairs") for r in rows]
        judges = [judge_choice(run_id, r["iteration"]) for r in rows]
    lines = main_table(rows, rationale_pairs, judges)
    print("\n".join(lines))
    checks = verdicts(rows)
    print("\n".join(checks))
    print(f"total wall time {wall / 60:.1f} min; load average at the end {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print(f"run {run_id}" + (f"; its store and artifacts are kept in {home} (SELFREFINE_HOME={home} selfrefine "
                             "eval --policy …)" if args.keep else ""))
    if not args.smoke:
        command = command_line()
        write_section("bench/quality.py loop", [
            f"## Self-refine quality (bench/quality.py, preset `{args.preset}`)", "",
            f"`{command}` — run seed {args.seed} (stage seeds derive from it), {args.iterations} "
            f"iterations, {wall / 60:.0f} min in all; {reading_label()}. {data_line}.", "",
            *evaluator_lines, "",
            "Policy columns: the iteration's policy against the base policy (and the previous iteration's) on "
            "the held-out policy prompts, by the evaluator above; ± standard errors over the prompts "
            "(length-controlled: bootstrap).", "",
            *lines, "", "Targets:", *checks])
    last = rows[-1]
    # The held-out pairs are hh-rlhf harmless ones and best-of-n reads the helpful dimension, so the
    # last iteration's accuracy and best-of-11 are also #28's harmless_acc and helpful_bon.
    print(f"RESULT final_accuracy={fmt(last['accuracy'])} final_bon={fmt(last['bon'])} "
          f"policy_win_rate={fmt(last['win'])} policy_lc_win_rate={fmt(last['lc_win'])} "
          f"controllability={fmt(last['controllability'])} helpful_bon={fmt(last['bon'])} "
          f"longest_bon={fmt(last['longest'])} margin_se={fmt(last['margin_se'])} "
          f"length_spearman={fmt(last['length_spearman'])} harmless_acc={fmt(last['accuracy'])}")


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
        command = command_line()
        write_section("bench/quality.py tricks", [
            "## Judge tricks against the plain recipe (bench/quality.py --tricks)", "",
            f"`{command}` — seed {args.seed}, {reading_label()}; the generative judge of preset `{args.preset}` trained on "
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
    parser.add_argument("--pairs-per-prompt", type=int, default=10,
                        help="helpful seed pairs per AlpacaEval prompt (the evaluator's pairs too)")
    parser.add_argument("--policy-prompts", type=int, default=None, metavar="N",
                        help="held-out policy prompts (default: all of the second half of the remaining prompts)")
    parser.add_argument("--evaluator-home", type=Path, default=Path("~/.cache/selfrefine-bench/evaluator"),
                        metavar="DIR", help="store and artifacts of the evaluator, kept and reused across runs")
    parser.add_argument("--evaluator", default=None, metavar="MODEL",
                        help="an evaluator the loop never trains (alias, judge directory or hub id) instead of "
                             "the benchmark's own reward head")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="the run's SELFREFINE_HOME, kept afterwards (default: a temporary directory)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a run-config field (as `selfrefine run --set`)")
    parser.add_argument("--tricks", action="store_true", help="measure the judge tricks instead of the loop")
    parser.add_argument("--trick-seed-pairs", type=int, default=400, help="seed pairs the tricks' generative judge trains on")
    parser.add_argument("--trick-rationale-pairs", type=int, default=48, help="seed pairs STaR bootstraps rationales on")
    parser.add_argument("--trick-pairs", type=int, default=100, help="held-out pairs the tricks are evaluated on")
    parser.add_argument("--trick-bestofn", type=int, default=40, help="best-of-11 items the tricks are evaluated on")
    parser.add_argument("--smoke", action="store_true", help="leave bench/RESULTS.md alone (for trial runs)")
    args = parser.parse_args()
    if args.policy_prompts is not None and args.policy_prompts < 1:
        parser.error("--policy-prompts must be at least 1")
    start_logging("prefect")
    if missing_data(HH, ALPACA):
        return
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no usage heartbeats
    os.environ.setdefault("SELFREFINE_MODEL_CACHE", str(Path.home() / ".selfrefine" / "models"))
    # The store and the artifact root follow SELFREFINE_HOME (the run's, the evaluator's): nothing else.
    for name in ("SELFREFINE_DB_URL", "SELFREFINE_DB_URL_SECRET", "SELFREFINE_ARTIFACTS"):
        os.environ.pop(name, None)

    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        home = args.keep.expanduser().resolve() if args.keep else Path(tmp) / "home"
        # With --keep the data files stay beside the store that names them.
        data_dir = home / "bench-data" if args.keep else Path(tmp)
        alpaca = read_alpaca()
        evaluator_rows, policy_rows, _ = alpaca_split(alpaca, args.prompts, args.policy_prompts)
        if args.tricks:
            data, data_line = bench_data(data_dir, alpaca, args.prompts, args.pairs_per_prompt, None, 0)
            print(f"data: {data_line}")
            with prefect_test_harness(server_startup_timeout=120), selfrefine_home(home):
                run_tricks(args, data, data_line)
            return
        if not evaluator_rows or not policy_rows:
            raise SystemExit(f"--prompts {args.prompts} leaves {len(alpaca) - args.prompts} AlpacaEval prompts: "
                             "too few for the evaluator's and the policy prompts")
        data, data_line = bench_data(data_dir, alpaca, args.prompts, args.pairs_per_prompt, policy_rows,
                                     len(evaluator_rows))
        print(f"data: {data_line}")
        evaluator_home = args.evaluator_home.expanduser().resolve()
        if args.evaluator:
            evaluator, evaluator_spec = args.evaluator, args.evaluator
            evaluator_line = f"evaluator: {args.evaluator} (--evaluator; not trained here, never trained by the loop)"
        else:
            evaluator_dir, evaluator, evaluator_line = train_evaluator(evaluator_home, args.preset, evaluator_rows,
                                                                       args.pairs_per_prompt)
            evaluator_spec = str(evaluator_dir)
        print(evaluator_line)
        cfg = build_config(args.preset, data, args.seed, args.set,
                           {**preset_policy_eval(args.preset), "evaluator": evaluator_spec})
        _, check_lines = check_evaluator(evaluator_home, evaluator, policy_rows,
                                         cfg.evaluate_policy.judge.model_dump(), data_dir)
        print("\n".join(check_lines))
        print(f"run home {home}" + (" (kept)" if args.keep else " (temporary)"))
        with prefect_test_harness(server_startup_timeout=120):
            run_loop(args, cfg, data_line, [evaluator_line, "", *check_lines], home)


if __name__ == "__main__":
    main()
