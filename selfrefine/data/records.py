"""Local record forms → normalised items.

Preference pairs come in three forms, told apart by their keys:

- hh transcripts: `{"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": "…"}` (the last
  Assistant turn differs);
- prompt/chosen/rejected: `{"prompt": str | [turns], "chosen": str | [turns], "rejected": …}`
  (`context` is accepted for `prompt`, so our own JSONL artifacts load as local files too);
- message lists: `{"chosen": [turns], "rejected": [turns]}` sharing all but the last turn.

Any form may carry `dimension` and `source`; the caller's defaults fill in the rest. A graded source
may add `gap` (a number ≥ 0: how much `chosen` is preferred), which a reward recipe with
`margin_per_gap` turns into a Bradley–Terry margin.
"""

from __future__ import annotations

from typing import Any, Mapping

from selfrefine.data.fields import (
    RecordError,
    get_optional_str,
    get_str,
    parse_turns,
    require_mapping,
    utf8_text,
)
from selfrefine.data.hh import hh_context, hh_pair, split_final_responses
from selfrefine.data.schema import PreferencePair, PromptItem, Turn, pair_gap, turn


def record_labels(row: Mapping[str, Any], dimension: str | None, source: str) -> tuple[str, str]:
    """The record's `dimension` and `source`, or the caller's defaults."""
    dim = get_optional_str(row, "dimension") or dimension
    if dim is None:
        raise RecordError("missing; add a 'dimension' field to the record or give a default "
                          "dimension (DataSource.dimension)", field="dimension")
    return dim, get_optional_str(row, "source") or source


def prompt_turns(value: Any, name: str) -> list[Turn]:
    """A prompt given as a string (one user turn) or as a list of turns."""
    if isinstance(value, str):
        return [turn("user", utf8_text(value, name))]
    _require_text_or_turns(value, name)
    return parse_turns(value, name)  # type: ignore[return-value]


def _require_text_or_turns(value: Any, name: str) -> None:
    if value is None:
        raise RecordError("missing", field=name)
    if not isinstance(value, list):
        raise RecordError(f"expected a string or a list of {{role, content}} turns, got "
                          f"{type(value).__name__}", field=name)


def _response_turns(row: Mapping[str, Any], name: str) -> list[Turn]:
    value = row.get(name)
    if isinstance(value, str):
        return [turn("assistant", utf8_text(value, name))]
    _require_text_or_turns(value, name)
    return parse_turns(value, name)  # type: ignore[return-value]


def _prompt_key(row: Mapping[str, Any]) -> str | None:
    return next((k for k in ("prompt", "context") if row.get(k) is not None), None)


def pair_from_record(raw: Any, *, dimension: str | None, source: str) -> PreferencePair:
    """One local record in any of the three pair forms → a `PreferencePair`."""
    row = require_mapping(raw)
    dim, src = record_labels(row, dimension, source)
    key = _prompt_key(row)
    if key is not None:
        context = prompt_turns(row[key], key)
        ctx, chosen, rejected = split_final_responses(
            context + _response_turns(row, "chosen"), context + _response_turns(row, "rejected"))
    elif isinstance(row.get("chosen"), str):
        ctx, chosen, rejected = hh_pair(get_str(row, "chosen"), get_str(row, "rejected"))
    elif isinstance(row.get("chosen"), list):
        ctx, chosen, rejected = split_final_responses(parse_turns(row["chosen"], "chosen"),
                                                      parse_turns(row.get("rejected"), "rejected"))
    elif "chosen" not in row:
        raise RecordError("missing; a pair record needs 'chosen' and 'rejected' (hh transcripts, "
                          "or with 'prompt')", field="chosen")
    else:
        raise RecordError(f"expected a string or a list of turns, got "
                          f"{type(row['chosen']).__name__}", field="chosen")
    return PreferencePair(context=ctx, chosen=chosen, rejected=rejected, dimension=dim, source=src, gap=pair_gap(row))


def prompt_from_record(raw: Any, *, dimension: str | None, source: str) -> PromptItem:
    """`{"prompt": str | turns}`, `{"context": turns}`, `{"instruction": str, "input"?: str}` or an
    hh record (the turns before the last Assistant turn of `chosen`) → a `PromptItem`."""
    row = require_mapping(raw)
    dim, src = record_labels(row, dimension, source)
    key = _prompt_key(row)
    if key is not None:
        context, field = prompt_turns(row[key], key), key
    elif "instruction" in row:
        text, extra = get_str(row, "instruction"), get_optional_str(row, "input")
        context, field = [turn("user", f"{text}\n\n{extra}" if extra else text)], "instruction"
    elif isinstance(row.get("chosen"), str):
        context, field = hh_context(row["chosen"]), "chosen"
    elif isinstance(row.get("chosen"), list):
        context, field = parse_turns(row["chosen"], "chosen")[:-1], "chosen"
    else:
        raise RecordError("missing; a prompt record needs 'prompt', 'instruction', 'context' or an "
                          "hh 'chosen' transcript", field="prompt")
    if not context or context[-1]["role"] != "user":
        raise RecordError("the prompt must end with a user turn (the model answers it)", field=field)
    return PromptItem(context=context, dimension=dim, source=src)
