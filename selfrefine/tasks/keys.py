"""Stage keys: what makes two stage runs interchangeable.

A key hashes the stage name, the stage's code version, the config fields that affect its output,
the input artifacts' digests (by role) and the seed. Config fields that only change how fast or
where a stage runs (batch sizes for scoring, placement, log intervals) are marked with
`json_schema_extra={"affects_output": False}` and left out, so changing them reuses the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from selfrefine.provenance import digest_json


def output_affecting(config: BaseModel) -> dict[str, Any]:
    """The config as JSON, without the fields marked as not affecting the output (recursively)."""
    data = {}
    for name, info in type(config).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("affects_output") is False:
            continue
        value = getattr(config, name)
        data[name] = output_affecting(value) if isinstance(value, BaseModel) else _jsonable(value)
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return output_affecting(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def stage_key(stage: str, code_version: str, config: BaseModel, input_digests: Mapping[str, str],
              seed: int | None) -> str:
    return digest_json({
        "stage": stage,
        "code_version": code_version,
        "config": output_affecting(config),
        "inputs": dict(sorted(input_digests.items())),
        "seed": seed,
    })
