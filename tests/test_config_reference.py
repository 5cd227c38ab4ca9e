"""docs/configuration.md is generated from the pydantic configs and must match them."""

from __future__ import annotations

from selfrefine import config_reference
from selfrefine.config_reference import COMMAND, DOC_PATH, render


def test_configuration_reference_is_current():
    assert DOC_PATH.exists(), f"{DOC_PATH} is missing: run `{COMMAND}`"
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        f"{DOC_PATH} differs from the pydantic configs: run `{COMMAND}` and commit the result")


def test_every_config_field_has_a_description():
    from selfrefine.flows.config import RunConfig

    models = {RunConfig} | {model for model, _ in config_reference._places(RunConfig)}
    missing = sorted(f"{m.__name__}.{name}" for m in models for name, f in m.model_fields.items()
                     if not (f.description or "").strip())
    assert not missing, f"config fields without a description: {missing}"


def test_reference_lists_sections_presets_and_environment():
    from selfrefine.flows.config import config_sections, preset_names

    text = render()
    for section in config_sections():
        assert f"## `{section}`" in text
    for preset in preset_names():
        assert f"| `{preset}` |" in text
    assert "| `SELFREFINE_DB_URL` |" in text
    assert "| `max_new_tokens` | `int`, ≥ 1" in text  # constraints are rendered next to the type


def test_type_names_read_like_annotations():
    from typing import Literal

    assert config_reference.type_name(int | None) == "int | None"
    assert config_reference.type_name(list[Literal["a", "b"]]) == "list['a' | 'b']"
    assert config_reference.type_name(dict[str, str]) == "dict[str, str]"
