"""Preference dimensions, verbalised as definitions rather than tags.

The decoder judge reads the definition at the top of every evaluation prompt ("In conversation, a
helpful Assistant will ..."), so a dimension it was never trained on can still be judged from its
wording. `adjective` fills the questions ("Is the last response from Assistant {adjective}?") and the
Chain-of-Hindsight / controllable-generation labels ("A more {adjective} response:"); `negative` is
the opposite word for texts that name the worse response directly ("An unhelpful response:").

Users add or override dimensions in config as name -> definition (`extra`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from selfrefine.errors import ConfigError, UnknownDimensionError


@dataclass(frozen=True)
class Dimension:
    """One preference dimension: its canonical name, definition and the words used in prompts."""

    name: str
    definition: str
    adjective: str
    negative: str


def _builtin(name: str, adjective: str, negative: str, behaviour: str) -> Dimension:
    return Dimension(name, f"In conversation, a {adjective} Assistant will {behaviour}", adjective, negative)


_BUILTIN: dict[str, Dimension] = {d.name: d for d in (
    _builtin("helpful", "helpful", "unhelpful",
             "understand what the Human is trying to achieve, offer relevant factual knowledge, ask a "
             "follow-up question when the request is ambiguous, and give an answer the Human can act on."),
    _builtin("harmless", "harmless", "harmful",
             "decline to assist with dangerous, illegal or unethical requests, avoid offensive, "
             "discriminatory or hurtful language, and gently steer the conversation towards safe ground."),
    _builtin("honest", "honest", "dishonest",
             "state only what it believes to be true, admit uncertainty or ignorance instead of guessing, "
             "and never pretend to abilities, experiences or sources it does not have."),
    _builtin("quality", "high-quality", "low-quality",
             "write a response that is correct, relevant, complete and clearly expressed, the kind of "
             "reply a careful expert would be satisfied to give."),
    _builtin("instruction-following", "instruction-following", "non-compliant",
             "do exactly what the Human asked, respecting every stated constraint on content, format, "
             "length and style, without adding unrequested material or ignoring part of the request."),
    _builtin("informative", "informative", "uninformative",
             "give specific, substantive information that teaches the Human something useful about the "
             "topic, rather than vague or generic statements."),
    _builtin("coherent", "coherent", "incoherent",
             "write a response whose sentences follow logically from one another and from the "
             "conversation, without contradictions, abrupt topic changes or unfinished thoughts."),
    _builtin("well-formatted", "well-formatted", "poorly formatted",
             "present its response in a clean, readable layout, using paragraphs, lists or code blocks "
             "where they help, with correct grammar and spelling."),
    _builtin("accurate", "accurate", "inaccurate",
             "give facts, figures, reasoning and code that are correct, and avoid claims that are false, "
             "outdated or made up."),
    _builtin("creative", "creative", "uncreative",
             "bring original ideas, vivid language and unexpected but fitting angles to the request, "
             "especially for stories, poems and brainstorming."),
    _builtin("humour", "humorous", "unfunny",
             "be genuinely funny when humour is wanted, with wit, wordplay or comic timing that fits the "
             "conversation, without being offensive."),
    _builtin("summary-relevance", "relevant", "irrelevant",
             "write a summary that captures the main points of the source text, stays faithful to it "
             "and leaves out minor details and anything the text does not say."),
)}

# Other spellings people write in configs and data sets.
_ALIASES = {
    "humor": "humour", "funny": "humour",
    "instruction-following": "instruction-following", "instruction": "instruction-following",
    "summarization-relevance": "summary-relevance", "summarisation-relevance": "summary-relevance",
    "relevance": "summary-relevance",
}


def normalise_name(name: str) -> str:
    """Lower case with single hyphens: `Instruction_Following` and `instruction following` match."""
    return re.sub(r"[\s_\-]+", "-", name.strip().lower()).strip("-")


def _extra_dimension(name: str, definition: object) -> Dimension:
    if not isinstance(definition, str) or not definition.strip():
        raise ConfigError(f"dimension '{name}' needs a non-empty definition string, e.g. "
                          f"'In conversation, a {name} Assistant will ...'")
    adjective = name.replace("-", " ")
    return Dimension(name, definition.strip(), adjective, f"not {adjective}")


def _extras(extra: Mapping[str, str] | None) -> dict[str, Dimension]:
    return {normalise_name(k): _extra_dimension(normalise_name(k), v) for k, v in (extra or {}).items()}


def known_dimensions(extra: Mapping[str, str] | None = None) -> list[str]:
    """Sorted names of the built-in dimensions plus the user-defined ones."""
    return sorted(set(_BUILTIN) | set(_extras(extra)))


def get_dimension(name: str, extra: Mapping[str, str] | None = None) -> Dimension:
    """Look a dimension up by name (case, spaces and underscores do not matter).

    `extra` maps user-defined names to definitions and takes precedence over the built-in ones, so
    a config can reword a built-in definition. An unknown name raises `UnknownDimensionError`
    listing the known names.
    """
    if isinstance(name, Dimension):
        return name
    if not isinstance(name, str) or not name.strip():
        raise UnknownDimensionError(f"dimension name must be a non-empty string, got {name!r}")
    key = normalise_name(name)
    extras = _extras(extra)
    if key in extras:
        custom = extras[key]
        builtin = _BUILTIN.get(_ALIASES.get(key, key))
        # A reworded built-in keeps its prompt words ("high-quality", "low-quality").
        if builtin is not None:
            return Dimension(builtin.name, custom.definition, builtin.adjective, builtin.negative)
        return custom
    key = _ALIASES.get(key, key)
    if key in _BUILTIN:
        return _BUILTIN[key]
    raise UnknownDimensionError(
        f"unknown dimension '{name}'; known dimensions: {', '.join(known_dimensions(extra))}. "
        "Define a new one in the config as name: definition (e.g. 'In conversation, a concise "
        "Assistant will ...')")


def dimension_definitions_field() -> Any:
    return Field(default_factory=dict, description=(
        "User-defined preference dimensions: name → verbalised definition (\"In conversation, a "
        "concise Assistant will …\"). Built-in dimensions need no entry."))
