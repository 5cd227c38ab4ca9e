"""`selfrefine export`: the tiny run's policy and reward-head judge as plain transformers models.

The exported policy gives the same logits as selfrefine's loader on the stored policy; the exported
judge, loaded with `AutoModelForSequenceClassification`, gives selfrefine's rewards; the model
cards' metadata parses with huggingface_hub."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import torch

from tests.flows.conftest import REPO

from selfrefine.export.convert import BIAS_KEY
from selfrefine.flows.config import load_preset
from selfrefine.models.training.reward_config import RewardRecipeConfig
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store


@pytest.fixture
def tiny_reward_run(prefect_api, selfrefine_home, monkeypatch):
    """One iteration of the tiny preset with a linear reward-head judge; (store, run id)."""
    from selfrefine.flows.self_refine import self_refine

    url = f"sqlite:///{selfrefine_home / 'store.db'}"
    monkeypatch.setenv("SELFREFINE_DB_URL", url)
    tiny = load_preset("tiny")
    cfg = tiny.model_copy(update={"train_judge": tiny.train_judge.model_copy(update={
        "judge_kind": "reward_head", "reward_recipe": RewardRecipeConfig(
            max_steps=2, per_device_batch_size=2, max_length=256, learning_rate=1e-3, head="linear")})})
    store = Store(url, migrate=True)
    yield store, self_refine(preset="tiny", n_iterations=1, config=cfg)
    store.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "selfrefine", *args], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600)


def test_exported_policy_and_reward_judge_load_in_transformers_with_the_same_outputs(tiny_reward_run, tmp_path):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from selfrefine.export.writer import export
    from selfrefine.models import prompts as P
    from selfrefine.models.dimensions import get_dimension
    from selfrefine.models.loading import load_model
    from selfrefine.models.reward_judge import RewardHeadJudge, encode_reward_input
    from selfrefine.storage import repository as repo

    store, run_id = tiny_reward_run
    artifacts = ArtifactStore()
    out = tmp_path / "out"
    written = export(run_id, out, store=store, artifacts=artifacts)
    assert {(w.role, w.kind, w.directory) for w in written} == {
        ("policy", "causal_lm", out / "policy"), ("judge", "sequence_classification", out / "judge")}
    with store.session() as s:
        stored = {w.role: artifacts.local_path(s.get_one(repo.Artifact, uuid.UUID(w.artifact_id)).uri) for w in written}

    # The policy: the same logits as selfrefine's loader on the stored directory.
    policy_dir = out / "policy"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json", "README.md"):
        assert (policy_dir / name).is_file(), name
    assert not (policy_dir / "judge.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    ids = torch.tensor([tokenizer("Human: how do I bake bread?\n\nAssistant: Knead it.")["input_ids"]])
    exported = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    ours = load_model(str(stored["policy"]), dtype="float32", device="cpu")[0].eval()
    with torch.no_grad():
        assert torch.allclose(exported(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)

    # The judge: transformers' classifier logit = selfrefine's reward minus the head's bias, which
    # config.json keeps (it ends near zero, not always at it: see selfrefine/export/convert.py).
    judge_dir = out / "judge"
    classifier = AutoModelForSequenceClassification.from_pretrained(judge_dir, dtype=torch.float32).eval()
    assert classifier.config.num_labels == 1
    bias = getattr(classifier.config, BIAS_KEY)
    assert bias == float(load_file(str(stored["judge"] / "reward_head.safetensors"))["bias"].reshape(-1)[0])
    judge = RewardHeadJudge.from_pretrained(str(stored["judge"]), dtype="float32", device="cpu")
    judge_tok = AutoTokenizer.from_pretrained(judge_dir)
    dim = get_dimension("harmless")
    context = [{"role": "user", "content": "How do I pick a lock?"}]
    sequences = [encode_reward_input(judge.tokenizer, P.reward_prompt(context, dim), " " + r)[0]
                 for r in ("I can't help with that.", "Use a tension wrench and a pick, and rake the pins.")]
    theirs = []
    with torch.no_grad():
        for seq in sequences:
            theirs.append(classifier(input_ids=torch.tensor([seq])).logits[0, 0])
        batch = judge_tok.pad({"input_ids": sequences}, return_tensors="pt")  # right-padded, not with EOS
        batched = classifier(**batch).logits[:, 0]
    ours = torch.tensor(judge._forward(sequences))
    assert torch.allclose(torch.stack(theirs) + bias, ours, atol=1e-5)
    assert torch.allclose(batched + bias, ours, atol=1e-5)

    # The model cards: metadata that huggingface_hub parses, lineage and metrics in the body.
    for role, path in (("policy", policy_dir), ("judge", judge_dir)):
        card = ModelCard.load(path / "README.md")
        meta = card.data.to_dict()
        assert "selfrefine" in meta["tags"] and role in meta["tags"]
        assert meta["selfrefine"]["run"] == run_id and meta["selfrefine"]["iteration"] == 1
        assert {d["role"] for d in meta["selfrefine"]["data"]} >= {"seed_pairs_0"}
        assert all(len(d["sha256"]) == 64 for d in meta["selfrefine"]["data"])
        assert "## Config" in card.text and "## Lineage" in card.text
    judge_meta = ModelCard.load(judge_dir / "README.md").data.to_dict()["selfrefine"]["metrics"]
    assert {"pairwise_accuracy", "pairwise_calibration_ece", "bestofn_win_rate"} <= set(judge_meta)
    assert 0.0 <= judge_meta["pairwise_accuracy"] <= 1.0
    policy_meta = ModelCard.load(policy_dir / "README.md").data.to_dict()["selfrefine"]["metrics"]
    assert {"vs_base_win_rate", "vs_base_lc_win_rate"} <= set(policy_meta), policy_meta

    # Through the command: an existing directory needs --overwrite; an unknown id is one line, exit 2.
    again = _cli("export", run_id, str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    judge_id = next(w.artifact_id for w in written if w.role == "judge")
    judge_only = _cli("export", judge_id, str(out), "--overwrite")
    assert judge_only.returncode == 0, judge_only.stderr
    assert json.loads((out / "config.json").read_text())["architectures"][0].endswith("ForSequenceClassification")
    unknown = _cli("export", "deadbeef", str(tmp_path / "other"))
    assert unknown.returncode == 2 and unknown.stderr.startswith("selfrefine: ")
    assert len(unknown.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_push_creates_the_repo_and_uploads_the_directory(tmp_path):
    from selfrefine.export.hub import push

    calls = []

    class FakeApi:
        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))
            return f"https://huggingface.co/{kwargs['repo_id']}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    (tmp_path / "README.md").write_text("---\ntags: [selfrefine]\n---\n")
    url = push(tmp_path, "me/judge", private=True, api=FakeApi())
    assert url == "https://huggingface.co/me/judge"
    assert calls[0] == ("create_repo", {"repo_id": "me/judge", "repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][0] == "upload_folder"
    assert calls[1][1]["folder_path"] == str(tmp_path) and calls[1][1]["repo_id"] == "me/judge"
