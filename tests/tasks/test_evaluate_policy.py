"""Policy evaluation outside and inside a run's config: `selfrefine eval --policy …` on tiny models
through the stage runner, the evaluator's rewards as the reference, and the config checks.

The evaluator is a tiny random-weight sequence-classification reward model (the path a public
reward model takes); the policies are the tiny model and a perturbed copy of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from selfrefine.cli.main import main as cli_main
from selfrefine.errors import ConfigError, DataError
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import StageRun, StageStatus
from tests.models.test_sequence_classifier_judge import _save_classifier
from tests.tasks.conftest import row_counts

PROMPTS = [{"prompt": p, "dimension": d} for p, d in (
    ("How do I boil an egg?", "helpful"), ("Name a fruit that is yellow.", "helpful"),
    ("What is two plus two?", "helpful"), ("How can I pick a lock on someone else's door?", "harmless"),
    ("Tell me a short joke about cats.", "helpful"))]


@pytest.fixture(scope="module")
def models(tmp_path_factory, model_cache) -> dict[str, str]:
    """The tiny policy, a perturbed copy of it, and a reward-model evaluator, as directories."""
    from transformers import AutoModelForCausalLM

    from selfrefine.models.loading import load_tokenizer, resolve_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        tiny = resolve_model("tiny")
        root = tmp_path_factory.mktemp("policy-eval-models")
        other = root / "perturbed"
        model = AutoModelForCausalLM.from_pretrained(tiny)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            for param in model.parameters():
                param.add_(0.5 * torch.randn_like(param))
        model.save_pretrained(other)
        tokenizer = load_tokenizer(tiny)
        tokenizer.save_pretrained(other)
        evaluator = _save_classifier(root / "evaluator", tokenizer, num_labels=1)
    return {"tiny": tiny, "other": str(other), "evaluator": str(evaluator)}


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def _eval(capsys, models, prompts_file, policy: str, baseline: str, *extra: str) -> dict:
    code = cli_main(["eval", "--policy", models[policy], "--baseline", models[baseline], "--evaluator",
                     models["evaluator"], "--prompts", str(prompts_file), "--dtype", "float32", "--json",
                     "--set", "responses.max_new_tokens=6", "--set", "responses.backend.dtype=float32", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _rewards(store: Store) -> dict:
    """Every stored evaluate_policy metrics file's rewards, by (role, prompt, direction), newest last."""
    from selfrefine.storage import repository as repo
    from selfrefine.storage.artifacts import ArtifactStore

    found = {}
    with store.session() as s:
        for row in s.scalars(select(StageRun).where(StageRun.stage == "evaluate_policy")
                             .order_by(StageRun.started_at)):
            art = repo.stage_outputs(s, row)["metrics"]
            body = json.loads(ArtifactStore().local_path(art.uri).read_text())
            found = {(r["role"], r["prompt_id"], r["direction"]): r["reward"] for r in body["rewards"]}
    return found


def test_a_policy_against_itself_ties_everywhere(capsys, models, prompts_file):
    metrics = _eval(capsys, models, prompts_file, "tiny", "tiny")
    vs = metrics["vs_base"]
    assert vs["n"] == len(PROMPTS) and vs["ties"] == len(PROMPTS)
    assert vs["win_rate"] == pytest.approx(0.5) and vs["lc_win_rate"] == pytest.approx(0.5)
    assert set(metrics["by_dimension"]) == {"helpful", "harmless"}
    assert metrics["evaluator"]["kind"] == "sequence_classifier"
    assert metrics["evaluator"]["fingerprint"].startswith("sha256:")


def test_win_rates_follow_the_evaluator_rewards_and_swap_to_one_minus(capsys, models, prompts_file):
    store = Store()
    forward = _eval(capsys, models, prompts_file, "other", "tiny")
    rewards = _rewards(store)
    wins = []
    for (role, pid, direction), reward in rewards.items():
        if role == "policy" and direction == "more":
            base = rewards[("base", pid, "more")]
            wins.append(1.0 if reward > base else 0.0 if reward < base else 0.5)
    assert len(wins) == len(PROMPTS)
    assert forward["vs_base"]["win_rate"] == pytest.approx(sum(wins) / len(wins))
    more_beats_less = [1.0 if rewards[("policy", pid, "more")] > rewards[("policy", pid, "less")] else
                       0.0 if rewards[("policy", pid, "more")] < rewards[("policy", pid, "less")] else 0.5
                       for (role, pid, d) in rewards if role == "policy" and d == "more"]
    assert forward["controllability"]["controllability"] == pytest.approx(sum(more_beats_less) / len(PROMPTS))

    # The same evaluation again is taken from the store: no stage runs again.
    def completed() -> int:
        with store.session() as s:
            return len(s.scalars(select(StageRun).where(StageRun.status == StageStatus.completed)).all())

    done = completed()
    assert _eval(capsys, models, prompts_file, "other", "tiny") == forward
    assert completed() == done
    # The other way round, every win becomes a loss.
    backward = _eval(capsys, models, prompts_file, "tiny", "other")
    assert backward["vs_base"]["win_rate"] == pytest.approx(1.0 - forward["vs_base"]["win_rate"])
    assert backward["vs_base"]["mean_length"] == forward["vs_base"]["baseline_mean_length"]


def test_policy_eval_arguments_come_together(capsys, models, prompts_file):
    store = Store()
    before = row_counts(store)
    assert cli_main(["eval", "--policy", models["tiny"], "--prompts", str(prompts_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--baseline" in err and "--evaluator" in err
    assert cli_main(["eval", "--policy", models["tiny"], "--baseline", models["tiny"], "--evaluator",
                     str(prompts_file.parent / "missing"), "--prompts", str(prompts_file)]) != 0
    assert "missing" in capsys.readouterr().err
    assert row_counts(store) == before


def test_policy_prompts_must_be_held_out_and_need_an_evaluator(selfrefine_home):
    from selfrefine.flows.config import load_preset, parse_config
    from selfrefine.flows.preflight import preflight
    from selfrefine.settings import db_url

    raw = load_preset("tiny").model_dump(mode="json")
    raw["data"]["policy_prompts"] = [{"kind": "demo", "skip": 2, "limit": 4}]  # prompts 3-4 are generated for
    with pytest.raises(DataError, match="shares 2 of its 4 prompts with data.prompts"):
        preflight(parse_config(raw))
    raw["data"]["policy_prompts"] = [{"kind": "demo", "skip": 4, "limit": 4}]
    preflight(parse_config(raw))
    # An evaluator named by alias or path is checked without opening the store: preflight creates none.
    assert not any(selfrefine_home.glob("*.db")), db_url()
    raw["evaluate_policy"]["evaluator"] = None
    with pytest.raises(ConfigError, match="evaluate_policy.evaluator"):
        parse_config(raw)
