"""The `judge.json` file: which kind of judge a model directory holds, and what its loader needs.

`train_judge` writes `judge.json` into every judge it saves: `{"kind": "generative"}` for the
decoder judge that answers Yes/No and A/B, `{"kind": "reward_head", "head": {...}, "input_format":
"plain"|"chat_template"}` for a backbone with a scalar head and the layout it reads (`reward_judge`;
a head without `input_format` reads `plain`). A directory without the file (a base model, an alias, a hub id, a judge saved
before the file existed) is a generative judge. A judge trained per dimension is a directory of
such judges, one per dimension and each of its own kind:

    judge/judge.json     {"kind": "per_dimension",
                          "judge_kinds": {"harmless": "generative", "helpful": "reward_head"},
                          "dimensions": {"harmless": "harmless", "helpful": "helpful"},
                          "policy": "harmless"}
    judge/harmless/      a complete judge directory (its own judge.json, weights, tokenizer)
    judge/helpful/       another, of the same kind or not

`policy` names the sub-judge that generates and is fine-tuned when the judge serves as the first
iteration's policy (`as_policy`).

Reading and writing the file is all this module does: it loads no model, so the model checks,
the stages and the judge classes below the factory (`judge_kind.load_judge`) can all use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from selfrefine.errors import ModelLoadError

JUDGE_INFO = "judge.json"
JudgeKind = Literal["generative", "reward_head"]
JUDGE_KINDS: tuple[str, ...] = ("generative", "reward_head")
PER_DIMENSION = "per_dimension"
RewardInputFormat = Literal["plain", "chat_template"]
REWARD_INPUT_FORMATS: tuple[str, ...] = ("plain", "chat_template")
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


def sub_judge_dirs(directory: str | Path, info: Mapping[str, Any]) -> dict[str, Path]:
    """Dimension → sub-judge directory of a per-dimension judge, checked to exist."""
    root = Path(directory)
    dims = info.get("dimensions")
    if not isinstance(dims, dict) or not dims:
        raise ModelLoadError(f"{root / JUDGE_INFO} is a per-dimension judge without a 'dimensions' mapping; "
                             "train the judge again")
    found = {}
    for dim, sub in sorted(dims.items()):
        path = root / str(sub)
        if Path(str(sub)).is_absolute() or ".." in Path(str(sub)).parts or not path.is_dir():
            raise ModelLoadError(f"{root / JUDGE_INFO}: the sub-judge of dimension '{dim}' should be in "
                                 f"{path}, which is missing; the judge directory is incomplete: train it again")
        found[dim] = path
    return found


def kinds_by_dimension(directory: str | Path) -> dict[str | None, JudgeKind]:
    """Which kind of judge scores each dimension: `{None: kind}` for a single judge (it scores every
    dimension), `{dimension: kind}` for a per-dimension judge (each sub-judge's own kind)."""
    info = read_judge_info(directory)
    if info["kind"] != PER_DIMENSION:
        return {None: info["kind"]}
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
    subs = sub_judge_dirs(path, info)
    if info.get("policy") not in subs:
        raise ModelLoadError(f"{path / JUDGE_INFO} names no policy sub-judge among {', '.join(subs)}; a per-dimension "
                             "judge used as the policy needs one: train the judge again")
    return str(subs[info["policy"]])


# How a judge is read: the evaluate settings that match what it was trained on. A generative judge
# trained without the pairwise A/B prompt has never seen it: its pairwise verdicts come from its
# Yes/No scores of each response, and best-of-n ranks by the Yes/No log-odds.
READINGS = {
    "with_pairwise": {"pairwise_verdicts": "prompt", "bestofn_scoring": "absolute"},
    "absolute_only": {"pairwise_verdicts": "absolute", "bestofn_scoring": "yes_log_odds"},
}


def trained_reading(example_kinds: Sequence[str]) -> dict[str, str]:
    """The reading (evaluate's `pairwise_verdicts` and `bestofn_scoring`) a generative judge
    trained on `example_kinds` is meant for."""
    return dict(READINGS["with_pairwise" if "pairwise" in example_kinds else "absolute_only"])


def judge_reading(directory: str | Path) -> dict[str, str] | None:
    """The reading recorded in a judge directory's judge.json, or None (reward heads, older judges,
    base models). A per-dimension judge is read one way for every dimension: by the absolute scores
    when any generative sub-judge was trained without the pairwise prompt (every judge can be read
    so, and a reward head compares its rewards either way), else as its sub-judges record."""
    info = read_judge_info(directory)
    if info["kind"] != PER_DIMENSION:
        reading = info.get("reading")
        return dict(reading) if isinstance(reading, dict) else None
    readings = [r for r in map(judge_reading, sub_judge_dirs(directory, info).values()) if r is not None]
    if not readings:
        return None
    absolute = READINGS["absolute_only"]
    return dict(absolute) if any(r == absolute for r in readings) else readings[0]


def reward_input_format(info: Mapping[str, Any], where: str | Path) -> RewardInputFormat:
    """The input layout a reward head's judge.json records (`plain` when it records none)."""
    value = info.get("input_format", "plain")
    if value not in REWARD_INPUT_FORMATS:
        raise ModelLoadError(f"{Path(where) / JUDGE_INFO} names reward input format {value!r}; known formats are "
                             f"{', '.join(REWARD_INPUT_FORMATS)}. Fix: train the judge again with this selfrefine version")
    return value
