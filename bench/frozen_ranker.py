"""A lever for the helpful judge: a linear ranker on the packaged model's frozen features.

Does the packaged model see anything in a response, beyond its length, that predicts AlpacaEval's
preference? Each of the 11 candidates of an AlpacaEval prompt is read once by the packaged model
(rendered with its chat template) and described by feature blocks:

- `length`: log characters and log tokens of the response;
- `logprob`: the response's mean and summed token log-probability under the model, and the mean over
  its first 32 tokens;
- `last`, `mean`, `mid`: the last layer's hidden state at the last token, its mean over the response
  tokens, and the middle layer's mean over them (576 numbers each);
- `judge`: the generative judge's helpful reading of the response — the packaged model asked
  selfrefine's absolute Yes/No question (`load_judge`, `score_absolute`): log P(Yes)/P(No) and the
  paper's score. Rankers on it alone, or beside the other blocks, are the issue's "combining the
  reward head with the generative judge's helpful reading" on frozen features.

Features are centred within each prompt (only the ranking among one prompt's candidates counts).
A ranker — ridge regression on the graded preference; the same with the length block fitted beside
the others and left out when scoring (length-disentangled, ODIN's idea in linear form); or a
logistic regression on the feature differences of every candidate pair whose preferences differ,
weighted by the gap (on the hidden-state sets, through their first 16 principal components) — is
chosen with its regularisation by 5-fold
cross-validation over the seed prompts (the first 200, as
bench/quality.py lays the data out), three shuffles of the folds averaged. The chosen ranker is fitted
on all seed prompts and measured once on the 203 held-out prompts, next to random, the longest-response
rule and the oracle (`scoring.metrics.best_of_n_metrics`); so is the best length-disentangled ranker
by the same cross-validation, with its length bias. Nothing is chosen on the held-out prompts.

    python bench/frozen_ranker.py [--features FILE]    # FILE caches the features between runs

About 25 minutes on two cores with native bf16 for the model's features (4,433 forward passes), 15
for the judge's reading, two for the rankers; a --features cache computed before the judge block
existed gains it on the next run. Full runs write this script's section of bench/RESULTS.md.

Last line: RESULT frozen_bon=… frozen_bon_se=… longest_bon=… margin=… margin_se=… length_spearman=… cv_bon=… cv_longest=…
odin_bon=… odin_margin=… odin_length_spearman=…
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import command_line, missing_data, reading_label, start_logging  # noqa: E402
from quality import ALPACA  # noqa: E402
from results_file import write_section  # noqa: E402

SECTION = "bench/frozen_ranker.py"
SEED_PROMPTS = 200  # bench/quality.py's seed prompts; the rest are its held-out best-of-11 prompts
MODEL_BLOCKS = ("length", "logprob", "last", "mean", "mid")  # one forward pass of the model per candidate
BLOCKS = (*MODEL_BLOCKS, "judge")  # the judge block is read apart: the Yes/No prompt wraps the response
FEATURE_SETS = (("length",), ("logprob",), ("length", "logprob"), ("mean",), ("last",), ("mid",),
                ("length", "logprob", "mean"), ("length", "logprob", "last"), ("length", "logprob", "mean", "mid"),
                ("judge",), ("length", "judge"), ("length", "logprob", "judge"), ("length", "logprob", "last", "judge"))
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4)
PAIR_CS = (1e-3, 1e-2, 1e-1)
# The pairwise logistic regression fits ~16,000 difference vectors per fold: quick on the length and
# log-probability features, tens of minutes per feature set on the hidden states, which it therefore
# reads through their first principal components.
MAX_PAIRWISE_WIDTH = 16
PCA_COMPONENTS = 16  # wider sets go to the pairwise ranker through this many principal components
MAX_TOKENS = 1024
ODIN = "length dropped,"  # label prefix of the length-disentangled rankers (fit_ridge's drop_first)


def read_rows() -> list[dict]:
    with gzip.open(ALPACA, "rt") as f:
        return [json.loads(line) for line in f]


def extract_features(rows: list[dict]) -> dict[str, np.ndarray]:
    """The feature blocks of every candidate, shape (prompts, 11, width)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfrefine.models.loading import bf16_supported, ensure_packaged_model
    from selfrefine.progress import Progress

    path = ensure_packaged_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    middle = model.config.num_hidden_layers // 2
    out: dict[str, list] = {name: [] for name in MODEL_BLOCKS}
    n = sum(len(r["candidates"]) for r in rows)
    with Progress("frozen features", n, "responses", min_interval=30) as progress, torch.inference_mode():
        for row in rows:
            prompt = [{"role": "user", "content": row["instruction"]}]
            head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            prefix = len(tokenizer(head, add_special_tokens=False)["input_ids"])
            for cand in row["candidates"]:
                text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": cand["output"]}],
                                                     tokenize=False)
                ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :MAX_TOKENS]
                result = model(ids, output_hidden_states=True)
                hidden, response = result.hidden_states, slice(prefix, ids.shape[1])
                # Log-probabilities of the response tokens only: the vocabulary projection is the costly part.
                logits = result.logits[0, prefix - 1:-1].float()
                token_lp = logits.log_softmax(-1).gather(1, ids[0, prefix:, None])[:, 0]
                out["length"].append([np.log1p(len(cand["output"])), np.log1p(ids.shape[1] - prefix)])
                out["logprob"].append([token_lp.mean().item(), token_lp.sum().item() / 100, token_lp[:32].mean().item()])
                out["last"].append(hidden[-1][0, -1].float().numpy())
                out["mean"].append(hidden[-1][0, response].float().mean(0).numpy())
                out["mid"].append(hidden[middle][0, response].float().mean(0).numpy())
                progress.update(1)
    return {name: np.asarray(v, dtype=np.float64).reshape(len(rows), 11, -1) for name, v in out.items()}


def judge_reading(rows: list[dict]) -> dict[str, np.ndarray]:
    """The `judge` block: the packaged model as selfrefine's generative judge, asked whether each
    candidate is helpful (its absolute Yes/No prompt): log-odds of Yes and the absolute score."""
    from selfrefine.models.judge_kind import load_judge
    from selfrefine.models.judge_types import AbsoluteItem

    judge = load_judge("packaged", max_length=MAX_TOKENS)  # bf16 where the CPU runs it natively
    items = [AbsoluteItem([{"role": "user", "content": r["instruction"]}], c["output"], "helpful")
             for r in rows for c in r["candidates"]]
    scores = judge.score_absolute(items)
    p_yes = np.clip([s.p_yes for s in scores], 1e-6, 1 - 1e-6)
    block = np.stack([np.log(p_yes / (1 - p_yes)), [s.score for s in scores]], axis=-1)
    return {"judge": block.reshape(len(rows), 11, -1)}


def design(features: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    x = np.concatenate([features[name] for name in names], axis=-1)
    return x - x.mean(axis=1, keepdims=True)  # within-prompt: only the ranking inside a prompt counts


def fit_ridge(alpha: float, drop_first: int = 0):
    """Ridge regression of the within-prompt preference on the features. With `drop_first` = n, the
    first n columns (the length block) are fitted with the rest and left out when scoring: the
    length-disentangled ranker of ODIN (Chen et al. 2024) in linear form. Length absorbs the part of
    the preference it explains during the fit, so the other features' weights say what the response
    is worth at a given length."""
    from sklearn.linear_model import Ridge

    def fit(x, wins):
        d = x.shape[-1]
        scale = x.reshape(-1, d).std(0) + 1e-6
        target = (wins - wins.mean(1, keepdims=True)).ravel()
        model = Ridge(alpha=alpha).fit(x.reshape(-1, d) / scale, target)
        weights = model.coef_.copy()
        weights[:drop_first] = 0.0  # features are centred within each prompt: a zero column adds nothing
        return lambda z: (z.reshape(-1, d) / scale @ weights).reshape(len(z), -1)
    return fit


def fit_pairwise(c: float, min_gap: float = 0.1, components: int | None = None):
    """Logistic regression on the feature differences of every candidate pair whose preferences differ
    by more than `min_gap`, each weighted by its gap. With `components`, the standardised features are
    first projected on that many principal components, fitted on the training prompts' candidates
    only (no labels), so that the hidden-state sets fit in seconds."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    def fit(x, wins):
        d = x.shape[-1]
        scale = x.reshape(-1, d).std(0) + 1e-6
        if components is not None:
            pca = PCA(n_components=components, random_state=0).fit(x.reshape(-1, d) / scale)

            def project(z):
                return pca.transform(z.reshape(-1, d) / scale).reshape(len(z), -1, components)
            score = fit_pairwise(c, min_gap)(project(x), wins)
            return lambda z: score(project(z))
        diffs, weights = [], []
        for i in range(len(x)):
            for a, b in itertools.combinations(range(x.shape[1]), 2):
                gap = wins[i, a] - wins[i, b]
                if abs(gap) > min_gap:
                    diffs.append(np.sign(gap) * (x[i, a] - x[i, b]) / scale)
                    weights.append(abs(gap))
        diffs = np.asarray(diffs)
        model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(
            np.concatenate([diffs, -diffs]), np.r_[np.ones(len(diffs)), np.zeros(len(diffs))],
            sample_weight=np.r_[weights, weights])
        return lambda z: (z.reshape(-1, d) / scale @ model.coef_[0]).reshape(len(z), -1)
    return fit


def rankers(width: int, length_width: int = 0):
    """Every ranker tried on a feature set `width` wide whose first `length_width` columns are the
    length block (0 when the set has none, or nothing else beside it)."""
    yield from ((f"ridge α={a:g}", fit_ridge(a)) for a in RIDGE_ALPHAS)
    if length_width:
        yield from ((f"{ODIN} ridge α={a:g}", fit_ridge(a, drop_first=length_width)) for a in RIDGE_ALPHAS)
    if width <= MAX_PAIRWISE_WIDTH:
        yield from ((f"pairwise logistic C={c:g}", fit_pairwise(c)) for c in PAIR_CS)
    else:
        yield from ((f"pairwise logistic on {PCA_COMPONENTS} principal components C={c:g}",
                     fit_pairwise(c, components=PCA_COMPONENTS)) for c in PAIR_CS)


def length_width(features: dict[str, np.ndarray], names: tuple[str, ...]) -> int:
    """How many leading columns of `design(features, names)` are the length block, when it has other
    blocks beside it (dropping the only block would leave nothing to rank by)."""
    return features["length"].shape[-1] if names[0] == "length" and len(names) > 1 else 0


def set_row(name: str, best: dict[str, float]) -> str:
    """A feature set's table row: its best cross-validated figure by kind of ranker."""
    odin = f"{best['odin']:.3f}" if "odin" in best else "no other block" if "length" in name else "no length block"
    pca = f"{best['pca']:.3f}" if "pca" in best else "narrow set: pairwise on the features themselves"
    return f"| {name} | {best['plain']:.3f} | {odin} | {pca} |"


def cross_validated_bon(x: np.ndarray, wins: np.ndarray, fit, folds: int = 5, shuffles: int = 3) -> float:
    picks_win = []
    for shuffle in range(shuffles):
        order = np.random.default_rng(shuffle).permutation(len(x))
        for held in np.array_split(order, folds):
            train = np.setdiff1d(order, held)
            scores = fit(x[train], wins[train])(x[held])
            picks_win.append(wins[held, scores.argmax(1)])
    return float(np.mean(np.concatenate(picks_win)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", default=None, help="cache the features in this .npz file and reuse it")
    parser.add_argument("--smoke", action="store_true", help="leave bench/RESULTS.md alone")
    args = parser.parse_args()
    if missing_data(ALPACA):
        return
    start_logging()
    from selfrefine.data.schema import BestOfNItem, Candidate
    from selfrefine.scoring.metrics import best_of_n_metrics

    started = time.time()
    rows = read_rows()
    cache = Path(args.features) if args.features else None
    features: dict[str, np.ndarray] = {}
    if cache and cache.is_file():
        with np.load(cache) as stored:
            features = {name: stored[name] for name in BLOCKS if name in stored}
    cached = [name for name in BLOCKS if name in features]
    if set(MODEL_BLOCKS) - set(features):
        features.update(extract_features(rows))
    if "judge" not in features:
        features.update(judge_reading(rows))
    computed = [name for name in BLOCKS if name not in cached]
    if cache and computed:
        np.savez(cache, **features)
    timing = "; ".join(part for part in (
        f"{', '.join(cached)} read from {cache} (an earlier run of this command computed them)" if cached else "",
        f"{', '.join(computed)} computed in {(time.time() - started) / 60:.0f} min" if computed else "") if part)
    fitting = time.time()
    wins = np.array([[c["preference"] - 1.0 for c in r["candidates"]] for r in rows])
    seed, held = slice(0, SEED_PROMPTS), slice(SEED_PROMPTS, len(rows))
    chars = np.array([[len(c["output"]) for c in r["candidates"]] for r in rows])
    cv_longest = float(wins[seed][np.arange(SEED_PROMPTS), chars[seed].argmax(1)].mean())

    results = []
    for names in FEATURE_SETS:
        x = design(features, names)
        for label, fit in rankers(x.shape[-1], length_width(features, names)):
            results.append((cross_validated_bon(x[seed], wins[seed], fit), names, label, fit))
            print(f"cv  {'+'.join(names):28s} {label:28s} {results[-1][0]:.3f}", flush=True)
    items = [BestOfNItem(context=[{"role": "user", "content": r["instruction"]}],
                         candidates=[Candidate(c["output"], c["preference"]) for c in r["candidates"]],
                         reference=r["reference"]) for r in rows[held]]

    def held_out(result) -> dict:
        """The held-out best-of-11 of a ranker chosen on the seed prompts, fitted on all of them."""
        _, names, _, fit = result
        x = design(features, names)
        return best_of_n_metrics(items, fit(x[seed], wins[seed])(x[held]).tolist())

    chosen = max(results, key=lambda r: r[0])
    cv_bon, names, label, _ = chosen
    m = held_out(chosen)
    odin_results = [r for r in results if r[2].startswith(ODIN)]
    odin = max(odin_results, key=lambda r: r[0])
    o = held_out(odin)
    by_set: dict[str, dict[str, float]] = {}
    for value, set_names, set_label, _ in results:
        best = by_set.setdefault("+".join(set_names), {})
        kind = "odin" if set_label.startswith(ODIN) else "pca" if "principal" in set_label else "plain"
        best[kind] = max(best.get(kind, 0.0), value)
    lines = [
        "## The packaged model's frozen features as a helpful ranker (bench/frozen_ranker.py)", "",
        f"`{command_line()}` — {reading_label()}; {timing}, rankers {(time.time() - fitting) / 60:.1f} min. Cross-validated best-of-11 on the "
        f"{SEED_PROMPTS} seed prompts (5 folds × 3 shuffles; the longest rule gives {cv_longest:.3f} there), "
        "the best regularisation per feature set and kind of ranker. The length-disentangled rankers (ODIN's idea in linear form) fit the "
        "length block with the others and leave it out when scoring; the hidden-state sets also go to the "
        f"gap-weighted pairwise ranker through their first {PCA_COMPONENTS} principal components:", "",
        "| features | ridge, or on narrow sets also pairwise | length-disentangled ridge | pairwise on principal components |",
        "|---|---|---|---|",
        *[set_row(name, best) for name, best in by_set.items()], "",
        f"Chosen on the seed prompts: {'+'.join(names)}, {label} (cv {cv_bon:.3f}); the best length-disentangled "
        f"ranker there: {'+'.join(odin[1])}, {odin[2]} (cv {odin[0]:.3f}). Each is measured once on the "
        f"{len(items)} held-out prompts:", "",
        "| picker | best-of-11 win rate | margin over the longest rule (paired) | length bias (Spearman) |",
        "|---|---|---|---|",
        f"| frozen-feature ranker (chosen) | {m['win_rate']:.3f} ± {m['win_rate_se']:.3f} | "
        f"{m['margin_over_longest']:+.3f} ± {m['margin_over_longest_se']:.3f} | {m['length_spearman']:.3f} |",
        f"| length-disentangled ranker | {o['win_rate']:.3f} ± {o['win_rate_se']:.3f} | "
        f"{o['margin_over_longest']:+.3f} ± {o['margin_over_longest_se']:.3f} | {o['length_spearman']:.3f} |",
        f"| longest candidate | {m['longest_win_rate']:.3f} | | 1.000 |",
        f"| random | {m['random_win_rate']:.3f} | | |",
        f"| oracle | {m['oracle_win_rate']:.3f} | | |",
    ]
    result = (f"RESULT frozen_bon={m['win_rate']:.3f} frozen_bon_se={m['win_rate_se']:.3f} "
              f"longest_bon={m['longest_win_rate']:.3f} margin={m['margin_over_longest']:.3f} "
              f"margin_se={m['margin_over_longest_se']:.3f} length_spearman={m['length_spearman']:.3f} "
              f"cv_bon={cv_bon:.3f} cv_longest={cv_longest:.3f} odin_bon={o['win_rate']:.3f} "
              f"odin_margin={o['margin_over_longest']:.3f} odin_length_spearman={o['length_spearman']:.3f}")
    print("\n".join(lines))
    if not args.smoke:
        write_section(SECTION, [*lines, "", f"`{result}`"])
    print(result)


if __name__ == "__main__":
    main()
