"""The `evaluate` stage and the `eval` command: judge metrics, best-of-n, the judging tricks and
taking over unchanged figures.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

import json
import uuid

import pytest
import torch

from selfrefine.cli.main import main as cli_main
from selfrefine.data import DataSource, read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from selfrefine.runtime.registry import execute
from selfrefine.scoring.judge_settings import JudgeSettings
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact
from selfrefine.tasks import ingest
from selfrefine.tasks.evaluate import EvaluateConfig
from tests.tasks.conftest import (
    FIXTURES,
    TINY,
    bestofn_bounds,
    fraction,
    metric_value,
    read_rows,
    row_counts,
    stored_paths,
    win,
)


def test_evaluate_metrics_are_in_range_and_match_the_stored_rows(chain):
    metrics = json.loads(chain.output("evaluate", "metrics").read_text())
    heldout = read_jsonl(chain.output("ingest_data", "heldout_pairs_0") / DATA_FILE, "pairs")
    bestofn = read_jsonl(chain.output("ingest_data", "bestofn_0") / DATA_FILE, "bestofn")
    assert {"pairwise", "absolute", "bestofn", "by_source", "by_dimension"} <= set(metrics)

    pw, ab, bon = metrics["pairwise"], metrics["absolute"], metrics["bestofn"]
    assert pw["n"] == ab["n"] == len(heldout) == TINY.evaluate.max_pairs
    for key in ("accuracy", "accuracy_forward", "accuracy_swapped", "position_consistency",
                "first_position_rate", "mean_p_chosen"):
        assert fraction(pw[key]), key
    for key in ("accuracy", "yes_rate_chosen", "yes_rate_rejected", "mean_p_yes_chosen", "mean_p_yes_rejected"):
        assert fraction(ab[key]), key
    for section in (pw, ab):
        calibration = section["calibration"]
        assert fraction(calibration["ece"]) and calibration["ece"] <= calibration["max_calibration_error"] <= 1
        assert len(calibration["bins"]) == TINY.evaluate.n_bins
        assert sum(b["count"] for b in calibration["bins"]) == calibration["n"] == 2 * len(heldout)
    assert set(metrics["by_source"]) == {p.source for p in heldout}
    assert set(metrics["by_dimension"]) == {p.dimension for p in heldout}

    worst, rand, best = bestofn_bounds(bestofn)
    assert bon["n_items"] == len(bestofn) == TINY.evaluate.max_bestofn
    assert bon["random_win_rate"] == pytest.approx(rand) and bon["oracle_win_rate"] == pytest.approx(best)
    assert 0.0 <= worst <= rand <= best <= 1.0
    assert worst - 1e-9 <= bon["win_rate"] <= best + 1e-9
    assert fraction(bon["oracle_pick_rate"]) and fraction(bon["tied_pick_rate"])

    rows = chain.metrics(chain.outcomes["evaluate"].stage_run_id)
    for section in ("pairwise", "absolute", "bestofn"):
        for key, value in metrics[section].items():
            if isinstance(value, (int, float)):
                assert metric_value(rows, f"{section}_{key}") == pytest.approx(value), (section, key)
        if "calibration" in metrics[section]:
            assert metric_value(rows, f"{section}_calibration_ece") == pytest.approx(
                metrics[section]["calibration"]["ece"])
    for source, group in metrics["by_source"].items():
        assert metric_value(rows, "pairwise_accuracy", source=source) == pytest.approx(
            group["pairwise"]["accuracy"])
    assert metrics["headline"]["pairwise.accuracy"] == pw["accuracy"]
    assert metrics["headline"]["bestofn.win_rate"] == bon["win_rate"]
    assert chain.artifact(chain.outcomes["evaluate"].outputs["metrics"]).meta == {"headline": metrics["headline"]}


def test_best_of_n_win_rate_is_that_of_the_judges_picks(store, artifacts):
    source = DataSource(kind="local", path=str(FIXTURES / "bestofn.jsonl"))
    ingest_config, counts = ingest.prepare({"bestofn_0": ("bestofn", source)})
    data = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store,
                   artifacts=artifacts).outputs
    settings = JudgeSettings(dtype="float32", device="cpu")
    outcome = execute("evaluate", EvaluateConfig(judge_model="tiny", judge=settings),
                      {"bestofn_0": data["bestofn_0"]}, iteration_id=None, seed=0, store=store,
                      artifacts=artifacts)
    assert outcome.status == "ran"
    metrics = json.loads(artifacts.local_path(_uri(store, outcome.outputs["metrics"])).read_text())
    assert set(metrics) >= {"bestofn"} and "pairwise" not in metrics
    bon = metrics["bestofn"]
    items = read_jsonl(artifacts.local_path(_uri(store, data["bestofn_0"])) / DATA_FILE, "bestofn")
    assert bon["n_items"] == counts["bestofn_0"] == len(items) == 3
    worst, rand, best = bestofn_bounds(items)
    assert 0.0 <= worst <= rand <= best <= 1.0
    assert bon["random_win_rate"] == pytest.approx(rand) and bon["oracle_win_rate"] == pytest.approx(best)
    assert worst - 1e-9 <= bon["win_rate"] <= best + 1e-9

    # The same judge, asked directly: its highest-scored candidate of each item decides the win
    # rate (candidates scored within 1e-4 of the top count as possible picks).
    from selfrefine.models.judge import AbsoluteItem

    judge = settings.load("tiny")
    low = high = 0.0
    for item in items:
        scores = [s.score for s in judge.score_absolute(
            [AbsoluteItem(item.context, c.output, item.dimension) for c in item.candidates])]
        near_top = [win(c.preference) for c, s in zip(item.candidates, scores) if s >= max(scores) - 1e-4]
        low, high = low + min(near_top) / len(items), high + max(near_top) / len(items)
    assert low - 1e-9 <= bon["win_rate"] <= high + 1e-9


def _uri(store: Store, art_id: uuid.UUID) -> str:
    with store.session() as s:
        return s.get_one(Artifact, art_id).uri


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_command_prints_metrics_for_a_pairs_file(capsys):
    data = str(FIXTURES / "pairs.jsonl")
    code, text, err = _cli(capsys, "eval", "--judge", "tiny", "--data", data, "--dtype", "float32")
    assert code == 0, err
    code, out, err = _cli(capsys, "eval", "--judge", "tiny", "--data", data, "--dtype", "float32", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    raw = read_rows(FIXTURES / "pairs.jsonl")
    assert metrics["pairwise"]["n"] == metrics["absolute"]["n"] == len(raw)
    assert set(metrics["by_source"]) == {r["source"] for r in raw}
    assert set(metrics["by_dimension"]) == {r["dimension"] for r in raw}
    assert fraction(metrics["pairwise"]["accuracy"]) and fraction(metrics["absolute"]["accuracy"])
    assert "bestofn" not in metrics
    # The text report shows the same figures.
    assert f"({len(raw)} pairs items)" in text
    pairwise_line = next(line for line in text.splitlines() if line.strip().startswith("pairwise"))
    assert f"accuracy={metrics['pairwise']['accuracy']:.4g}" in pairwise_line
    assert f"ece={metrics['pairwise']['calibration']['ece']:.4g}" in pairwise_line
    assert any(line.strip().startswith("absolute") for line in text.splitlines())
    for source in metrics["by_source"]:
        assert f"source {source}: pairwise accuracy" in text


def test_eval_command_prints_metrics_for_a_best_of_n_file(capsys):
    data = str(FIXTURES / "bestofn.jsonl")
    code, out, err = _cli(capsys, "eval", "--judge", "tiny", "--data", data, "--dtype", "float32", "--json")
    assert code == 0, err
    bon = json.loads(out)["bestofn"]
    items = read_rows(FIXTURES / "bestofn.jsonl")
    assert bon["n_items"] == len(items)
    best = sum(max(win(c["preference"]) for c in it["candidates"]) for it in items) / len(items)
    assert bon["oracle_win_rate"] == pytest.approx(best) and 0.0 <= bon["win_rate"] <= best + 1e-9
    code, text, err = _cli(capsys, "eval", "--judge", "tiny", "--data", data, "--dtype", "float32")
    assert code == 0, err
    line = next(line for line in text.splitlines() if line.strip().startswith("bestofn"))
    assert f"win_rate={bon['win_rate']:.4g}" in line and f"n_items={len(items)}" in line
    assert "pairwise" not in text


def test_eval_command_reports_bad_data_in_one_line(capsys):
    from selfrefine import settings

    store, artifacts = Store(settings.db_url()), ArtifactStore()  # the ones the command uses
    bad = FIXTURES / "invalid" / "missing_field.jsonl"
    code, out, err = _cli(capsys, "eval", "--judge", "tiny", "--data", str(bad))
    assert code != 0 and out == ""
    assert err.strip() == f"selfrefine: {bad}:2: missing (field 'rejected')"
    assert all(n == 0 for n in row_counts(store).values()) and stored_paths(artifacts) == []
    store.dispose()


def test_evaluating_a_changed_judge_directory_recomputes(store, artifacts, tmp_path):
    import shutil

    import torch

    from selfrefine.models.loading import load_model, resolve_model

    judge_dir = tmp_path / "judge"
    shutil.copytree(resolve_model("tiny"), judge_dir)
    source = DataSource(kind="local", path=str(FIXTURES / "pairs.jsonl"))
    ingest_config, _ = ingest.prepare({"heldout_0": ("pairs", source)})
    data = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store,
                   artifacts=artifacts).outputs
    config = EvaluateConfig(judge_model=str(judge_dir), judge=JudgeSettings(dtype="float32", device="cpu"))
    first = execute("evaluate", config, {"heldout_0": data["heldout_0"]}, iteration_id=None, seed=0,
                    store=store, artifacts=artifacts)
    model, tokenizer = load_model(str(judge_dir), dtype="float32", device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.save_pretrained(judge_dir)
    second = execute("evaluate", config, {"heldout_0": data["heldout_0"]}, iteration_id=None, seed=0,
                     store=store, artifacts=artifacts)
    assert first.status == "ran"
    assert second.status == "ran"


def test_evaluate_with_demonstrations_self_consistency_and_a_pairwise_tournament(chain):
    from selfrefine.scoring.judge_eval import ChainOfThoughtSettings

    plain = json.loads(chain.output("evaluate", "metrics").read_text())
    config = chain.configs["evaluate"].model_copy(update={
        "demonstrations": 2, "bestofn_scoring": "pairwise",
        "chain_of_thought": ChainOfThoughtSettings(samples=2, max_new_tokens=8)})
    inputs = {**chain.inputs["evaluate"], "demo_pairs_0": chain.inputs["train_judge"]["seed_pairs_0"]}
    outcome = chain.run("evaluate", config, inputs, chain.new_iteration())
    assert outcome.status == "ran"  # a different config: computed, not reused
    metrics = json.loads(chain.path(outcome.outputs["metrics"]).read_text())
    pw, bon = metrics["pairwise"], metrics["bestofn"]
    assert pw["n"] == plain["pairwise"]["n"] and fraction(pw["accuracy"]) and fraction(pw["calibration"]["ece"])
    # Vote shares of 2 samples, one per order: every per-order probability is 0, 0.5 or 1.
    assert fraction(pw["accuracy_forward"]) and fraction(pw["position_consistency"])
    bestofn = read_jsonl(chain.output("ingest_data", "bestofn_0") / DATA_FILE, "bestofn")
    worst, _, best = bestofn_bounds(bestofn)
    assert bon["n_items"] == plain["bestofn"]["n_items"] and worst - 1e-9 <= bon["win_rate"] <= best + 1e-9
    assert bon["tied_pick_rate"] == 0.0  # a tournament has exactly one winner per item
    # The demonstrations reach the absolute prompts too: the absolute scores move.
    assert metrics["absolute"]["mean_p_yes_chosen"] != pytest.approx(plain["absolute"]["mean_p_yes_chosen"], abs=1e-9)


def test_evaluate_judges_pairs_and_ranks_candidates_by_yes_log_odds(chain):
    """pairwise_verdicts: absolute reads each pair from the two absolute scores the stage already takes
    (P = sigmoid of their Yes log-odds difference); bestofn_scoring: yes_log_odds picks by that quantity."""
    from selfrefine.models.judge import AbsoluteItem
    from selfrefine.models.judge_modes import yes_log_odds

    plain = json.loads(chain.output("evaluate", "metrics").read_text())
    config = chain.configs["evaluate"].model_copy(update={"pairwise_verdicts": "absolute",
                                                          "bestofn_scoring": "yes_log_odds"})
    outcome = chain.run("evaluate", config, chain.inputs["evaluate"], chain.new_iteration())
    assert outcome.status == "ran"
    metrics = json.loads(chain.path(outcome.outputs["metrics"]).read_text())
    pw, ab = metrics["pairwise"], metrics["absolute"]
    assert ab == plain["absolute"]  # the same absolute scores, read another way
    assert pw["position_consistency"] == 1.0 and pw["first_position_rate"] == pytest.approx(0.5)
    # Independently: score the held-out pairs with the same judge and count positive log-odds margins.
    judge = config.judge.load(str(chain.path(chain.inputs["evaluate"]["judge"])))
    pairs = read_jsonl(chain.output("ingest_data", "heldout_pairs_0") / DATA_FILE, "pairs")
    assert len(pairs) == pw["n"]  # the stage evaluated every held-out pair
    scores = judge.score_absolute([AbsoluteItem(p.context, r, p.dimension) for p in pairs for r in (p.chosen, p.rejected)])
    margins = [yes_log_odds(c) - yes_log_odds(r) for c, r in zip(scores[0::2], scores[1::2])]
    assert pw["accuracy"] == pytest.approx(sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins))
    bestofn = read_jsonl(chain.output("ingest_data", "bestofn_0") / DATA_FILE, "bestofn")
    worst, _, best = bestofn_bounds(bestofn)
    assert worst - 1e-9 <= metrics["bestofn"]["win_rate"] <= best + 1e-9
    with pytest.raises(ValueError, match="Set one of them"):
        EvaluateConfig(pairwise_verdicts="absolute", chain_of_thought={"samples": 2})


def test_demonstrations_without_pairs_to_draw_from_fail_clearly(chain):
    from selfrefine.errors import ConfigError

    config = chain.configs["evaluate"].model_copy(update={"demonstrations": 2})
    with pytest.raises(ConfigError, match="demonstrations=2 needs labelled pairs"):
        chain.run("evaluate", config, chain.inputs["evaluate"], chain.new_iteration())


def test_evaluate_takes_over_the_previous_figures_only_when_judge_data_and_settings_are_unchanged(
        chain, monkeypatch):
    first = chain.outcomes["evaluate"].outputs["metrics"]
    before = json.loads(chain.path(first).read_text())
    inputs = {**chain.inputs["evaluate"], "previous_metrics": first}
    loads = []
    real_load = JudgeSettings.load
    monkeypatch.setattr(JudgeSettings, "load", lambda self, *a, **k: loads.append(a) or real_load(self, *a, **k))

    same = chain.run("evaluate", chain.configs["evaluate"], inputs, chain.new_iteration())
    after = json.loads(chain.path(same.outputs["metrics"]).read_text())
    assert loads == []  # no judge was loaded, no response scored
    assert after["headline"] == before["headline"] and after["measured"] == before["measured"]
    assert set(after["delta"].values()) == {0.0}
    assert metric_value(chain.metrics(same.stage_run_id), "pairwise_accuracy") == before["pairwise"]["accuracy"]

    # Another judge (the policy checkpoint) is measured afresh.
    other = chain.run("evaluate", chain.configs["evaluate"],
                      {**inputs, "judge": chain.outcomes["policy_round"].outputs["policy"]}, chain.new_iteration())
    assert len(loads) == 1
    assert json.loads(chain.path(other.outputs["metrics"]).read_text())["measured"] != before["measured"]


def _stored_evaluate_config(store: Store) -> dict:
    from sqlalchemy import select

    from selfrefine.storage.schema import StageRun

    with store.session() as s:
        return s.scalars(select(StageRun.config).where(StageRun.stage == "evaluate")
                         .order_by(StageRun.started_at.desc())).first()


def test_eval_reads_a_judge_as_its_judge_json_says_unless_told_otherwise(capsys, tmp_path):
    import shutil

    from selfrefine import settings
    from selfrefine.models.judge_info import trained_reading, write_judge_info
    from selfrefine.models.loading import resolve_model

    judge = tmp_path / "absolute-judge"
    shutil.copytree(resolve_model("tiny"), judge)
    write_judge_info(judge, "generative", reading=trained_reading(["hindsight", "absolute"]))
    data = str(FIXTURES / "pairs.jsonl")
    store = Store(settings.db_url())
    code, _, err = _cli(capsys, "eval", "--judge", str(judge), "--data", data, "--dtype", "float32", "--json")
    assert code == 0, err
    used = _stored_evaluate_config(store)
    assert (used["pairwise_verdicts"], used["bestofn_scoring"]) == ("absolute", "yes_log_odds")
    code, _, err = _cli(capsys, "eval", "--judge", str(judge), "--data", data, "--dtype", "float32", "--json",
                        "--set", "pairwise_verdicts=prompt")
    assert code == 0, err
    assert _stored_evaluate_config(store)["pairwise_verdicts"] == "prompt"
    # A bad override is one line, before anything is stored.
    before = row_counts(store)
    code, out, err = _cli(capsys, "eval", "--judge", str(judge), "--data", data, "--set", "pairwise_verdicts=both")
    assert code == 2 and out == "" and err.startswith("selfrefine: --set: field 'evaluate.pairwise_verdicts'")
    assert row_counts(store) == before


def test_a_judge_trained_without_the_pairwise_prompt_records_the_absolute_reading():
    from selfrefine.models.judge_info import trained_reading

    assert trained_reading(["hindsight", "absolute"]) == {"pairwise_verdicts": "absolute",
                                                          "bestofn_scoring": "yes_log_odds"}
    assert trained_reading(["hindsight", "absolute", "pairwise"]) == {"pairwise_verdicts": "prompt",
                                                                      "bestofn_scoring": "absolute"}


def test_eval_reads_a_judge_shaped_like_the_quality_presets_as_the_run_does(capsys, tmp_path):
    """The quality preset's judge: a reward head for helpful, a generative judge trained on the absolute
    prompt only for harmless. `eval --judge` reads it as the run's evaluate stage does, so both give
    one stage key and one held-out accuracy."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfrefine import settings
    from selfrefine.flows.config import load_preset
    from selfrefine.models.judge_info import judge_reading, trained_reading, write_judge_info
    from selfrefine.models.loading import resolve_model
    from selfrefine.models.reward_head import RewardHeadModel

    preset = load_preset("quality")
    tiny = resolve_model("tiny")
    judge = tmp_path / "quality-shaped-judge"
    shutil.copytree(tiny, judge / "harmless")
    write_judge_info(judge / "harmless", "generative", reading=trained_reading(preset.train_judge.example_kinds))
    head = RewardHeadModel.for_training(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), tiny,
                                        "linear", 16, seed=3)
    head.save_pretrained(judge / "helpful")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(judge / "helpful")
    write_judge_info(judge, "per_dimension", judge_kinds={"harmless": "generative", "helpful": "reward_head"},
                     dimensions={"harmless": "harmless", "helpful": "helpful"}, policy="harmless")
    run_reading = {"pairwise_verdicts": preset.evaluate.pairwise_verdicts,
                   "bestofn_scoring": preset.evaluate.bestofn_scoring}
    assert judge_reading(judge) == run_reading == {"pairwise_verdicts": "absolute", "bestofn_scoring": "yes_log_odds"}

    data = str(FIXTURES / "pairs.jsonl")
    store = Store(settings.db_url())
    code, out, err = _cli(capsys, "eval", "--judge", str(judge), "--data", data, "--dtype", "float32", "--json")
    assert code == 0, err
    as_read = json.loads(out)
    used = _stored_evaluate_config(store)
    assert {k: used[k] for k in run_reading} == run_reading
    # Told the run's settings explicitly, eval finds the same stage run: the same key, the same figures.
    runs_before = row_counts(store)["stage_runs"]
    code, out, err = _cli(capsys, "eval", "--judge", str(judge), "--data", data, "--dtype", "float32", "--json",
                          *[f"--set={k}={v}" for k, v in run_reading.items()])
    assert code == 0, err
    assert row_counts(store)["stage_runs"] == runs_before
    assert json.loads(out)["pairwise"]["accuracy"] == as_read["pairwise"]["accuracy"]
