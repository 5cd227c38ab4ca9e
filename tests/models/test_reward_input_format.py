"""A reward head's input layout (`reward_recipe.input_format`): the chat template renders what the
plain layout renders, training records the layout in judge.json, and scoring and export read it."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from selfrefine.data import DataSource, load_pairs
from selfrefine.errors import ConfigError, ModelLoadError
from selfrefine.export.card import card_metadata, judge_reading_of, model_card, write_card
from selfrefine.export.convert import BIAS_KEY, export_model
from selfrefine.export.targets import ExportTarget
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.judge_info import JUDGE_INFO
from selfrefine.models.judge_kind import load_judge
from selfrefine.models.judge_types import AbsoluteItem
from selfrefine.models.loading import load_tokenizer
from selfrefine.models.reward_head import RewardHeadModel
from selfrefine.models.reward_judge import RewardHeadJudge, encode_reward_input, reward_input
from selfrefine.models.training.reward import reward_rows, tokenize_pairs, train_reward_head
from selfrefine.models.training.reward_config import RewardRecipeConfig


@pytest.fixture(scope="module")
def pairs():
    # Multi-turn conversations, so that fitting has older turns to cut.
    return [p for p in load_pairs(DataSource(kind="demo", limit=40)) if len(p.context) >= 3][:4]


@pytest.fixture(scope="module")
def chat_judge_dir(tiny_dir, pairs, tmp_path_factory):
    """A tiny reward head trained one step on the chat-template layout."""
    tokenizer = load_tokenizer(tiny_dir)
    rows, _ = reward_rows(pairs, tokenizer, 256, input_format="chat_template")
    out = tmp_path_factory.mktemp("chat") / "judge"
    config = RewardRecipeConfig(max_steps=1, per_device_batch_size=4, max_length=256, learning_rate=1e-2,
                                input_format="chat_template")
    train_reward_head("tiny", Dataset.from_list(rows), out, config)
    return out


def test_the_chat_layout_is_the_models_template_with_the_definition_as_system_turn(tiny_dir, pairs):
    tokenizer = load_tokenizer(tiny_dir)
    pair = pairs[0]
    dim = get_dimension(pair.dimension)
    fitted = reward_input(pair.context, pair.chosen, dim, tokenizer, 1024, input_format="chat_template")
    expected = tokenizer.apply_chat_template([{"role": "system", "content": dim.definition}, *pair.context],
                                             tokenize=False, add_generation_prompt=True)
    assert fitted.prompt == expected and fitted.completion == pair.chosen and fitted.turns_cut == 0
    ids, prompt_len = encode_reward_input(tokenizer, fitted.prompt, fitted.completion)
    assert tokenizer.decode(ids[prompt_len:-1]) == pair.chosen and ids[-1] == tokenizer.eos_token_id
    plain = reward_input(pair.context, pair.chosen, dim, tokenizer, 1024)
    assert plain.completion == " " + pair.chosen and plain.prompt != fitted.prompt

    # A tight budget cuts the oldest turns, never the definition or the newest turn.
    full = len(encode_reward_input(tokenizer, fitted.prompt, fitted.completion)[0])
    tight = reward_input(pair.context, pair.chosen, dim, tokenizer, full - 1, input_format="chat_template")
    assert tight.turns_cut >= 1
    assert tight.prompt.startswith(expected[: expected.index(dim.definition) + len(dim.definition)])
    assert pair.context[-1]["content"] in tight.prompt and pair.context[0]["content"] not in tight.prompt
    assert len(encode_reward_input(tokenizer, tight.prompt, tight.completion)[0]) <= full - 1


def test_training_rows_and_scoring_encode_the_chat_layout_alike(tiny_dir, pairs):
    tokenizer = load_tokenizer(tiny_dir)
    rows, _ = reward_rows(pairs, tokenizer, 256, input_format="chat_template")
    dataset, _, _ = tokenize_pairs(Dataset.from_list(rows), tokenizer)
    for pair, example in zip(pairs, dataset):
        fitted = reward_input(pair.context, pair.chosen, get_dimension(pair.dimension), tokenizer, 256,
                              input_format="chat_template")
        assert example["chosen_ids"] == encode_reward_input(tokenizer, fitted.prompt, fitted.completion)[0]


def test_a_head_trained_on_the_chat_layout_records_it_and_is_read_in_it(chat_judge_dir, pairs, tiny_dir):
    assert json.loads((chat_judge_dir / JUDGE_INFO).read_text())["input_format"] == "chat_template"
    judge = load_judge(str(chat_judge_dir), dtype="float32", device="cpu")
    assert isinstance(judge, RewardHeadJudge) and judge.input_format == "chat_template"
    items = [AbsoluteItem(p.context, p.chosen, p.dimension) for p in pairs]
    rewards = [r for r, _ in judge.rewards(items)]
    by_hand = [encode_reward_input(judge.tokenizer, *(lambda r: (r.prompt, r.completion))(reward_input(
        it.context, it.response, get_dimension(it.dimension), judge.tokenizer, judge.max_length,
        input_format="chat_template")))[0] for it in items]
    assert rewards == pytest.approx(judge._forward(by_hand), abs=1e-6)
    # Read in the other layout, the same weights give other rewards: the record matters.
    as_plain = RewardHeadJudge(judge.model, judge.tokenizer, input_format="plain")
    assert [r for r, _ in as_plain.rewards(items)] != pytest.approx(rewards, abs=1e-4)

    # A head is continued only in the layout it was trained on.
    lm = AutoModelForCausalLM.from_pretrained(chat_judge_dir, dtype=torch.float32)
    with pytest.raises(ConfigError, match="input_format 'chat_template'"):
        RewardHeadModel.for_training(lm, chat_judge_dir, "linear", 1024, 0, input_format="plain")


def test_the_export_card_says_the_layout_and_the_classifier_gives_the_same_rewards(chat_judge_dir, pairs, tmp_path):
    out = tmp_path / "out"
    [(directory, kind)] = export_model(chat_judge_dir, out, "judge")
    reading = judge_reading_of(chat_judge_dir, None)
    assert reading == {"input_format": "chat_template"}
    target = ExportTarget(role="judge", artifact_id="a", sha256="0" * 64, path=chat_judge_dir, stage_run_id="s",
                          stage_config={}, meta={}, base_model="tiny")
    card = write_card(directory, model_card(target, kind, None, None, reading))
    assert card_metadata(card)["selfrefine"]["reading"] == reading
    assert "chat template" in card.read_text()

    judge = load_judge(str(chat_judge_dir), dtype="float32", device="cpu")
    classifier = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    bias = getattr(classifier.config, BIAS_KEY)
    items = [AbsoluteItem(p.context, p.chosen, p.dimension) for p in pairs[:2]]
    seqs = [encode_reward_input(judge.tokenizer, *(lambda r: (r.prompt, r.completion))(reward_input(
        it.context, it.response, get_dimension(it.dimension), judge.tokenizer, 1024,
        input_format="chat_template")))[0] for it in items]
    with torch.no_grad():
        theirs = [classifier(input_ids=torch.tensor([s])).logits[0, 0].item() + bias for s in seqs]
    assert theirs == pytest.approx([r for r, _ in judge.rewards(items)], abs=1e-4)


def test_the_chat_layout_needs_a_chat_template(tiny_dir, pairs):
    tokenizer = load_tokenizer(tiny_dir)
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="input_format: plain"):
        reward_input(pairs[0].context, pairs[0].chosen, get_dimension(pairs[0].dimension), tokenizer, 256,
                     input_format="chat_template")


def test_an_unknown_recorded_layout_is_a_clear_load_error(chat_judge_dir, tmp_path):
    import shutil

    broken = tmp_path / "judge"
    shutil.copytree(chat_judge_dir, broken)
    info = json.loads((broken / JUDGE_INFO).read_text())
    (broken / JUDGE_INFO).write_text(json.dumps({**info, "input_format": "xml"}))
    with pytest.raises(ModelLoadError, match="reward input format 'xml'"):
        load_judge(str(broken), dtype="float32", device="cpu")
