"""The `self-refine` deployment's parameter form (its schema, as `prefect deploy` builds it) and the
knobs it shows. Fast: no server; the browser test in test_prefect_ui.py fills the real form."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from selfrefine.flows.config import load_preset
from selfrefine.flows.knobs import FIELDS, RunKnobs, apply_knobs


@pytest.fixture(scope="module")
def schema() -> dict:
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    # The entrypoint prefect.yaml names; this is how `prefect deploy` builds the form.
    return parameter_schema_from_entrypoint("selfrefine/flows/self_refine.py:self_refine").model_dump()


def test_the_form_leads_with_preset_iterations_and_knobs_each_described(schema):
    props = schema["properties"]
    assert sorted(props, key=lambda k: props[k]["position"])[:4] == ["preset", "n_iterations", "knobs", "config"]
    assert (props["preset"]["default"], props["n_iterations"]["default"]) == ("cpu", 2)
    assert all(props[k].get("description") for k in props)
    assert "tiny" in props["preset"]["description"] and "cpu" in props["preset"]["description"]
    # The knobs are shown expanded (an object with defaults), not hidden behind a None choice.
    assert props["knobs"]["$ref"] == "#/definitions/RunKnobs" and "anyOf" not in props["knobs"]
    assert props["knobs"]["default"] == {name: None for name in RunKnobs.model_fields}


def test_every_knob_is_described_and_maps_to_a_real_config_field(schema):
    knobs = schema["definitions"]["RunKnobs"]["properties"]
    assert set(knobs) == set(FIELDS)
    assert all("None keeps the preset's value" in k["description"] for k in knobs.values())
    cfg = load_preset("tiny").model_dump()
    for dotted in FIELDS.values():
        node = cfg
        for part in dotted.split("."):
            node = node[part]  # KeyError = a knob pointing nowhere


def test_knobs_set_their_fields_and_leave_the_rest_of_the_preset():
    tiny = load_preset("tiny")
    assert apply_knobs(tiny, RunKnobs()) is tiny
    changed = apply_knobs(tiny, RunKnobs(seed=7, judge_train_steps=3, filter_top_k=2,
                                         policy_method="rejection_sampling"))
    assert (changed.seed, changed.train_judge.recipe.max_steps, changed.score_filter.top_k,
            changed.policy_round.method) == (7, 3, 2, "rejection_sampling")
    before, after = tiny.model_dump(), changed.model_dump()
    for dotted in ("seed", "train_judge.recipe.max_steps", "score_filter.top_k", "policy_round.method"):
        *parents, leaf = dotted.split(".")
        for node in (before, after):
            for part in parents:
                node = node[part]
            node.pop(leaf)
    assert before == after


def test_a_bad_knob_is_refused_with_its_name():
    with pytest.raises(ValidationError, match="filter_top_k"):
        RunKnobs(filter_top_k=0)
    with pytest.raises(ValidationError, match="policy_method"):
        RunKnobs(policy_method="ppo")
    with pytest.raises(ValidationError, match="unknown_knob"):
        RunKnobs.model_validate({"unknown_knob": 1})
