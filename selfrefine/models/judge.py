"""Judge scoring with a decoder model: absolute scores, pairwise verdicts, chain-of-thought votes.

Absolute score (decoder-reward-model paper): the judge answers "Is the last response from Assistant
{adjective}? Answer:" with Yes or No; the score is `+1 + logprob` for Yes and `-1 + logprob` for No,
where `logprob` is the (minimum) log-probability of the answer token(s). When both answers are single
tokens — " Yes"/" No" and " A"/" B" are for Llama-family tokenizers — this needs ONE forward pass per
prompt with `logits_to_keep=1` and no `generate`: the answer is the argmax over the two answer
tokens at the last position. Otherwise the two answers are scored by teacher forcing.

Which log-probability: by default (`logprob_space="answers"`) the softmax is restricted to the two
answers, so `logprob = log P(answer | answer is Yes or No) >= log 0.5`. Then every Yes scores in
[1 - ln 2, 1] and every No in [-1 - ln 2, -1]: the sign gives the answer and the order within each
band gives the confidence, even for an untrained judge that puts most mass elsewhere.
`logprob_space="vocab"` uses the full-vocabulary log-probability, as a generated token's log-prob
would be in the paper (scores then range over (-inf, 1] and (-inf, -1]). Both are reported.
`p_yes` (softmax over the two answer logits) is the calibrated-probability output used for ECE.

Pairwise: each pair is judged in both orders (A/B swapped) in the same batched pass; the combined
probability that response A is better is the mean of the two orders, and `consistent` says
whether both orders picked the same response (position-bias check).

Inputs are sorted by token length and left-padded in batches under `torch.inference_mode()`. An
over-long prompt loses its oldest context turns first; when its responses alone are still too long,
they lose their tails (`prompts.fit_with_responses`), so `max_length` bounds every forward pass, as
the reward head's does. `truncated` counts the prompts read without their responses' tails, over
the judge's lifetime.

The items and answers (`AbsoluteItem`, `PairItem`, `AbsoluteScore`, `PairVerdict`, `CotVerdict`)
are the shared judge types of `judge_types`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from selfrefine.errors import ConfigError
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import Dimension, get_dimension
from selfrefine.models.generation.base import GenerationBackend, SamplingParams
from selfrefine.models.judge_types import (
    AbsoluteItem, AbsoluteScore, CotSample, CotVerdict, PairItem, PairVerdict, coerce_item,
)
from selfrefine.progress import Progress

logger = logging.getLogger(__name__)


class Judge:
    """Batched judge scoring over a loaded causal LM and its tokenizer."""

    kind = "generative"  # see `judge_types.JudgeProtocol`; `judge_kind.load_judge` picks the class by kind

    def __init__(self, model: Any, tokenizer: Any, dimension_extra: Mapping[str, str] | None = None,
                 batch_size: int = 16, max_length: int = 1024, *,
                 logprob_space: Literal["answers", "vocab"] = "answers",
                 absolute_demonstrations: Sequence[P.Demonstration] = (),
                 pairwise_demonstrations: Sequence[P.Demonstration] = (),
                 backend: GenerationBackend | None = None, log_every_seconds: float = 30.0):
        if logprob_space not in ("answers", "vocab"):
            raise ValueError(f"logprob_space must be 'answers' or 'vocab', got {logprob_space!r}")
        self.model, self.tokenizer = model, tokenizer
        self.dimension_extra = dict(dimension_extra or {})
        self.batch_size, self.max_length = batch_size, max_length
        self.logprob_space = logprob_space
        self.absolute_demonstrations = tuple(absolute_demonstrations)
        self.pairwise_demonstrations = tuple(pairwise_demonstrations)
        self.log_every_seconds = log_every_seconds
        self._backend = backend
        self.truncated = 0  # prompts whose responses lost their tail, over all calls
        self._yes_no = self._answer_ids((P.YES, P.NO))
        self._a_b = self._answer_ids((P.OPTION_A, P.OPTION_B))

    @classmethod
    def from_pretrained(cls, model_name: str, *, dtype: str = "auto", device: str = "auto",
                        **kwargs: Any) -> "Judge":
        from selfrefine.models.loading import load_model

        model, tokenizer = load_model(model_name, dtype=dtype, device=device)
        return cls(model, tokenizer, **kwargs)

    @property
    def backend(self) -> GenerationBackend:
        """Generation backend for CoT; by default the judge model itself through transformers."""
        if self._backend is None:
            from selfrefine.models.generation.hf import TransformersBackend

            self._backend = TransformersBackend(self.model, self.tokenizer, batch_size=self.batch_size,
                                                log_every_seconds=self.log_every_seconds)
        return self._backend

    def dimension(self, name: str) -> Dimension:
        return get_dimension(name, self.dimension_extra)

    # -- public scoring --

    def score_absolute(self, items: Sequence[AbsoluteItem | Mapping]) -> list[AbsoluteScore]:
        """Absolute scores in input order (see the module docstring for the definition)."""
        items = [coerce_item(i, AbsoluteItem) for i in items]
        rendered = [self._fit(lambda ctx, rs, it=it: P.with_demonstrations(
            P.absolute_prompt(ctx, rs[0], self.dimension(it.dimension)), self.absolute_demonstrations),
            it.context, (it.response,)) for it in items]
        self._count_cuts(rendered, self.max_length)
        logits, vocab_lp = self._answer_scores([r.text for r in rendered], self._yes_no)
        scores = []
        for r, (l_yes, l_no), (v_yes, v_no) in zip(rendered, logits, vocab_lp):
            lp_yes, lp_no = _log_softmax2(l_yes, l_no)
            yes = lp_yes >= lp_no
            logprob = (lp_yes if yes else lp_no) if self.logprob_space == "answers" else (v_yes if yes else v_no)
            scores.append(AbsoluteScore(
                answer="Yes" if yes else "No", score=(1.0 if yes else -1.0) + logprob, logprob=logprob,
                p_yes=math.exp(lp_yes), vocab_logprob=v_yes if yes else v_no, turns_cut=r.turns_cut))
        return scores

    def compare(self, items: Sequence[PairItem | Mapping]) -> list[PairVerdict]:
        """Pairwise verdicts from both presentation orders, batched together."""
        items = [coerce_item(i, PairItem) for i in items]
        rendered = []
        for it in items:
            dim = self.dimension(it.dimension)
            for a, b in ((it.response_a, it.response_b), (it.response_b, it.response_a)):
                rendered.append(self._fit(lambda ctx, rs, dim=dim: P.with_demonstrations(
                    P.pairwise_prompt(ctx, *rs, dim), self.pairwise_demonstrations), it.context, (a, b)))
        self._count_cuts(rendered, self.max_length)
        logits, _ = self._answer_scores([r.text for r in rendered], self._a_b)
        verdicts = []
        for i in range(len(items)):
            p_forward = math.exp(_log_softmax2(*logits[2 * i])[0])       # P(" A"), A shown first
            p_swapped = math.exp(_log_softmax2(*logits[2 * i + 1])[1])   # P(" B"), A shown second
            p_a = (p_forward + p_swapped) / 2
            verdicts.append(PairVerdict(
                verdict="A" if p_a >= 0.5 else "B", p_a=p_a, p_a_forward=p_forward, p_a_swapped=p_swapped,
                consistent=(p_forward >= 0.5) == (p_swapped >= 0.5),
                turns_cut=max(rendered[2 * i].turns_cut, rendered[2 * i + 1].turns_cut)))
        return verdicts

    def compare_cot(self, items: Sequence[PairItem | Mapping], k: int = 5, *,
                    params: SamplingParams | None = None, both_orders: bool = False,
                    hints: Sequence[Literal["A", "B"] | None] | None = None) -> list[CotVerdict]:
        """Chain-of-thought verdicts by majority vote over `k` sampled rationales (self-consistency).

        The number of samples is `k`; `params.n` is ignored. `both_orders` spends half the samples (rounded up) on the swapped presentation, mapping
        its verdicts back. `hints` (the correct label per item, for STaR rationalisation) is passed
        to `cot_prompt`, and mapped to the swapped order when needed.
        """
        items = [coerce_item(i, PairItem) for i in items]
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if hints is not None and len(hints) != len(items):
            raise ValueError(f"hints has {len(hints)} entries for {len(items)} items")
        params = params or SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=256)
        orders = (False, True) if both_orders else (False,)
        counts = {False: k - k // 2, True: k // 2} if both_orders else {False: k}
        samples: list[list[CotSample]] = [[] for _ in items]
        for swapped in orders:
            if counts[swapped] == 0:
                continue
            fitted = []
            for n, it in enumerate(items):
                hint = hints[n] if hints is not None else None
                a, b = (it.response_b, it.response_a) if swapped else (it.response_a, it.response_b)
                if swapped and hint is not None:
                    hint = "B" if hint == "A" else "A"
                dim = self.dimension(it.dimension)
                fitted.append(self._fit(lambda ctx, rs, dim=dim, hint=hint: P.cot_prompt(
                    ctx, *rs, dim, hint=hint), it.context, (a, b), reserve=params.max_new_tokens))
            self._count_cuts(fitted, self.max_length - params.max_new_tokens)
            prompts = [r.text for r in fitted]
            run = SamplingParams(n=counts[swapped], temperature=params.temperature, top_p=params.top_p,
                                 max_new_tokens=params.max_new_tokens,
                                 seed=None if params.seed is None else params.seed + int(swapped),
                                 stop=params.stop)
            for n, generations in enumerate(self.backend.generate(prompts, run)):
                for g in generations:
                    raw = P.parse_verdict(g.text)
                    mapped = raw if not swapped or raw is None else ("B" if raw == "A" else "A")
                    samples[n].append(CotSample(text=g.text, verdict=mapped, swapped=swapped))
        results = []
        for s in samples:
            a = sum(x.verdict == "A" for x in s)
            b = sum(x.verdict == "B" for x in s)
            results.append(CotVerdict(verdict="A" if a > b else "B" if b > a else None, votes_a=a, votes_b=b,
                                      invalid=len(s) - a - b, samples=tuple(s)))
        return results

    # -- internals --

    def _fit(self, render, context, responses: tuple[str, ...], reserve: int = 0) -> P.RenderedPrompt:
        return P.fit_with_responses(render, context, responses, self.tokenizer, self.max_length,
                                    reserve_tokens=reserve)

    def _count_cuts(self, rendered: Sequence[P.RenderedPrompt], budget: int) -> None:
        """Refuse prompts whose own text does not fit `budget`; count those read without their
        responses' tails, under one warning per call."""
        over = [r.n_tokens for r in rendered if r.over_budget]
        if over:  # the prompt's own text does not fit: reading it without its responses would mean nothing
            raise ConfigError(f"judge: {len(over)} of {len(rendered)} prompts take up to {max(over)} tokens with no "
                              f"context and empty responses, more than their budget of {budget} (max_length="
                              f"{self.max_length}, less the tokens kept for generation); raise the judge's max_length")
        cut = sum(r.responses_cut > 0 for r in rendered)
        self.truncated += cut
        if cut:
            logger.warning("judge: %d of %d prompts exceed their budget of %d tokens even without context (the "
                           "responses alone are too long); their responses were read without their tails",
                           cut, len(rendered), budget)

    def _answer_ids(self, answers: tuple[str, str]) -> list[list[int]]:
        """Token ids of each answer as they follow "Answer:" in a prompt (tokenised in place)."""
        probe = "Answer:"
        base = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        out = []
        for answer in answers:
            full = self.tokenizer(probe + answer, add_special_tokens=False)["input_ids"]
            ids = full[len(base):] if full[:len(base)] == base else \
                self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"answer {answer!r} tokenises to nothing")
            out.append(ids)
        return out

    def _answer_scores(self, prompts: list[str], answers: list[list[int]]
                       ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Per prompt: (answer-1 logit, answer-2 logit) and their full-vocabulary log-probs.

        Single-token answers: one forward pass, last position only. Multi-token answers: each answer
        teacher-forced; its "logit" is the summed log-prob (so the two-way softmax is the normalised
        sequence probability) and its vocab log-prob the minimum over its tokens.
        """
        if not prompts:
            return [], []
        prompt_ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        columns = sorted({t for a in answers for t in a})
        col = {t: j for j, t in enumerate(columns)}
        if all(len(a) == 1 for a in answers):
            rows = self._forward(prompt_ids, columns=columns)
            first, second = col[answers[0][0]], col[answers[1][0]]
            logits = [(lg[0][first], lg[0][second]) for lg, _ in rows]
            vocab = [(lg[0][first] - nm[0], lg[0][second] - nm[0]) for lg, nm in rows]
            return logits, vocab
        per_answer = []
        for answer in answers:
            rows = self._forward([p + answer for p in prompt_ids], columns=columns, answer_len=len(answer))
            token_lps = [[lg[j][col[t]] - nm[j] for j, t in enumerate(answer)] for lg, nm in rows]
            per_answer.append([(sum(lps), min(lps)) for lps in token_lps])
        logits = [(x[0], y[0]) for x, y in zip(*per_answer)]
        vocab = [(x[1], y[1]) for x, y in zip(*per_answer)]
        return logits, vocab

    def _forward(self, sequences: list[list[int]], columns: list[int], answer_len: int = 0
                 ) -> list[tuple[list[list[float]], list[float]]]:
        """Length-sorted, left-padded batched forward passes.

        With `answer_len == 0` the sequences are prompts and the one position of interest is the
        last (it predicts the answer token). With `answer_len > 0` each sequence ends with an answer
        of that many tokens, and the positions of interest are the `answer_len` ones predicting it.
        Returns, per sequence in input order, those positions' logits at `columns` and their
        log-normaliser over the whole vocabulary.
        """
        import torch

        from selfrefine.models.batching import left_padded_batches

        model = self.model
        column_ids = torch.tensor(columns, device=model.device)
        keep = answer_len + 1 if answer_len else 1
        results: list[Any] = [None] * len(sequences)
        progress = Progress("judge scoring", len(sequences), "prompts", min_interval=self.log_every_seconds)
        for idx, input_ids, mask in left_padded_batches(sequences, self.batch_size, self.tokenizer.pad_token_id):
            # Positions count real tokens only, so a left-padded row sees the positions it would alone.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                out = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                            position_ids=positions.to(model.device), logits_to_keep=keep,
                            use_cache=False)
                logits = out.logits.float()
                if answer_len:  # the last position predicts past the answer
                    logits = logits[:, :-1, :]
                norm = torch.logsumexp(logits, dim=-1).cpu()
                picked = logits.index_select(-1, column_ids).cpu()
            for row, i in enumerate(idx):
                results[i] = (picked[row].tolist(), norm[row].tolist())
            progress.update(len(idx))
        progress.close()
        return results


def _log_softmax2(a: float, b: float) -> tuple[float, float]:
    """Log-softmax over two logits, numerically stable."""
    m = max(a, b)
    log_z = m + math.log(math.exp(a - m) + math.exp(b - m))
    return a - log_z, b - log_z

