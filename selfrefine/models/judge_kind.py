"""Which kind of judge a model directory holds, and `load_judge`, the one way stages load a judge.

`train_judge` writes `judge.json` into every judge it saves: `{"kind": "generative"}` for the
decoder judge that answers Yes/No and A/B, `{"kind": "reward_head", "head": {...}}` for a backbone
with a scalar head. A directory without the file (a base model, an alias, a hub id, a judge saved
before the file existed) is a generative judge. A judge trained per dimension is a directory of
such judges, one per dimension and each of its own kind, with `{"kind": "per_dimension",
"judge_kinds": …, "dimensions": …}` (see `per_dimension_judge`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from selfrefine.errors import ModelLoadError

JUDGE_INFO = "judge.json"
JudgeKind = Literal["generative", "reward_head"]
JUDGE_KINDS: tuple[str, ...] = ("generative", "reward_head")
PER_DIMENSION = "per_dimension"
STORED_KINDS = (*JUDGE_KINDS, PER_DIMENSION)  # what a judge.json may name


def write_judge_info(directory: str | Path, kind: JudgeKind | Literal["per_dimension"], **details: Any) -> Path:
    """Record the judge kind (and whatever its loader needs) in `directory`."""
    if kind not in STORED_KINDS:
        raise ValueError(f"judge kind must be one of {STORED_KINDS}, got {kind!r}")
    path = Path(directory) / JUDGE_INFO
    path.write_text(json.dumps({"kind": kind, **details}, indent=2, sort_keys=True) + "\n")
    return path


def read_judge_info(directory: str | Path) -> dict[str, Any]:
    """The judge info of a model directory; `{"kind": "generative"}` when it has none."""
    path = Path(directory) / JUDGE_INFO
    if not path.is_file():
        return {"kind": "generative"}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON ({exc}); the judge directory is corrupted: "
                             "train the judge again") from None
    if not isinstance(info, dict) or info.get("kind") not in STORED_KINDS:
        raise ModelLoadError(f"{path} names judge kind {info.get('kind') if isinstance(info, dict) else info!r}; "
                             f"known kinds are {', '.join(STORED_KINDS)}. Fix: train the judge "
                             "again with this selfrefine version")
    return info


def kinds_by_dimension(directory: str | Path) -> dict[str | None, JudgeKind]:
    """Which kind of judge scores each dimension: `{None: kind}` for a single judge (it scores every
    dimension), `{dimension: kind}` for a per-dimension judge (each sub-judge's own kind)."""
    info = read_judge_info(directory)
    if info["kind"] != PER_DIMENSION:
        return {None: info["kind"]}
    from selfrefine.models.per_dimension_judge import sub_judge_dirs

    return {dim: read_judge_info(path)["kind"] for dim, path in sub_judge_dirs(directory, info).items()}


def as_policy(model: str) -> str:
    """The model to generate with and fine-tune when `model` serves as the policy (the first
    iteration's policy is the judge): the model itself, or for a per-dimension judge the sub-judge
    its `judge.json` names as `policy` (the one trained on the most pairs)."""
    path = Path(model)
    if not path.is_dir():
        return model
    info = read_judge_info(path)
    if info["kind"] != PER_DIMENSION:
        return model
    from selfrefine.models.per_dimension_judge import sub_judge_dirs

    subs = sub_judge_dirs(path, info)
    if info.get("policy") not in subs:
        raise ModelLoadError(f"{path / JUDGE_INFO} names no policy sub-judge among {', '.join(subs)}; a per-dimension "
                             "judge used as the policy needs one: train the judge again")
    return str(subs[info["policy"]])


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
               logprob_space: Literal["answers", "vocab"] = "answers"):
    """The judge for `model` (alias, directory or hub id) with the class its `judge.json` names.

    All classes score through the same interface (`score_absolute`, `compare`); `logprob_space`
    only applies to the generative judge, whose scores are log-probabilities. A model without
    `judge.json` whose config names a `…ForSequenceClassification` architecture (a public reward
    model) loads as a `SequenceClassifierJudge`.
    """
    from selfrefine.models.loading import resolve_model

    resolved = resolve_model(model)
    info = read_judge_info(resolved) if Path(resolved).is_dir() else {"kind": "generative"}
    kind = info["kind"]
    if kind == PER_DIMENSION:
        from selfrefine.models.per_dimension_judge import PerDimensionJudge

        def load_sub(path: str):
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
