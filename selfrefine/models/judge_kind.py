"""`load_judge`: the one way stages load a judge, as the class the directory's `judge.json` names.

The factory sits above the judge classes and the `judge.json` format (`judge_info`): it imports
them, none of them imports it. The kinds it dispatches on:

- `per_dimension` → `per_dimension_judge.PerDimensionJudge`, each sub-judge loaded by this factory;
- `reward_head` → `reward_judge.RewardHeadJudge`;
- no `judge.json` and a `…ForSequenceClassification` config (a public reward model) →
  `sequence_classifier_judge.SequenceClassifierJudge`;
- anything else (`generative`, a base model, an alias, a hub id) → `judge.Judge`.

The judge classes are imported when a judge of their kind is loaded, so that importing the factory
costs no torch import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from selfrefine.models.judge_info import JUDGE_INFO, PER_DIMENSION, read_judge_info
from selfrefine.models.judge_types import JudgeProtocol
from selfrefine.models.loading import resolve_model


def is_sequence_classifier(resolved: str) -> bool:
    """Whether a resolved model (directory or hub id) is a `…ForSequenceClassification` model, e.g. a
    public reward model such as Skywork-Reward-V2: by its config.json's `architectures`, read with
    `transformers.AutoConfig` for a hub id. A config that cannot be read answers False (the
    generative loader then reports the problem)."""
    path = Path(resolved)
    try:
        if path.is_dir():
            architectures = json.loads((path / "config.json").read_text()).get("architectures")
        else:
            from transformers import AutoConfig

            architectures = AutoConfig.from_pretrained(resolved).architectures
    except Exception:  # noqa: BLE001 - missing/corrupt config, hub unreachable: not decidable here
        return False
    return any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in architectures or ())


def load_judge(model: str, *, dtype: str = "auto", device: str = "auto",
               dimension_extra: dict[str, str] | None = None, batch_size: int = 16, max_length: int = 1024,
               logprob_space: Literal["answers", "vocab"] = "answers") -> JudgeProtocol:
    """The judge for `model` (alias, directory or hub id) with the class its `judge.json` names.

    All classes score through the same interface (`score_absolute`, `compare`); `logprob_space`
    only applies to the generative judge, whose scores are log-probabilities. A model without
    `judge.json` whose config names a `…ForSequenceClassification` architecture (a public reward
    model) loads as a `SequenceClassifierJudge`.
    """
    resolved = resolve_model(model)
    info = read_judge_info(resolved) if Path(resolved).is_dir() else {"kind": "generative"}
    kind = info["kind"]
    if kind == PER_DIMENSION:
        from selfrefine.models.per_dimension_judge import PerDimensionJudge

        def load_sub(path: str) -> JudgeProtocol:
            return load_judge(path, dtype=dtype, device=device, dimension_extra=dimension_extra,
                              batch_size=batch_size, max_length=max_length, logprob_space=logprob_space)

        return PerDimensionJudge.from_directory(resolved, info, load_sub, dimension_extra)
    if kind == "reward_head":
        from selfrefine.models.reward_judge import RewardHeadJudge

        return RewardHeadJudge.from_pretrained(resolved, dtype=dtype, device=device, dimension_extra=dimension_extra,
                                               batch_size=batch_size, max_length=max_length)
    if kind == "generative" and not (Path(resolved) / JUDGE_INFO).is_file() and is_sequence_classifier(resolved):
        from selfrefine.models.sequence_classifier_judge import SequenceClassifierJudge

        return SequenceClassifierJudge.from_pretrained(resolved, dtype=dtype, device=device,
                                                       dimension_extra=dimension_extra, batch_size=batch_size,
                                                       max_length=max_length)
    from selfrefine.models.judge import Judge

    return Judge.from_pretrained(model, dtype=dtype, device=device, dimension_extra=dimension_extra,
                                 batch_size=batch_size, max_length=max_length, logprob_space=logprob_space)
