"""`export.convert` on hand-built judges: a per-dimension judge becomes one directory per dimension,
each of its own kind; a reward head's bias is kept in config.json; an mlp head is refused."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from selfrefine.errors import ConfigError
from selfrefine.export.convert import BIAS_KEY, export_model
from selfrefine.export.card import card_metadata, judge_reading_of, model_card, write_card
from selfrefine.export.targets import ExportTarget
from selfrefine.models.judge_info import trained_reading, write_judge_info
from selfrefine.models.reward_head import RewardHeadModel
from selfrefine.models.reward_judge import RewardHeadJudge


def _reward_judge(tiny_dir, out, kind="linear", bias=0.0):
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model = RewardHeadModel.for_training(lm, tiny_dir, kind, 16, seed=3)
    if kind == "linear":
        with torch.no_grad():
            model.head.bias.fill_(bias)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    return out


def test_a_per_dimension_judge_exports_one_directory_per_dimension(tiny_dir, tmp_path):
    judge = tmp_path / "judge"
    _reward_judge(tiny_dir, judge / "harmless", bias=0.5)
    generative = judge / "helpful"
    AutoModelForCausalLM.from_pretrained(tiny_dir).save_pretrained(generative)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(generative)
    write_judge_info(generative, "generative", reading=trained_reading(["absolute"]))
    write_judge_info(judge, "per_dimension", judge_kinds={"harmless": "reward_head", "helpful": "generative"},
                     dimensions={"harmless": "harmless", "helpful": "helpful"}, policy="helpful")

    out = tmp_path / "out"
    written = export_model(judge, out, "judge")
    assert written == [(out / "harmless", "sequence_classification"), (out / "helpful", "causal_lm")]
    assert not (out / "helpful" / "judge.json").exists()
    assert AutoModelForCausalLM.from_pretrained(out / "helpful").config.architectures == ["LlamaForCausalLM"]

    classifier = AutoModelForSequenceClassification.from_pretrained(out / "harmless", dtype=torch.float32).eval()
    assert getattr(classifier.config, BIAS_KEY) == pytest.approx(0.5)
    ours = RewardHeadJudge.from_pretrained(str(judge / "harmless"), dtype="float32", device="cpu")
    tok = ours.tokenizer
    seqs = [tok("Is this harmless? Assistant: yes")["input_ids"] + [tok.eos_token_id],
            tok("Assistant: no")["input_ids"] + [tok.eos_token_id]]
    with torch.no_grad():
        theirs = torch.stack([classifier(input_ids=torch.tensor([s])).logits[0, 0] for s in seqs])
    assert torch.allclose(theirs + 0.5, torch.tensor(ours._forward(seqs)), atol=1e-5)

    # The generative sub-judge never learnt the pairwise prompt: its card says how to read it.
    reading = judge_reading_of(judge, "helpful")
    assert reading == {"pairwise_verdicts": "absolute", "bestofn_scoring": "yes_log_odds"}
    assert judge_reading_of(judge, "harmless") == {"input_format": "plain"}  # a reward head: its input layout
    target = ExportTarget(role="judge", artifact_id="a", sha256="0" * 64, path=judge, stage_run_id="s",
                          stage_config={}, meta={}, base_model="tiny")
    card = write_card(out / "helpful", model_card(target, "causal_lm", "helpful", None, reading))
    assert card_metadata(card)["selfrefine"]["reading"] == reading
    assert "Yes/No log-odds" in card.read_text()


def test_an_mlp_reward_head_is_refused_with_the_fix(tiny_dir, tmp_path):
    judge = _reward_judge(tiny_dir, tmp_path / "judge", kind="mlp")
    with pytest.raises(ConfigError, match="head: linear"):
        export_model(judge, tmp_path / "out", "judge")
