"""`JudgeSettings`: how a stage loads and runs a judge for scoring."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JudgeSettings(BaseModel):
    """How a stage loads and runs the judge for scoring."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = bfloat16 where the hardware supports it natively.")
    device: str = Field("auto", json_schema_extra={"affects_output": False},
                        description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    batch_size: int = Field(16, ge=1, json_schema_extra={"affects_output": False},
                            description="Prompts scored per forward pass.")
    max_length: int = Field(1024, ge=32, description=(
        "Longest judge input in tokens; a longer one loses its oldest context turns, then its responses' "
        "tails (counted as the stage metric responses_truncated)."))
    logprob_space: Literal["answers", "vocab"] = Field("answers", description=(
        "Log-probability in absolute scores: restricted to the two answers, or the full vocabulary "
        "(generative judges; a reward-head judge's score is its reward)."))

    def load(self, model_dir: str, dimension_definitions: dict[str, str] | None = None):
        """The judge in `model_dir`, generative or reward head as its `judge.json` says."""
        from selfrefine.models.judge_kind import load_judge

        return load_judge(model_dir, dtype=self.dtype, device=self.device,
                          dimension_extra=dimension_definitions or None, batch_size=self.batch_size,
                          max_length=self.max_length, logprob_space=self.logprob_space)
