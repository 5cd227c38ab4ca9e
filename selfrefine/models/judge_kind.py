"""Which kind of judge a model directory holds, and `load_judge`, the one way stages load a judge.

`train_judge` writes `judge.json` into every judge it saves: `{"kind": "generative"}` for the
decoder judge that answers Yes/No and A/B, `{"kind": "reward_head", "head": {...}}` for a backbone
with a scalar head. A directory without the file (a base model, an alias, a hub id, a judge saved
before the file existed) is a generative judge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from selfrefine.errors import ModelLoadError

JUDGE_INFO = "judge.json"
JudgeKind = Literal["generative", "reward_head"]
JUDGE_KINDS: tuple[str, ...] = ("generative", "reward_head")


def write_judge_info(directory: str | Path, kind: JudgeKind, **details: Any) -> Path:
    """Record the judge kind (and whatever its loader needs) in `directory`."""
    if kind not in JUDGE_KINDS:
        raise ValueError(f"judge kind must be one of {JUDGE_KINDS}, got {kind!r}")
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
    if not isinstance(info, dict) or info.get("kind") not in JUDGE_KINDS:
        raise ModelLoadError(f"{path} names judge kind {info.get('kind') if isinstance(info, dict) else info!r}; "
                             f"known kinds are {', '.join(JUDGE_KINDS)}. Fix: train the judge again with this "
                             "selfrefine version")
    return info


def load_judge(model: str, *, dtype: str = "auto", device: str = "auto",
               dimension_extra: dict[str, str] | None = None, batch_size: int = 16, max_length: int = 1024,
               logprob_space: Literal["answers", "vocab"] = "answers"):
    """The judge for `model` (alias, directory or hub id) with the class its `judge.json` names.

    Both classes score through the same interface (`score_absolute`, `compare`); `logprob_space`
    only applies to the generative judge, whose scores are log-probabilities.
    """
    from selfrefine.models.loading import resolve_model

    resolved = resolve_model(model)
    kind = read_judge_info(resolved)["kind"] if Path(resolved).is_dir() else "generative"
    if kind == "reward_head":
        from selfrefine.models.reward_judge import RewardHeadJudge

        return RewardHeadJudge.from_pretrained(resolved, dtype=dtype, device=device, dimension_extra=dimension_extra,
                                               batch_size=batch_size, max_length=max_length)
    from selfrefine.models.judge import Judge

    return Judge.from_pretrained(model, dtype=dtype, device=device, dimension_extra=dimension_extra,
                                 batch_size=batch_size, max_length=max_length, logprob_space=logprob_space)
