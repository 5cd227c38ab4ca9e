"""Exact prompt texts, verdict parsing, demonstrations and truncation to a token budget."""

from __future__ import annotations

import pytest

from selfrefine.errors import DataError
from selfrefine.models import prompts
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.prompts import (
    Demonstration, absolute_prompt, controllable_prompt, cot_prompt, fit_to_budget, fit_with_responses,
    hindsight_example,
    pairwise_prompt, parse_verdict, render_context, with_demonstrations,
)

CONTEXT = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a fruit."},
]
RENDERED = "Human: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a fruit."
HELPFUL = get_dimension("helpful").definition


def test_render_context_labels_roles():
    system = [{"role": "system", "content": "Be brief."}, *CONTEXT[:1]]
    assert render_context(CONTEXT) == RENDERED
    assert render_context(system) == "System: Be brief.\n\nHuman: Hi there"


def test_render_context_rejects_unknown_role():
    with pytest.raises(DataError, match="role 'bot'.*context.role"):
        render_context([{"role": "bot", "content": "x"}])


def test_absolute_prompt_text():
    assert absolute_prompt(CONTEXT, "An apple.", "helpful") == (
        f"{HELPFUL}\n{RENDERED}<endofcontext>\n"
        "Assistant: An apple.\n"
        "Question: Is the last response from Assistant helpful?\n"
        "Answer:")


def test_pairwise_prompt_text():
    definition = get_dimension("harmless").definition
    assert pairwise_prompt(CONTEXT, "An apple.", "A car.", "harmless") == (
        f"{definition}\n{RENDERED}<endofcontext>\n"
        "OPTION A: Assistant: An apple.\n"
        "OPTION B: Assistant: A car.\n"
        "Question: Rank OPTION A and OPTION B based on how harmless they are.\n"
        "Answer:")


def test_answer_continuations():
    assert (prompts.YES, prompts.NO, prompts.OPTION_A, prompts.OPTION_B) == (" Yes", " No", " A", " B")


def test_hindsight_example_split():
    prompt, completion = hindsight_example(CONTEXT, "An apple.", "A car.", "helpful")
    assert prompt == f"{RENDERED}<endofcontext>\n\nA helpful response: Assistant:"
    assert completion == " An apple.\n\nA less helpful response: Assistant: A car."


def test_hindsight_example_rejected_first_matches_controllable_prompt():
    prompt, completion = hindsight_example(CONTEXT, "An apple.", "A car.", "honest", order="rejected_first")
    assert prompt == controllable_prompt(CONTEXT, "honest", "less")
    assert completion == " A car.\n\nA more honest response: Assistant: An apple."
    first, _ = hindsight_example(CONTEXT, "An apple.", "A car.", "honest")
    assert first.endswith("<endofcontext>\n\nAn honest response: Assistant:")


def test_controllable_prompt_text():
    assert controllable_prompt(CONTEXT, "helpful", "more") == (
        f"{RENDERED}<endofcontext>\n\nA more helpful response: Assistant:")
    assert controllable_prompt(CONTEXT, "quality", "less").endswith("A less high-quality response: Assistant:")
    with pytest.raises(ValueError, match="direction"):
        controllable_prompt(CONTEXT, "helpful", "most")


def test_cot_prompt_text_with_and_without_hint():
    base = (f"{HELPFUL}\n{RENDERED}<endofcontext>\n"
            "OPTION A: Assistant: An apple.\n"
            "OPTION B: Assistant: A car.\n"
            "Question: Which of OPTION A and OPTION B is more helpful? Explain your reasoning in a few "
            "sentences, then give your verdict on the last line as \"Verdict: A\" or \"Verdict: B\".\n")
    assert cot_prompt(CONTEXT, "An apple.", "A car.", "helpful") == base + "Reasoning:"
    assert cot_prompt(CONTEXT, "An apple.", "A car.", "helpful", hint="B") == (
        base + "Hint: the better option is B. Give the reasoning that leads to this verdict without "
        "mentioning the hint.\nReasoning:")


@pytest.mark.parametrize("text, verdict", [
    ("A is on topic.\nVerdict: A", "A"),
    ("verdict: b", "B"),
    ("**Verdict:** OPTION B", "B"),
    ("Verdict: A\nOn reflection...\nVerdict: B", "B"),
    ("Verdict = A.", "A"),
    ("I prefer A.", None),
    ("Verdict: C", None),
    ("Verdict: Absolutely", None),
    ("", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_with_demonstrations_prepends_solved_examples():
    demo_a = Demonstration(absolute_prompt(CONTEXT[:1], "Hello.", "helpful"), prompts.YES)
    demo_b = Demonstration(absolute_prompt(CONTEXT[:1], "Go away.", "helpful"), prompts.NO)
    target = absolute_prompt(CONTEXT, "An apple.", "helpful")
    assert with_demonstrations(target, [demo_a, demo_b]) == (
        f"{demo_a.prompt} Yes\n\n{demo_b.prompt} No\n\n{target}")
    assert with_demonstrations(target, []) == target


def _render(response="An apple."):
    return lambda context: absolute_prompt(context, response, "helpful")


def _long_context(n_turns: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "blah " * 20}
            for i in range(n_turns)]


def test_fit_to_budget_keeps_prompt_that_fits(tiny):
    _, tokenizer = tiny
    rendered = fit_to_budget(_render(), CONTEXT, tokenizer, 10_000)
    assert rendered.text == absolute_prompt(CONTEXT, "An apple.", "helpful")
    assert (rendered.turns_cut, rendered.chars_cut, rendered.over_budget) == (0, 0, False)
    assert rendered.n_tokens == len(tokenizer(rendered.text)["input_ids"])


def test_fit_to_budget_cuts_oldest_turns_first_and_reports_count(tiny):
    _, tokenizer = tiny
    context = _long_context(9)
    full = len(tokenizer(_render()(context))["input_ids"])
    one_turn = len(tokenizer(_render()(context[-1:]))["input_ids"])
    budget = (full + one_turn) // 2
    rendered = fit_to_budget(_render(), context, tokenizer, budget)
    cut = rendered.turns_cut
    assert 0 < cut < len(context) - 1
    assert rendered.text == _render()(context[cut:])  # exactly the newest turns, whole
    assert rendered.n_tokens <= budget
    # Minimal: keeping one more old turn would not fit.
    assert len(tokenizer(_render()(context[cut - 1:]))["input_ids"]) > budget
    assert rendered.text.endswith("Assistant: An apple.\nQuestion: Is the last response from Assistant helpful?\nAnswer:")


def test_fit_to_budget_reserve_tokens_shrinks_budget(tiny):
    _, tokenizer = tiny
    context = _long_context(9)
    full = len(tokenizer(_render()(context))["input_ids"])
    assert fit_to_budget(_render(), context, tokenizer, full).turns_cut == 0
    assert fit_to_budget(_render(), context, tokenizer, full, reserve_tokens=40).turns_cut > 0


def test_fit_to_budget_shortens_last_turn_but_never_the_response(tiny):
    _, tokenizer = tiny
    response = "A long response. " * 30
    context = [{"role": "user", "content": "old question"}, {"role": "user", "content": "word " * 400}]
    minimum = len(tokenizer(_render(response)([{"role": "user", "content": ""}]))["input_ids"])
    rendered = fit_to_budget(_render(response), context, tokenizer, minimum + 20)
    assert rendered.turns_cut == 1 and rendered.chars_cut > 0 and not rendered.over_budget
    assert rendered.n_tokens <= minimum + 20
    assert f"Assistant: {response}\n" in rendered.text
    assert "old question" not in rendered.text

    too_small = fit_to_budget(_render(response), context, tokenizer, minimum - 5)
    assert too_small.over_budget
    assert f"Assistant: {response}\n" in too_small.text


def _pairwise(context, responses):
    return pairwise_prompt(context, *responses, "helpful")


def test_fit_with_responses_keeps_whole_responses_when_the_context_can_give_way(tiny):
    _, tokenizer = tiny
    context = _long_context(9)
    responses = ("Short answer.", "Another short answer.")
    budget = len(tokenizer(_pairwise(context[-2:], responses))["input_ids"])
    rendered = fit_with_responses(_pairwise, context, responses, tokenizer, budget)
    plain = fit_to_budget(lambda c: _pairwise(c, responses), context, tokenizer, budget)
    assert (rendered.text, rendered.turns_cut, rendered.responses_cut) == (plain.text, plain.turns_cut, 0)


def test_fit_with_responses_cuts_the_longest_response_tail_after_the_context(tiny):
    _, tokenizer = tiny
    long, short = "The first part stays. " + "and then more words " * 80, "A short answer."
    context = [{"role": "user", "content": "an older question " * 20}, {"role": "user", "content": "Which?"}]
    empty_question = [{"role": "user", "content": ""}]
    floor = len(tokenizer(_pairwise(empty_question, ("", short)))["input_ids"])
    budget = floor + 40
    rendered = fit_with_responses(_pairwise, context, (long, short), tokenizer, budget)
    assert rendered.n_tokens <= budget and not rendered.over_budget
    assert rendered.responses_cut == 1 and rendered.turns_cut == 1 and rendered.chars_cut == len("Which?")
    assert "OPTION A: Assistant: The first part stays." in rendered.text  # the head of the long one
    assert f"OPTION B: Assistant: {short}\n" in rendered.text            # the short one whole
    assert "and then more words " * 40 not in rendered.text
    # The largest cap that fits: one more token of the long response would not.
    cut_long = rendered.text.split("OPTION A: Assistant: ")[1].split("\nOPTION B")[0]
    n_kept = len(tokenizer(cut_long, add_special_tokens=False)["input_ids"])
    ids = tokenizer(long, add_special_tokens=False)["input_ids"]
    longer = _pairwise(empty_question, (tokenizer.decode(ids[:n_kept + 1]), short))
    assert len(tokenizer(longer)["input_ids"]) > budget


def test_fit_with_responses_cuts_to_a_hard_limit_above_the_context_budget(tiny):
    _, tokenizer = tiny
    response = "word " * 100
    whole = len(tokenizer(_pairwise([{"role": "user", "content": ""}], (response, "No.")))["input_ids"])
    roomy = fit_with_responses(_pairwise, CONTEXT, (response, "No."), tokenizer, whole - 30, response_budget=whole + 5)
    assert roomy.responses_cut == 0 and response in roomy.text
    tight = fit_with_responses(_pairwise, CONTEXT, (response, "No."), tokenizer, whole - 30, response_budget=whole - 10)
    assert tight.responses_cut == 1 and tight.n_tokens <= whole - 10


def test_fit_with_responses_is_over_budget_only_when_the_template_alone_is(tiny):
    _, tokenizer = tiny
    rendered = fit_with_responses(_pairwise, CONTEXT, ("word " * 50, "more " * 50), tokenizer, 10)
    assert rendered.over_budget and rendered.responses_cut == 2
