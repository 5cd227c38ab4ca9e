"""The model card (`README.md`) of an exported model: YAML metadata, lineage, config and metrics.

The metadata is `huggingface_hub.ModelCardData`: `base_model` (a Hub id; the `packaged` alias is the
SmolLM2 model it converts), `datasets` (the Hub data sets upstream of the model), `tags`, `license`
(read from the base model's own card when it can be read), plus a `selfrefine` block with the
artifact's id and digest and every upstream data set by role, source and sha256.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from selfrefine.export.targets import ExportTarget

log = logging.getLogger(__name__)

# The `packaged` alias is a local conversion of this Hub model (see models/loading.py).
PACKAGED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The figures the card puts first and into its metadata: a judge's held-out accuracy, calibration
# and best-of-n win rate (evaluate's metric names); a policy's win rates and length-controlled win
# rates against each policy it was compared with (evaluate_policy's names ending in `win_rate`).
JUDGE_HEADLINE = ("pairwise_accuracy", "pairwise_calibration_ece", "bestofn_win_rate")


def is_headline(role: str, name: str) -> bool:
    return name in JUDGE_HEADLINE if role == "judge" else name.endswith("win_rate")


def hub_id(name: str | None) -> str | None:
    """`name` as a Hub model id, or None for a local path or the `tiny` test model."""
    if not name:
        return None
    if name == "packaged":
        return PACKAGED_HUB_ID
    if Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or "/" not in name:
        return None
    return name


def base_license(base: str | None) -> str | None:
    """The license in the base model's card, or None when it cannot be read (offline, no card)."""
    if base is None:
        return None
    try:
        from huggingface_hub import ModelCard

        return ModelCard.load(base).data.license
    except Exception as exc:  # noqa: BLE001 - offline, gated or missing card: the card says "unknown"
        log.info("no license read from %s's model card: %s", base, exc)
        return None


def model_card(target: ExportTarget, kind: str, dimension: str | None = None, license: str | None = None,
               reading: dict[str, str] | None = None) -> str:
    """The README.md text of one exported directory (`kind`: causal_lm or sequence_classification);
    `reading` is the one a generative judge records in its judge.json (see `judge_reading`), or a
    reward head's `{"input_format": …}` (see `judge_reading_of`)."""
    from huggingface_hub import ModelCardData

    base = hub_id(target.base_model)
    datasets = sorted({d["source"] for d in target.datasets if hub_id(d["source"])})
    tags = ["selfrefine", target.role, "reward-model" if kind == "sequence_classification" else "text-generation"]
    data = ModelCardData(
        base_model=base, datasets=datasets or None, tags=tags, license=license, library_name="transformers",
        pipeline_tag="text-classification" if kind == "sequence_classification" else "text-generation",
        selfrefine={"artifact": target.artifact_id, "sha256": target.sha256, "role": target.role,
                    "dimension": dimension, "run": target.run_id, "iteration": target.iteration,
                    "stage_run": target.stage_run_id, "parents": target.parents, "data": target.datasets,
                    "metrics": headline(target), "reading": reading},
    )
    return f"---\n{data.to_yaml()}\n---\n\n" + _body(target, kind, dimension, base, license, reading)


def headline(target: ExportTarget) -> dict[str, float]:
    """The headline figures of the model over all its evaluation data, by metric name (the figures
    per source and per dimension stay in the card's table)."""
    return {m["name"]: m["value"] for m in target.metrics if is_headline(target.role, m["name"]) and not m["labels"]}


def judge_reading_of(path: Path, dimension: str | None) -> dict[str, str] | None:
    """The reading recorded by the judge in `path` (its `dimension`'s sub-judge for a per-dimension
    judge): a generative judge's pairwise and best-of-n readings, a reward head's input format."""
    from selfrefine.models.judge_info import (
        PER_DIMENSION, judge_reading, read_judge_info, reward_input_format, sub_judge_dirs,
    )

    info = read_judge_info(path)
    if info["kind"] == PER_DIMENSION:
        path = sub_judge_dirs(path, info)[dimension]
        info = read_judge_info(path)
    if info["kind"] == "reward_head":
        return {"input_format": reward_input_format(info, path)}
    return judge_reading(path)


def _body(target: ExportTarget, kind: str, dimension: str | None, base: str | None, license: str | None,
          reading: dict[str, str] | None) -> str:
    what = f"{target.role} ({dimension})" if dimension else target.role
    lines = [f"# selfrefine {what}", "",
             f"The {what} of iteration {target.iteration} of the selfrefine run `{target.run_name}` "
             f"(`{target.run_id}`), exported from artifact `{target.artifact_id}` (sha256 `{target.sha256}`).",
             f"Base model: `{base or target.base_model}`; license: {license or 'unknown (see the base model)'}.", ""]
    if kind == "sequence_classification":
        layout = ("the conversation in the tokenizer's chat template (the dimension's definition as the system "
                  "turn) up to the assistant header" if (reading or {}).get("input_format") == "chat_template"
                  else "selfrefine's reward prompt (the dimension's definition, the \"Human:\"/\"Assistant:\" turns, "
                  "`<endofcontext>`, \"Assistant:\")")
        lines += ["A reward model: `AutoModelForSequenceClassification` gives one logit per input, the reward "
                  f"read at the final EOS token. Inputs are {layout}, followed by the response and EOS, "
                  "padded on the right. The logit is selfrefine's reward (minus the head's bias "
                  "`selfrefine_reward_bias` in config.json, zero after Bradley–Terry training).", ""]
    if reading and "pairwise_verdicts" in reading:
        pairwise = ("the pairwise A/B prompt in both orders" if reading.get("pairwise_verdicts") == "prompt"
                    else "the difference of the two responses' Yes/No log-odds (it never learnt the pairwise prompt)")
        lines += [f"Read it as it was trained: a pair is judged by {pairwise}; best-of-n ranks by "
                  f"`{reading.get('bestofn_scoring')}` (selfrefine's `evaluate.pairwise_verdicts: "
                  f"{reading.get('pairwise_verdicts')}`, `bestofn_scoring: {reading.get('bestofn_scoring')}`).", ""]
    lines += ["## Lineage", "", "| input | kind | id | sha256 |", "|---|---|---|---|"]
    lines += [f"| {role} | {p['kind']} | `{p['id']}` | `{p['sha256']}` |" for role, p in sorted(target.parents.items())]
    lines += ["", "Data upstream of the model:", "", "| role | source | sha256 |", "|---|---|---|"]
    lines += [f"| {d['role']} | {d['source']} | `{d['sha256']}` |" for d in target.datasets]
    lines += ["", "## Metrics", ""]
    if target.metrics:
        stage = target.metrics[0]["stage"]
        lines += [f"From the `{stage}` stage (latest evaluation of this model).", "",
                  "| metric | labels | value |", "|---|---|---|"]
        # Calibration bins are plot data, not figures to read in a table.
        shown = [m for m in target.metrics if "_bins_" not in m["name"]]
        ordered = sorted(shown, key=lambda m: (not is_headline(target.role, m["name"]), m["name"],
                                               sorted(m["labels"].items())))
        for m in ordered:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(m["labels"].items()))
            lines.append(f"| {m['name']} | {labels} | {m['value']:.4g} |")
    else:
        lines.append("No evaluation of this model is recorded.")
    lines += ["", "## Config", "", f"The stored config of the stage run `{target.stage_run_id}` that made it:", "",
              "```json", json.dumps(target.stage_config, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def write_card(directory: Path, text: str) -> Path:
    path = directory / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def card_metadata(path: Path) -> dict[str, Any]:
    """The YAML metadata of a written card, parsed by huggingface_hub."""
    from huggingface_hub import ModelCard

    return ModelCard.load(path).data.to_dict()
