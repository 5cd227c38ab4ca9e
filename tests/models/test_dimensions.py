"""Dimension registry: built-in definitions, aliases, user-defined dimensions and the unknown-name error."""

from __future__ import annotations

import pytest

from selfrefine.errors import ConfigError, UnknownDimensionError
from selfrefine.models.dimensions import Dimension, get_dimension, known_dimensions

REQUIRED = ["helpful", "harmless", "honest", "quality", "instruction-following", "informative",
            "coherent", "well-formatted", "accurate", "creative", "humour", "summary-relevance"]


@pytest.mark.parametrize("name", REQUIRED)
def test_builtin_dimensions_are_verbalised_definitions(name):
    dim = get_dimension(name)
    assert dim.name == name
    assert dim.definition.startswith(f"In conversation, a {dim.adjective} Assistant will ")
    assert dim.definition.endswith(".")
    assert dim.negative and dim.negative != dim.adjective
    assert name in known_dimensions()


def test_names_are_normalised_and_aliases_resolve():
    assert get_dimension("Instruction_Following") == get_dimension("instruction-following")
    assert get_dimension("humor").name == "humour"
    assert get_dimension(" Helpful ").name == "helpful"
    assert get_dimension("summarization relevance").adjective == "relevant"


def test_unknown_dimension_lists_known_ones():
    with pytest.raises(UnknownDimensionError) as info:
        get_dimension("sarcastic")
    message = str(info.value)
    assert "'sarcastic'" in message
    for name in REQUIRED:
        assert name in message


def test_extra_dimensions_are_known_and_override_builtin_wording():
    extra = {"concise": "In conversation, a concise Assistant will answer in as few words as needed.",
             "helpful": "In conversation, a helpful Assistant will solve the problem."}
    concise = get_dimension("Concise", extra)
    assert concise == Dimension("concise", extra["concise"], "concise", "not concise")
    reworded = get_dimension("helpful", extra)
    assert reworded.definition == extra["helpful"]
    assert (reworded.adjective, reworded.negative) == ("helpful", "unhelpful")
    assert "concise" in known_dimensions(extra)
    assert "concise" not in known_dimensions()
    with pytest.raises(UnknownDimensionError, match="concise"):
        get_dimension("terse", extra)


def test_extra_dimension_needs_a_definition():
    with pytest.raises(ConfigError, match="non-empty definition"):
        get_dimension("concise", {"concise": "   "})
