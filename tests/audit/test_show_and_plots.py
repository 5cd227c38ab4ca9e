"""`selfrefine show RUN` names each iteration's judge, policy and data with digests and Prefect ids;
the run's PNG plots exist, carry the right number of iterations and are linked from Prefect."""

from __future__ import annotations

import json
import uuid

from PIL import Image

from selfrefine.cli import main
from selfrefine.figures import SERIES_KEY
from selfrefine.flows.plots import plots_of
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import default_store
from selfrefine.storage.schema import EdgeKind, StageRun

ROLES = {"ingest_data": {"seed_pairs_0", "prompts_0", "heldout_pairs_0", "bestofn_0", "policy_prompts_0"},
         "train_judge": {"judge"}, "policy_round": {"policy"}}


def test_show_is_concise_by_default(runs, capsys):
    assert main(["show", runs.base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["show", runs.base]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for it in report["iterations"]:
        start = lines.index(f"iteration {it['index']}  [completed]")
        block = lines[start + 1:start + 1 + len(it["stages"])]
        for st, line in zip(it["stages"], block):
            # One line per stage: name, status, time and the outputs' short ids.
            assert line.split()[:2] == [st["stage"], st["status"]]
            assert st["duration"] in line
            assert all(f"{role} {out['id'][:8]}" in line for role, out in st["outputs"].items())
    # The headline judge and policy figures: the run's summary table.
    assert "win rate vs base" in text or "vs base" in text
    assert "sha256:" not in text and "prefect task" not in text
    assert lines[-1] == f"full listing: selfrefine show {report['id']} --verbose"


def test_show_lists_judge_policy_and_data_with_digests_and_prefect_ids(runs, capsys):
    assert main(["show", runs.base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["show", runs.base, "--verbose"]) == 0
    text = capsys.readouterr().out
    assert report["prefect_flow_run_id"] and f"prefect flow run {report['prefect_flow_run_id']}" in text
    with default_store().session() as s:
        for it in report["iterations"]:
            assert it["prefect_flow_run_id"] and f"iteration {it['index']}  [completed]  prefect {it['prefect_flow_run_id']}" in text
            stages = {st["stage"]: st for st in it["stages"]}
            for stage, roles in ROLES.items():
                st = stages[stage]
                assert st["prefect_flow_run_id"] == it["prefect_flow_run_id"] and st["prefect_task_run_id"]
                assert f"stage run {st['id'][:8]}  prefect task {st['prefect_task_run_id']}" in text
                assert set(st["outputs"]) == roles
                row = s.get_one(StageRun, uuid.UUID(st["id"]))
                stored = repo.stage_outputs(s, row)
                for role, out in st["outputs"].items():
                    # The exact digest of the registered bytes, and the text names it too.
                    assert (out["id"], out["sha256"]) == (str(stored[role].id), stored[role].sha256)
                    ArtifactStore().verify(stored[role].uri, out["sha256"])
                    assert f"{role}: {out['kind']} {out['id']} sha256:{out['sha256']}\n" in text
        # The run's pictures, after its iterations.
        plots = {role: (str(a.id), a.sha256) for role, a in plots_of(s, uuid.UUID(runs.base)).items()}
        assert {role: (p["id"], p["sha256"]) for role, p in report["plots"].items()} == plots and len(plots) == 4
        for role, (art_id, sha) in plots.items():
            assert f"plots: {role}: {report['plots'][role]['kind']} {art_id} sha256:{sha}\n" in text


def _png_series(path) -> dict:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
        return json.loads(im.text[SERIES_KEY])


def _stored(art):
    path = ArtifactStore().local_path(art.uri)
    ArtifactStore().verify(art.uri, art.sha256)
    return path


def _evaluate_metric(s, run_id: uuid.UUID, index: int, name: str, stage: str = "evaluate") -> float:
    it = next(i for i in repo.iterations_of(s, run_id) if i.index == index)
    row = repo.producing_stage_run(s, repo.stage_run_for(s, it.id, stage))
    return next(m.value for m in repo.metrics_of(s, row.id) if m.name == name and not m.labels)


def test_plots_have_one_point_per_iteration_and_match_the_store(runs):
    with default_store().session() as s:
        for run_text, n in ((runs.base, 2), (runs.variant, 1)):
            run_id = uuid.UUID(run_text)
            found = plots_of(s, run_id)
            assert set(found) == {"metrics_plot", "plot_data", *(f"reliability_iter_{i}" for i in range(1, n + 1))}
            series = _png_series(_stored(found["metrics_plot"]))
            assert series["iterations"] == list(range(1, n + 1))
            assert all(len(series[k]) == n for k in ("pairwise_accuracy", "ece", "bestofn_win_rate",
                                                     "filter_keep_rate", "rationale_keep_rate", "policy_win_rate",
                                                     "policy_lc_win_rate", "policy_win_rate_previous",
                                                     "controllability"))
            for i in range(1, n + 1):
                assert series["pairwise_accuracy"][i - 1] == _evaluate_metric(s, run_id, i, "pairwise_accuracy")
                assert series["ece"][i - 1] == _evaluate_metric(s, run_id, i, "pairwise_calibration_ece")
                assert series["bestofn_win_rate"][i - 1] == _evaluate_metric(s, run_id, i, "bestofn_win_rate")
                for name, metric in (("policy_win_rate", "vs_base_win_rate"), ("policy_lc_win_rate", "vs_base_lc_win_rate"),
                                     ("policy_win_rate_previous", "vs_previous_win_rate"),
                                     ("controllability", "controllability_controllability")):
                    assert series[name][i - 1] == _evaluate_metric(s, run_id, i, metric, "evaluate_policy")
                diagram = _png_series(_stored(found[f"reliability_iter_{i}"]))
                assert len(diagram["bins"]) == 10 and diagram["ece"] == series["ece"][i - 1]
                # Every held-out pair is binned twice (both orders): 6 pairs in the tiny preset.
                assert sum(b["count"] for b in diagram["bins"]) == 12
                it = next(x for x in repo.iterations_of(s, run_id) if x.index == i)
                judge = repo.stage_outputs(s, repo.stage_run_for(s, it.id, "train_judge"))["judge"]
                assert diagram["judge_sha256"] == judge.sha256
            data = json.loads(_stored(found["plot_data"]).read_text())
            assert data["iterations"] == series["iterations"]
            # Lineage: the report stage used exactly each iteration's metrics, filter report, rationales.
            producer = s.get_one(StageRun, found["metrics_plot"].stage_run_id)
            used = {role for role, _ in repo.edges_of(s, producer.id, EdgeKind.uses)}
            assert used == {f"{p}_{i}" for p in ("metrics", "filter_report", "rationales", "policy_metrics")
                            for i in range(1, n + 1)}


def test_plots_are_linked_from_the_last_iterations_prefect_artifacts(runs):
    with default_store().session() as s:
        for run_text in (runs.base, runs.variant):
            run_id = uuid.UUID(run_text)
            last = repo.iterations_of(s, run_id)[-1]
            flow_run_id, markdown = runs.prefect_artifacts[f"run-{run_text[:8]}-iter-{last.index}-plots"]
            assert flow_run_id == last.prefect_flow_run_id
            for role, art in plots_of(s, run_id).items():
                assert f"**{role}**: artifact `{art.id}`, sha256 `{art.sha256}`" in markdown
                if role != "plot_data":
                    assert f"![{role}](data:image/png;base64," in markdown


def test_summary_table_shows_the_policy_and_hides_what_the_run_leaves_out(runs):
    from selfrefine.flows.report import iteration_rows, summary_table

    store = default_store()
    lines = summary_table(store, uuid.UUID(runs.base)).splitlines()
    header = lines[0]
    for label in ("policy pairs", "win vs base", "LC win vs base", "win vs prev", "controllability",
                  "best-of-n", "longest rule", "evaluator bon"):
        assert label in header, label
    # The tiny preset has no keep_best: those columns would be a dash in every row.
    assert "judge val acc" not in header and "kept prev judge" not in header
    rows = iteration_rows(store, uuid.UUID(runs.base))
    assert len(lines) == 1 + len(rows) == 3
    assert all(f"{r['win vs base']:.3f}" in line for r, line in zip(rows, lines[1:]))
