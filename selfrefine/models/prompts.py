"""Every prompt format of the project, as small pure functions of (context, responses, dimension).

A *context* is a list of turns `{"role": "user"|"assistant"|"system", "content": str}`, rendered as
in the decoder-reward-model paper: "Human: …" / "Assistant: …" (/ "System: …") separated by blank
lines, closed by `<endofcontext>`. The judged response is never part of the context.

Formats (the exact texts are pinned by tests/models/test_prompts.py):

- `absolute_prompt`: definition, context, response, "Question: Is the last response from Assistant
  {adjective}?\nAnswer:"; answered by `YES` (" Yes") or `NO` (" No").
- `pairwise_prompt`: definition, context, "OPTION A: Assistant: …", "OPTION B: Assistant: …",
  "Question: Rank OPTION A and OPTION B based on how {adjective} they are.\nAnswer:"; answered by the
  better option, `OPTION_A` (" A") or `OPTION_B` (" B").
- `reward_prompt`: definition, context, "Assistant:"; the response follows it. The input of a
  reward-head judge, which reads a score off the last token instead of answering a question.
  `chat_reward_prompt` is the same input in the model's chat template (definition as system turn).
- `hindsight_example`: Chain-of-Hindsight training text split into (prompt, completion).
- `controllable_prompt`: "A more/less {adjective} response: Assistant:" for controllable generation.
- `cot_prompt` / `parse_verdict`: chain-of-thought judging ending in a "Verdict: A|B" line.
- `with_demonstrations`: few-shot demonstrations prepended to any evaluation prompt.
- `fit_to_budget`: cut the oldest context turns until a prompt fits a token budget.
- `fit_with_responses`: the same, then the judged responses' tails when they alone are too long.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfrefine.errors import ConfigError, DataError
from selfrefine.models.dimensions import Dimension, get_dimension

Turn = Mapping[str, str]
DimensionLike = Dimension | str

ROLE_LABELS = {"user": "Human", "assistant": "Assistant", "system": "System"}
END_OF_CONTEXT = "<endofcontext>"
TURN_SEPARATOR = "\n\n"
# Answer continuations, with the leading space the tokenizer folds into the word ("Answer: Yes").
YES, NO = " Yes", " No"
OPTION_A, OPTION_B = " A", " B"
DEMONSTRATION_SEPARATOR = "\n\n"


def _dim(dimension: DimensionLike) -> Dimension:
    return dimension if isinstance(dimension, Dimension) else get_dimension(dimension)


def render_context(context: Sequence[Turn]) -> str:
    """Render turns as "Human: …" / "Assistant: …" / "System: …" separated by blank lines."""
    lines = []
    for index, turn in enumerate(context):
        role = turn.get("role") if isinstance(turn, Mapping) else None
        if role not in ROLE_LABELS:
            raise DataError(f"context turn {index} has role {role!r}; expected one of "
                            f"{', '.join(ROLE_LABELS)}", field="context.role")
        content = turn.get("content")
        if not isinstance(content, str):
            raise DataError(f"context turn {index} has no string content", field="context.content")
        lines.append(f"{ROLE_LABELS[role]}: {content}")
    return TURN_SEPARATOR.join(lines)


def _article(word: str) -> str:
    """"An" before a vowel sound ("An unhelpful", "An honest"), else "A"."""
    lower = word.lower()
    return "An" if lower[:1] in "aeiou" or lower.startswith(("hon", "hour")) else "A"


def _head(context: Sequence[Turn], definition: str | None) -> str:
    body = f"{render_context(context)}{END_OF_CONTEXT}"
    return f"{definition}\n{body}" if definition else body


# --- evaluation prompts ------------------------------------------------------------------------

def absolute_prompt(context: Sequence[Turn], response: str, dimension: DimensionLike) -> str:
    """Absolute-quality prompt; the next token is `YES` or `NO`."""
    dim = _dim(dimension)
    return (f"{_head(context, dim.definition)}\n"
            f"Assistant: {response}\n"
            f"Question: Is the last response from Assistant {dim.adjective}?\n"
            f"Answer:")


def pairwise_prompt(context: Sequence[Turn], response_a: str, response_b: str,
                    dimension: DimensionLike) -> str:
    """Relative-quality prompt; the next token names the better response, `OPTION_A` or `OPTION_B`."""
    dim = _dim(dimension)
    return (f"{_head(context, dim.definition)}\n"
            f"OPTION A: Assistant: {response_a}\n"
            f"OPTION B: Assistant: {response_b}\n"
            f"Question: Rank OPTION A and OPTION B based on how {dim.adjective} they are.\n"
            f"Answer:")


def reward_prompt(context: Sequence[Turn], dimension: DimensionLike) -> str:
    """Reward-head input before the response: "{definition}\n{context}<endofcontext>\nAssistant:".

    The response follows as " {response}" (plus EOS), laid out as in `absolute_prompt`, so the
    verbalised definition tells one head which dimension it scores; there is no question, since
    the score is read off the last token's hidden state.
    """
    return f"{_head(context, _dim(dimension).definition)}\nAssistant:"


def chat_reward_prompt(context: Sequence[Turn], dimension: DimensionLike, tokenizer: Any) -> str:
    """Reward-head input before the response, in the model's own chat template: the definition as
    the system turn, then the context, then the assistant header (`add_generation_prompt`).

    The response follows as is (plus EOS). An instruct model reads a conversation in its template
    as it was tuned to (bench/RESULTS.md compares the two layouts).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the reward input format 'chat_template' needs a tokenizer with a chat template; "
                          "this model has none: set reward_recipe.input_format: plain")
    definition = _dim(dimension).definition
    render_context(context)  # the same role and content checks as the plain layout
    messages = ([{"role": "system", "content": definition}] if definition else []) + [
        {"role": turn["role"], "content": turn["content"]} for turn in context]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# --- training and generation texts ----------------------------------------------------------

def hindsight_example(context: Sequence[Turn], chosen: str, rejected: str, dimension: DimensionLike,
                      *, order: Literal["chosen_first", "rejected_first"] = "chosen_first"
                      ) -> tuple[str, str]:
    """Chain-of-Hindsight training text as `(prompt, completion)`; train the loss on the completion.

    chosen_first (default):
        prompt     = "{context}<endofcontext>\\n\\nA {adj} response: Assistant:"
        completion = " {chosen}\\n\\nA less {adj} response: Assistant: {rejected}"
    rejected_first:
        prompt     = "{context}<endofcontext>\\n\\nA less {adj} response: Assistant:"
        completion = " {rejected}\\n\\nA more {adj} response: Assistant: {chosen}"

    The split puts both responses in the completion: CoH teaches the model to write each response
    conditioned on its feedback label (and, for the second one, on having seen the first), so both
    carry the loss; the fixed label between them is a few predictable tokens. The context and first
    label are the condition, not a target. The rejected-first order ends its prompt exactly like
    `controllable_prompt(..., "less")` and labels the chosen response "A more {adj} response", so
    training on both orders covers both controllable-generation prompts. As in the paper, the
    definition is not included: these texts teach the labels, the evaluation prompts carry it.
    """
    dim = _dim(dimension)
    head = f"{_head(context, None)}{TURN_SEPARATOR}"
    if order == "chosen_first":
        label = f"{_article(dim.adjective)} {dim.adjective} response"
        return (f"{head}{label}: Assistant:",
                f" {chosen}{TURN_SEPARATOR}A less {dim.adjective} response: Assistant: {rejected}")
    if order == "rejected_first":
        return (f"{head}A less {dim.adjective} response: Assistant:",
                f" {rejected}{TURN_SEPARATOR}A more {dim.adjective} response: Assistant: {chosen}")
    raise ValueError(f"order must be 'chosen_first' or 'rejected_first', got {order!r}")


def controllable_prompt(context: Sequence[Turn], dimension: DimensionLike,
                        direction: Literal["more", "less"]) -> str:
    """Controllable-generation prompt: "{context}<endofcontext>\\n\\nA more|less {adj} response: Assistant:".

    Uses the same separator as `hindsight_example` so generation continues exactly the text the
    judge was trained on.
    """
    if direction not in ("more", "less"):
        raise ValueError(f"direction must be 'more' or 'less', got {direction!r}")
    dim = _dim(dimension)
    return f"{_head(context, None)}{TURN_SEPARATOR}A {direction} {dim.adjective} response: Assistant:"


# --- chain-of-thought judging -------------------------------------------------------------------

VERDICT_RE = re.compile(r"verdict\s*[:=]\s*[*_`\"'(\[]*\s*(?:option\s+)?([ab])\b", re.IGNORECASE)


def cot_prompt(context: Sequence[Turn], response_a: str, response_b: str, dimension: DimensionLike,
               hint: Literal["A", "B"] | None = None) -> str:
    """Chain-of-thought pairwise prompt: a short rationale, then a last line "Verdict: A|B".

    With `hint` (the correct label) the prompt asks for a rationale that reaches that verdict: the
    STaR rationalisation step for pairs the judge got wrong. Rationales produced with a hint are
    trained on with the hint-free prompt.
    """
    if hint not in (None, "A", "B"):
        raise ValueError(f"hint must be 'A', 'B' or None, got {hint!r}")
    dim = _dim(dimension)
    text = (f"{_head(context, dim.definition)}\n"
            f"OPTION A: Assistant: {response_a}\n"
            f"OPTION B: Assistant: {response_b}\n"
            f"Question: Which of OPTION A and OPTION B is more {dim.adjective}? Explain your reasoning "
            f"in a few sentences, then give your verdict on the last line as \"Verdict: A\" or "
            f"\"Verdict: B\".\n")
    if hint is not None:
        text += (f"Hint: the better option is {hint}. Give the reasoning that leads to this verdict "
                 f"without mentioning the hint.\n")
    return text + "Reasoning:"


def parse_verdict(text: str) -> Literal["A", "B"] | None:
    """The last "Verdict: A|B" in a generated rationale (tolerating case, markdown and "OPTION"), or None."""
    matches = VERDICT_RE.findall(text or "")
    return matches[-1].upper() if matches else None  # type: ignore[return-value]


# --- few-shot demonstrations ----------------------------------------------------------------

@dataclass(frozen=True)
class Demonstration:
    """A solved example: an evaluation prompt and its answer continuation (e.g. `YES`, `OPTION_B`)."""

    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer


def with_demonstrations(prompt: str, demonstrations: Sequence[Demonstration]) -> str:
    """Prepend solved demonstrations to an evaluation prompt, each separated by a blank line."""
    if not demonstrations:
        return prompt
    return DEMONSTRATION_SEPARATOR.join([*(d.text for d in demonstrations), prompt])


# --- truncation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt fitted to a token budget.

    `turns_cut`: whole context turns dropped from the start; `chars_cut`: characters removed from the
    start of the oldest kept turn when even that turn alone was too long; `over_budget`: the prompt
    is still too long with every cuttable part removed (with `fit_to_budget`, the response itself
    does not fit); `responses_cut`: responses that lost their tail (`fit_with_responses`).
    """

    text: str
    n_tokens: int
    turns_cut: int = 0
    chars_cut: int = 0
    over_budget: bool = False
    responses_cut: int = 0


def count_tokens(tokenizer: Any, text: str) -> int:
    """Token count as the model sees it (special tokens such as BOS included)."""
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def fit_to_budget(render: Callable[[list[dict[str, str]]], str], context: Sequence[Turn],
                  tokenizer: Any, max_tokens: int, *, reserve_tokens: int = 0,
                  keep_last_turns: int = 1) -> RenderedPrompt:
    """Render `render(context)`, cutting the oldest turns until it fits `max_tokens - reserve_tokens`.

    `render` closes over everything else (response, dimension, demonstrations), so the response is
    never cut. The newest `keep_last_turns` turns are kept whole while possible; if they alone are
    still too long, the oldest of them loses characters from its start. `reserve_tokens` leaves
    room for tokens to be generated.
    """
    budget = max_tokens - reserve_tokens
    turns = [dict(t) for t in context]

    def size(cut: int, chars: int = 0) -> tuple[str, int]:
        kept = [dict(t) for t in turns[cut:]]
        if chars and kept:
            kept[0]["content"] = kept[0]["content"][chars:]
        text = render(kept)
        return text, count_tokens(tokenizer, text)

    text, n = size(0)
    if n <= budget:
        return RenderedPrompt(text, n)
    # Smallest number of whole turns to drop (token count shrinks as turns go: binary search).
    max_cut = max(len(turns) - keep_last_turns, 0)
    lo, hi = 1, max_cut
    while lo <= hi:
        mid = (lo + hi) // 2
        if size(mid)[1] <= budget:
            hi = mid - 1
        else:
            lo = mid + 1
    if lo <= max_cut:
        text, n = size(lo)
        return RenderedPrompt(text, n, turns_cut=lo)
    if max_cut == len(turns):  # nothing left to shorten
        text, n = size(max_cut)
        return RenderedPrompt(text, n, turns_cut=max_cut, over_budget=n > budget)
    # Even the kept turns are too long: shorten the oldest kept turn from its start.
    content_len = len(turns[max_cut]["content"])
    lo, hi = 1, content_len
    while lo <= hi:
        mid = (lo + hi) // 2
        if size(max_cut, mid)[1] <= budget:
            hi = mid - 1
        else:
            lo = mid + 1
    chars = min(lo, content_len)
    text, n = size(max_cut, chars)
    return RenderedPrompt(text, n, turns_cut=max_cut, chars_cut=chars, over_budget=n > budget)


def fit_with_responses(render: Callable[[list[dict[str, str]], tuple[str, ...]], str], context: Sequence[Turn],
                       responses: Sequence[str], tokenizer: Any, max_tokens: int, *, reserve_tokens: int = 0,
                       response_budget: int | None = None) -> RenderedPrompt:
    """Render `render(context, responses)` within `max_tokens - reserve_tokens`: the oldest context
    turns go first (`fit_to_budget`); when the responses alone are still too long, they lose their
    tails. Every response is capped at the same number of tokens, the largest cap that fits, so the
    longest response loses the most and a short one is kept whole.

    `response_budget` (default: the same budget) is the limit the responses are cut to, for a
    caller whose context budget is tighter than its hard limit. Still `over_budget` only when the
    prompt does not fit with its context gone and every response empty.
    """
    responses = tuple(responses)
    fitted = fit_to_budget(lambda ctx: render(ctx, responses), context, tokenizer, max_tokens,
                           reserve_tokens=reserve_tokens)
    budget = response_budget if response_budget is not None else max_tokens - reserve_tokens
    if fitted.n_tokens <= budget:
        return RenderedPrompt(fitted.text, fitted.n_tokens, fitted.turns_cut, fitted.chars_cut)
    kept = [dict(t) for t in context][fitted.turns_cut:]
    if kept and fitted.chars_cut:
        kept[0]["content"] = kept[0]["content"][fitted.chars_cut:]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]

    def capped(cap: int) -> tuple[str, int]:
        text = render(kept, tuple(r if len(t) <= cap else tokenizer.decode(t[:cap]) for r, t in zip(responses, ids)))
        return text, count_tokens(tokenizer, text)

    # The largest cap that fits (a prompt's length grows with the cap: binary search).
    lo, hi = 0, max((len(t) for t in ids), default=0) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if capped(mid)[1] <= budget:
            lo = mid + 1
        else:
            hi = mid - 1
    cap = max(hi, 0)
    text, n = capped(cap)
    return RenderedPrompt(text, n, fitted.turns_cut, fitted.chars_cut, over_budget=n > budget,
                          responses_cut=sum(len(t) > cap for t in ids))
