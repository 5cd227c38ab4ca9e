"""Judge scoring on the tiny model: the paper's score definition, batching invariance, both-order
pairwise verdicts, multi-token answers by teacher forcing, and CoT majority voting."""

from __future__ import annotations

import math

import pytest
import torch

from selfrefine.models import prompts as P
from selfrefine.models.generation import Generation, SamplingParams
from selfrefine.models.judge import Judge
from selfrefine.models.judge_types import AbsoluteItem, CotVerdict, PairItem

CTX = [{"role": "user", "content": "Name a fruit."}]
LONG_CTX = [{"role": "user", "content": "I am planning a trip to Italy next spring."},
            {"role": "assistant", "content": "That sounds lovely. Which cities are you considering?"},
            {"role": "user", "content": "Rome and Florence. What should I eat there?"}]
RESPONSES = ["An apple.", "A car.", "Bananas are yellow and sweet; apples are crisp.", "no",
             "Try cacio e pepe in Rome and bistecca alla fiorentina in Florence.", "I cannot help with that."]


def _items():
    return [AbsoluteItem(CTX if i % 2 else LONG_CTX, r, "helpful" if i % 3 else "harmless")
            for i, r in enumerate(RESPONSES)]


def test_absolute_scores_follow_the_paper_definition(tiny):
    judge = Judge(*tiny, batch_size=4)
    scores = judge.score_absolute(_items())
    assert {s.answer for s in scores} <= {"Yes", "No"}
    for s in scores:
        sign = 1.0 if s.answer == "Yes" else -1.0
        assert s.score == pytest.approx(sign + s.logprob)
        # Restricted softmax: the chosen answer has probability >= 0.5.
        assert s.logprob == pytest.approx(math.log(s.p_yes if s.answer == "Yes" else 1 - s.p_yes))
        assert (s.p_yes >= 0.5) == (s.answer == "Yes")
        if s.answer == "Yes":
            assert 1 - math.log(2) - 1e-9 <= s.score <= 1
        else:
            assert -1 - math.log(2) - 1e-9 <= s.score <= -1
        assert s.vocab_logprob <= s.logprob  # a full-vocabulary probability is never larger


def test_vocab_logprob_space_scores_with_full_vocabulary(tiny):
    answers = Judge(*tiny).score_absolute(_items())
    vocab = Judge(*tiny, logprob_space="vocab").score_absolute(_items())
    for a, v in zip(answers, vocab):
        assert v.answer == a.answer
        assert v.score == pytest.approx((1 if v.answer == "Yes" else -1) + a.vocab_logprob)
        assert v.score <= (1 if v.answer == "Yes" else -1)


def test_answer_matches_direct_forward_pass(tiny):
    """The batched score equals reading the Yes/No logits off a plain unpadded forward pass."""
    model, tokenizer = tiny
    item = _items()[4]
    prompt = P.absolute_prompt(item.context, item.response, item.dimension)
    yes = tokenizer(P.YES, add_special_tokens=False)["input_ids"][0]
    no = tokenizer(P.NO, add_special_tokens=False)["input_ids"][0]
    with torch.inference_mode():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].float()
    expected_p_yes = torch.softmax(logits[[yes, no]], dim=0)[0].item()
    expected_vocab = torch.log_softmax(logits, dim=0)
    score = Judge(*tiny, batch_size=3).score_absolute(_items())[4]
    assert score.p_yes == pytest.approx(expected_p_yes, abs=1e-5)
    chosen = yes if score.answer == "Yes" else no
    assert score.vocab_logprob == pytest.approx(expected_vocab[chosen].item(), abs=1e-4)


def test_batched_scores_equal_one_at_a_time(tiny):
    items = _items()
    batched = Judge(*tiny, batch_size=16).score_absolute(items)
    single = [Judge(*tiny, batch_size=1).score_absolute([it])[0] for it in items]
    for b, s in zip(batched, single):
        assert b.answer == s.answer
        assert b.score == pytest.approx(s.score, abs=1e-5)
        assert b.p_yes == pytest.approx(s.p_yes, abs=1e-5)


def test_items_may_be_mappings(tiny):
    judge = Judge(*tiny)
    as_dict = judge.score_absolute([{"context": CTX, "response": "An apple.", "dimension": "helpful"}])
    as_item = judge.score_absolute([AbsoluteItem(CTX, "An apple.", "helpful")])
    assert as_dict == as_item


def test_long_context_is_cut_and_reported(tiny):
    _, tokenizer = tiny
    context = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "la " * 30}
               for i in range(12)]
    item = AbsoluteItem(context, "A short answer.", "helpful")
    full = len(tokenizer(P.absolute_prompt(context, item.response, "helpful"))["input_ids"])
    score = Judge(*tiny, max_length=full // 2).score_absolute([item])[0]
    assert score.turns_cut > 0
    fitted = P.fit_to_budget(lambda c: P.absolute_prompt(c, item.response, "helpful"), context,
                             tokenizer, full // 2)
    reference = Judge(*tiny, max_length=10_000).score_absolute(
        [AbsoluteItem(context[fitted.turns_cut:], item.response, "helpful")])[0]
    assert score.turns_cut == fitted.turns_cut
    assert score.score == pytest.approx(reference.score, abs=1e-5)


def test_responses_too_long_for_max_length_lose_their_tail_under_one_warning(tiny, caplog):
    """A response longer than the budget costs its prompt the whole context, then its own tail: it is
    still scored, and no forward pass is longer than max_length."""
    _, tokenizer = tiny
    long_answers = ["words " * 200, "more words " * 150]
    items = [AbsoluteItem(CTX, r, "helpful") for r in ["Fine.", *long_answers]]
    judge = Judge(*tiny, max_length=128)
    with caplog.at_level("WARNING", logger="selfrefine.models.judge"):
        scores = judge.score_absolute(items)
        judge.compare([PairItem(CTX, "Fine.", long_answers[0], "helpful")])
    assert len(scores) == 3  # none is dropped
    assert judge.truncated == 2 + 2  # two absolute prompts, then the pair in both orders
    # Read as a judge with room for everything reads the question-less prompt with the response's head.
    heads = []
    for response in long_answers:
        fitted = P.fit_with_responses(lambda c, rs: P.absolute_prompt(c, rs[0], "helpful"), CTX, (response,),
                                      tokenizer, 128)
        assert fitted.n_tokens <= 128 and fitted.responses_cut == 1
        head = fitted.text.split("\nAssistant: ")[1].split("\nQuestion:")[0]
        assert response.startswith(head) and len(head) < len(response)
        heads.append(AbsoluteItem([{"role": "user", "content": ""}], head, "helpful"))
    roomy = Judge(*tiny, max_length=10_000)
    reference = roomy.score_absolute(heads)
    assert [s.score for s in scores[1:]] == pytest.approx([s.score for s in reference], abs=1e-5)
    assert roomy.truncated == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # one per call, not one per prompt
    assert "2 of 3 prompts exceed their budget of 128 tokens" in warnings[0]
    assert "2 of 2 prompts" in warnings[1]  # the pair's two presentation orders


def test_a_max_length_too_small_for_the_prompt_itself_is_a_config_error(tiny):
    from selfrefine.errors import ConfigError

    _, tokenizer = tiny
    bare = P.count_tokens(tokenizer, P.absolute_prompt([{"role": "user", "content": ""}], "", "helpful"))
    judge = Judge(*tiny, max_length=bare - 1)
    with pytest.raises(ConfigError, match=f"max_length={bare - 1}"):
        judge.score_absolute([AbsoluteItem(CTX, "An apple.", "helpful")])
    assert judge.truncated == 0
    assert len(Judge(*tiny, max_length=bare).score_absolute([AbsoluteItem(CTX, "An apple.", "helpful")])) == 1


def test_pairwise_combines_both_orders(tiny):
    items = [PairItem(LONG_CTX, RESPONSES[4], RESPONSES[5]), PairItem(CTX, RESPONSES[0], RESPONSES[1], "harmless")]
    verdicts = Judge(*tiny, batch_size=3).compare(items)
    for v in verdicts:
        assert v.p_a == pytest.approx((v.p_a_forward + v.p_a_swapped) / 2)
        assert v.verdict == ("A" if v.p_a >= 0.5 else "B")
        assert v.consistent == ((v.p_a_forward >= 0.5) == (v.p_a_swapped >= 0.5))
    # Swapping the responses of an item swaps the roles of the two orders.
    swapped = Judge(*tiny).compare([PairItem(i.context, i.response_b, i.response_a, i.dimension) for i in items])
    for v, s in zip(verdicts, swapped):
        assert s.p_a_forward == pytest.approx(1 - v.p_a_swapped, abs=1e-5)
        assert s.p_a_swapped == pytest.approx(1 - v.p_a_forward, abs=1e-5)
        assert s.p_a == pytest.approx(1 - v.p_a, abs=1e-5)


def test_order_swap_flips_the_verdict_of_a_position_biased_judge(tiny):
    """With two identical responses both orders show the model the same prompt, so whatever
    position it prefers, the verdict must flip when the order is swapped."""
    verdict = Judge(*tiny).compare([PairItem(CTX, "An apple.", "An apple.")])[0]
    forward = "A" if verdict.p_a_forward >= 0.5 else "B"
    from_swapped = "A" if verdict.p_a_swapped >= 0.5 else "B"
    assert forward != from_swapped
    assert not verdict.consistent
    assert verdict.p_a == pytest.approx(0.5, abs=1e-6)


def test_multi_token_answers_use_teacher_forcing(tiny):
    """A two-token answer is scored from a plain forward pass over prompt + answer."""
    model, tokenizer = tiny
    judge = Judge(*tiny, batch_size=2)
    prompts = [P.absolute_prompt(it.context, it.response, it.dimension) for it in _items()[:3]]
    yes = tokenizer(P.YES, add_special_tokens=False)["input_ids"]
    two = yes + tokenizer(" indeed", add_special_tokens=False)["input_ids"]
    no = tokenizer(P.NO, add_special_tokens=False)["input_ids"]
    logits, vocab = judge._answer_scores(prompts, [two, no])
    for prompt, (l_two, l_no), (v_two, v_no) in zip(prompts, logits, vocab):
        ids = tokenizer(prompt)["input_ids"]
        with torch.inference_mode():
            lp = torch.log_softmax(model(torch.tensor([ids + two])).logits[0].float(), dim=-1)
            lp_no = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)[no[0]].item()
        token_lps = [lp[len(ids) - 1 + j, t].item() for j, t in enumerate(two)]
        assert l_two == pytest.approx(sum(token_lps), abs=1e-4)
        assert v_two == pytest.approx(min(token_lps), abs=1e-4)
        assert l_no == pytest.approx(lp_no, abs=1e-4)


class ScriptedBackend:
    """A generation backend that replays fixed rationales and records the prompts it was given."""

    def __init__(self, forward: list[str], swapped: list[str] | None = None):
        self.replies = {False: forward, True: swapped or []}
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        swapped = len(self.calls) == 2
        texts = self.replies[swapped][:params.n]
        return [[Generation(t, 5, "stop") for t in texts] for _ in prompts]

    def close(self):
        pass


def test_cot_majority_vote_and_invalid_samples(tiny):
    backend = ScriptedBackend(["Good. Verdict: A", "Hmm. Verdict: B", "Clearly.\nVerdict: A", "no idea"])
    judge = Judge(*tiny, backend=backend)
    [result] = judge.compare_cot([PairItem(CTX, "An apple.", "A car.")], k=4,
                                 params=SamplingParams(temperature=0.7, max_new_tokens=32, seed=3))
    assert isinstance(result, CotVerdict)
    assert (result.verdict, result.votes_a, result.votes_b, result.invalid) == ("A", 2, 1, 1)
    assert result.p_a == pytest.approx(2 / 3)
    prompts, params = backend.calls[0]
    assert params.n == 4 and params.seed == 3
    assert prompts == [P.cot_prompt(CTX, "An apple.", "A car.", "helpful")]


def test_cot_both_orders_maps_swapped_verdicts_and_hints(tiny):
    backend = ScriptedBackend(["Verdict: B", "Verdict: B"], swapped=["Verdict: A", "Verdict: B"])
    judge = Judge(*tiny, backend=backend)
    [result] = judge.compare_cot([PairItem(CTX, "An apple.", "A car.")], k=4, both_orders=True, hints=["B"])
    # Forward: B, B. Swapped "A" means the original B, swapped "B" the original A.
    assert (result.votes_a, result.votes_b, result.verdict) == (1, 3, "B")
    assert [s.swapped for s in result.samples] == [False, False, True, True]
    assert backend.calls[0][0] == [P.cot_prompt(CTX, "An apple.", "A car.", "helpful", hint="B")]
    assert backend.calls[1][0] == [P.cot_prompt(CTX, "A car.", "An apple.", "helpful", hint="A")]


def test_cot_tie_gives_no_verdict(tiny):
    judge = Judge(*tiny, backend=ScriptedBackend(["Verdict: A", "Verdict: B"]))
    assert judge.compare_cot([PairItem(CTX, "x", "y")], k=2)[0].verdict is None


def test_cot_with_the_tiny_model_generates_k_samples(tiny):
    judge = Judge(*tiny)
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=0)
    first = judge.compare_cot([PairItem(CTX, "An apple.", "A car.")], k=3, params=params)[0]
    again = judge.compare_cot([PairItem(CTX, "An apple.", "A car.")], k=3, params=params)[0]
    assert len(first.samples) == 3
    assert first.votes_a + first.votes_b + first.invalid == 3
    assert first == again  # seeded sampling is reproducible


def test_missing_item_field_is_named(tiny):
    from selfrefine.errors import DataError

    with pytest.raises(DataError, match="response_b"):
        Judge(*tiny).compare([{"context": CTX, "response_a": "x"}])


def test_empty_inputs_give_empty_outputs(tiny):
    judge = Judge(*tiny)
    assert judge.score_absolute([]) == [] and judge.compare([]) == []
