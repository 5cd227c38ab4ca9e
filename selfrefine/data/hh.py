"""Anthropic hh-rlhf transcripts (`"\\n\\nHuman: …\\n\\nAssistant: …"`) and splitting two
conversations into their shared context plus the two final responses."""

from __future__ import annotations

import re
from typing import Sequence

from selfrefine.data.fields import RecordError
from selfrefine.data.schema import Turn, turn

# Speaker markers start a turn at the beginning of the text or after a blank line. hh-rlhf also
# has a few "  Human:" glued inside a turn; those stay part of the turn's text, as in the source.
_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str, *, field: str = "chosen") -> list[Turn]:
    """Split an hh transcript into turns (Human → user, Assistant → assistant), contents stripped.

    Raises `RecordError` for text before the first turn or a transcript with no Assistant turn.
    """
    parts = _MARKER.split(text)
    head, rest = parts[0], parts[1:]
    if not rest:
        raise RecordError("not an hh transcript: no '\\n\\nHuman:' or '\\n\\nAssistant:' turn found",
                          field=field)
    if head.strip():
        raise RecordError(f"text before the first 'Human:' turn: {head.strip()[:40]!r}", field=field)
    turns = [turn(_ROLE[rest[i]], rest[i + 1].strip()) for i in range(0, len(rest), 2)]
    if not any(t["role"] == "assistant" for t in turns):
        raise RecordError("hh transcript has no Assistant turn (nothing to compare)", field=field)
    return turns


def split_final_responses(chosen: Sequence[Turn], rejected: Sequence[Turn], *,
                          chosen_field: str = "chosen", rejected_field: str = "rejected",
                          ) -> tuple[list[Turn], str, str]:
    """Two full conversations → (shared context, chosen response, rejected response).

    Both must end with an assistant turn and agree on every turn before it; the context must hold
    at least one user turn. Multi-turn contexts are kept whole.
    """
    for turns, name in ((chosen, chosen_field), (rejected, rejected_field)):
        if not turns or turns[-1]["role"] != "assistant":
            raise RecordError("the conversation must end with an assistant turn (the response)",
                              field=name)
    context, other = list(chosen[:-1]), list(rejected[:-1])
    if context != other:
        first = next((i for i, (a, b) in enumerate(zip(context, other)) if a != b),
                     min(len(context), len(other)))
        raise RecordError(
            f"chosen and rejected differ at turn {first + 1}, before their final assistant turn "
            f"({len(context)} vs {len(other)} context turns); a pair must share its context",
            field=rejected_field)
    if not any(t["role"] == "user" for t in context):
        raise RecordError("no user turn before the response; a pair needs a prompt", field=chosen_field)
    return context, chosen[-1]["content"], rejected[-1]["content"]


def hh_pair(chosen: str, rejected: str) -> tuple[list[Turn], str, str]:
    """An hh-rlhf `{"chosen", "rejected"}` transcript pair → (context, chosen, rejected)."""
    return split_final_responses(parse_transcript(chosen, field="chosen"),
                                 parse_transcript(rejected, field="rejected"))


def hh_context(transcript: str, *, field: str = "chosen") -> list[Turn]:
    """The turns before the last Assistant turn of a transcript (a prompt for generation)."""
    turns = parse_transcript(transcript, field=field)
    last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
    context = turns[:last]
    if not any(t["role"] == "user" for t in context):
        raise RecordError("no Human turn before the last Assistant turn", field=field)
    return context
