"""study/results.py, study/tables.py and study/report.py on a study whose step outputs are written by hand (no model):
the numbers in summary.json equal direct calls, text is escaped, provenance covers every step kind."""

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantconf as qc
from quantconf.io import atomic_write_json
from quantconf.predictions import MANIFEST, write_predictions
from quantconf.study.report import write_report
from quantconf.study.run import analyse_missing, run_study
from quantconf.errors import QuantconfError
import yaml
from quantconf.study import load_study, plan
from quantconf.study.results import collect, provenance
from quantconf.study.tables import calib_spread, headlines

PNG_1X1 = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def _preds(task, ll, gold):
    n = len(ll)
    return pd.DataFrame({"doc_id": range(n), "task": task, "context": "<b>ctx</b>", "choices": [["a", "b"]] * n,
                         "gold": gold, "loglik": ll, "n_tokens": [[1, 1]] * n, "n_chars": [[1, 1]] * n,
                         "n_bytes": [[1, 1]] * n, "is_greedy": [[True, False]] * n})


@pytest.fixture
def finished_study(tmp_path):
    study = load_study(data={
        "name": "hand <script>x</script>", "models": ["org/model"], "tasks": ["arithmetic"], "bootstrap": 50,
        "variants": [{"method": "gptq", "bits": 4, "group_size": 32, "calib": ["pydoc", "punct"]}],
        "ppl_text": "pydoc", "outliers": True})
    steps = plan(study, tmp_path)
    rng = np.random.default_rng(0)
    full_ll = rng.normal(size=(40, 2)) * 2
    gold = rng.integers(0, 2, 40).tolist()
    written = {}
    for s in steps:
        label = s.variant.label() if s.variant else "full"
        if s.kind == "eval":
            ll = full_ll if s.variant is None else full_ll + rng.normal(size=(40, 2)) * (1 + len(written))
            df = _preds("arithmetic", ll.tolist(), gold)
            write_predictions(df, s.path / "arithmetic.parquet")
            atomic_write_json(s.path / MANIFEST, {"model": {"n_params": 1000}, "dtype": "float32",
                                                  "tasks": {"arithmetic": {"n": 40, "source": "hand"}}})
            written[label] = df
        elif s.kind == "quantize":
            atomic_write_json(s.path / "quantize.json", {"calibration": {"name": s.variant.calib}, "seconds": 1.0,
                                                         "bits_per_weight": 4.5})
        elif s.kind == "ppl":
            atomic_write_json(s.path, {"text": "pydoc", "source": "pydoc_data", "tokens": 100, "window": 512,
                                       "stride": 256, "perplexity": 10.0 + len(label)})
        elif s.kind == "outliers":
            atomic_write_json(s.path / "outliers.json", {
                "model": {"spec": "org/model"}, "threshold": 6.0, "calibration": {"pydoc": {}, "punct": {}},
                "per_set": {c: {"max_abs": m, "mean_kurtosis": 3.0 * m, "outlier_channels": int(m)}
                            for c, m in (("pydoc", 5.0), ("punct", 9.0))}})
            (s.path / "heatmap_pydoc.png").write_bytes(PNG_1X1)
    analyse_missing(study, steps, log=lambda m: None)  # the analysis steps, as the study computes them
    return study, steps, tmp_path, written


def test_summary_numbers_equal_direct_calls(finished_study):
    study, steps, out, written = finished_study
    report = write_report(study, out, steps, log=lambda m: None)
    summary = json.loads((out / "summary.json").read_text())
    for c in summary["comparisons"]:
        direct = qc.compare(written["full"], written[c["variant"]], n_bins=study.bins, n_boot=study.bootstrap)
        for key in ("delta_acc", "delta_ece", "js_mean", "flips_correct_to_wrong", "p_mcnemar"):
            assert c[key] == pytest.approx(direct[key], abs=1e-12), key
        assert c["ci"]["delta_nll"] == pytest.approx(direct["ci"]["delta_nll"])
    rows = {r["variant"]: r for r in summary["metrics"]}
    assert rows["full"]["ece"] == pytest.approx(qc.metrics(written["full"], n_boot=0)["ece"])
    assert rows["full"]["ppl"] == pytest.approx(14.0)  # 10 + len("full")
    page = report.read_text()
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "Calibration-set sensitivity" in page and "predict its quantization loss" in page
    assert 'alt="heatmap_pydoc"' in page and page.count("data:image/png;base64") >= 2
    spread = pd.read_csv(out / "calib_spread.csv")
    assert spread["n_sets"].tolist() == [2]
    # temperature scaling: one entry per (variant, task), the same T as a direct call, a verdict line per variant
    recal = {r["variant"]: r for r in summary["recalibration"]}
    assert set(recal) == {"full", "gptq-w4g32-pydoc-s0", "gptq-w4g32-punct-s0"}
    assert recal["full"]["temperature"] == pytest.approx(qc.recalibrate(written["full"], n_boot=0)["temperature"])
    assert "Can one temperature undo it?" in page and page.count("quantized minus full ECE") == 2
    # new metrics reach summary.csv with their CIs
    csv = pd.read_csv(out / "summary.csv")
    for m in ("smece", "auroc", "aurc", "eaurc", "tace", "ece_sweep", "brier_reliability"):
        assert csv[m].notna().all() and (csv[f"{m}_lo"] <= csv[f"{m}_hi"]).all()


def test_report_html_that_is_a_directory_is_refused_before_anything_is_written(finished_study, capsys):
    """report.html as a directory was an IsADirectoryError after summary.csv had been rewritten."""
    from quantconf.cli import main
    from quantconf.io import atomic_write_bytes

    study, steps, study_dir, _ = finished_study
    atomic_write_bytes(study_dir / "study.yaml", yaml.safe_dump(study.as_dict(), sort_keys=False).encode())
    (study_dir / "report.html").mkdir()
    before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*")}
    assert main(["report", str(study_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{study_dir / 'report.html'} is a directory, where quantconf writes a file; move it away" in err
    assert "Traceback" not in err and {p: p.stat().st_mtime_ns for p in study_dir.rglob("*")} == before
    with pytest.raises(QuantconfError, match="is a directory, where quantconf writes a file"):
        run_study(study, study_dir)  # refused before any step runs


def test_provenance_reads_each_step_kinds_own_record(finished_study):
    study, steps, _, _ = finished_study
    prov = provenance(study, steps)
    by_kind = {}
    for e in prov["steps"]:
        by_kind.setdefault(e["kind"], []).append(e)
    assert {e["perplexity"] for e in by_kind["ppl"]} == {14.0, 10.0 + len("gptq-w4g32-pydoc-s0"),
                                                          10.0 + len("gptq-w4g32-punct-s0")}
    assert by_kind["outliers"][0]["threshold"] == 6.0 and by_kind["outliers"][0]["model"] == {"spec": "org/model"}
    assert by_kind["quantize"][0]["calibration"] == {"name": "pydoc"}
    assert by_kind["eval"][0]["tasks"]["arithmetic"]["source"] == "hand"
    assert prov["study"]["name"] == study.name and prov["study"]["variants"][0]["calib"] == "pydoc"


def test_headlines_and_spread_from_tables(finished_study):
    study, steps, _, _ = finished_study
    res = collect(study, steps)
    lines = headlines(res.comparisons)
    assert len(lines) == 4 and all(line.startswith("org/model / gptq-w4g32-") for line in lines)
    assert "low-confidence samples hit hardest?" in lines[1]
    spread = calib_spread(res.metrics)
    accs = res.metrics[res.metrics["variant"] != "full"]["acc"]
    assert spread["acc_range"].iloc[0] == pytest.approx(accs.max() - accs.min())


def test_model_method_table_averages_tasks_by_hand():
    from quantconf.study.tables import model_method_table

    def comp(model, task, dacc, dece, js, low, high):
        return {"model": model, "variant": "rtn", "task": task, "delta_acc": dacc, "delta_ece": dece, "js_mean": js,
                "by_confidence_bin": [{"flip_rate": low}, {"flip_rate": 0.5}, {"flip_rate": high}]}

    table = model_method_table([comp("a", "t1", -0.1, 0.02, 0.2, 0.4, 0.0), comp("a", "t2", 0.0, 0.04, 0.1, 0.2, 0.1),
                                comp("b", "t1", 0.05, -0.01, 0.3, 0.3, 0.2)])
    assert table["model"].tolist() == ["a", "b"] and table["tasks"].tolist() == [2, 1]
    a = table.iloc[0]
    assert a["Δacc"] == pytest.approx(-0.05) and a["ΔECE"] == pytest.approx(0.03) and a["JS mean"] == pytest.approx(0.15)
    assert a["flip rate, least-confident bin"] == pytest.approx(0.3) and a["flip rate, most-confident bin"] == pytest.approx(0.05)
    assert model_method_table([]).empty


def test_methods_table_reads_records_and_averages_tasks_by_hand():
    from quantconf.study.tables import methods_table

    def comp(variant, task, dacc, js, c2w, w2c, n=10):
        return {"model": "m", "variant": variant, "task": task, "n": n, "delta_acc": dacc, "delta_ece": 0.01,
                "js_mean": js, "flips_correct_to_wrong": c2w, "flips_wrong_to_correct": w2c}

    records = {("m", "gguf-Q4_0"): {"method": "gguf", "bits_per_weight": 4.5, "deployed_bytes": 2_000_000,
                                    "seconds": 3.0}}
    table = methods_table([comp("gguf-Q4_0", "t1", -0.1, 0.2, 2, 1), comp("gguf-Q4_0", "t2", 0.0, 0.1, 0, 1),
                           comp("bnb-nf4", "t1", 0.1, 0.3, 0, 0)], records)
    g = table.iloc[0]
    assert g["method"] == "gguf" and g["bits/weight"] == 4.5 and g["size (MB)"] == 2.0 and g["quantize (s)"] == 3.0
    assert g["Δacc"] == pytest.approx(-0.05) and g["JS mean"] == pytest.approx(0.15)
    assert g["flip rate"] == pytest.approx((0.3 + 0.1) / 2)
    b = table.iloc[1]  # no record: method from the label, costs unknown
    assert b["method"] == "bnb" and np.isnan(b["bits/weight"]) and b["flip rate"] == 0
    assert methods_table([], {}).empty


def test_task_plots_cover_a_groups_subtasks_not_the_group_name():
    """A study on an lm-eval group (mmlu) evaluates its subtasks: the per-task plots are theirs (the
    group's own name holds no predictions, so a loop over study.tasks drew empty plots)."""
    from types import SimpleNamespace

    from quantconf.study.report import task_plot_sections
    from quantconf.study.results import StudyResults

    rng = np.random.default_rng(0)

    def frame(task):
        ll = rng.normal(size=(30, 4))
        return pd.DataFrame({"doc_id": range(30), "task": task, "choices": [list("abcd")] * 30,
                             "gold": rng.integers(0, 4, 30), "loglik": list(ll)})

    from quantconf.analysis.metrics import reliability_bins
    from quantconf.kinds import kind_of

    preds = {("m", label, t): frame(t) for label in ("full", "rtn") for t in ("grp_a", "grp_b")}
    reliability = {key: reliability_bins(*kind_of(df).confidence_and_correctness(df), 10) for key, df in preds.items()}
    study = SimpleNamespace(models=["m"], tasks=["grp"], bins=10, leaf_tasks=lambda: ("grp_a", "grp_b"))
    res = StudyResults(pd.DataFrame(), [], pd.DataFrame(), pd.DataFrame(), reliability,
                       {key: "multiple_choice" for key in preds})
    sections = task_plot_sections(study, res)
    assert [s.title for s in sections] == ["m — grp_a", "m — grp_b"]


def test_question_table_by_hand():
    """Two questions, gold 0: the first flips correct→wrong, the second stays wrong; replicates counted."""
    from quantconf.kinds.choice import MULTIPLE_CHOICE
    from quantconf.study.results import question_table
    from quantconf.study.tables import question_counts

    def preds(ll):
        return pd.DataFrame({"doc_id": [0, 1], "task": "t", "context": ["q0", "q1"], "choices": [["a", "b"]] * 2,
                             "gold": [0, 0], "loglik": ll})

    full = preds([[0.0, -1.0], [-2.0, 0.0]])
    r1 = preds([[-1.0, 0.0], [-2.0, 0.0]])
    r2 = preds([[0.0, -3.0], [-2.0, 0.0]])
    comps = [{"model": "m", "variant": v, "task": "t", "replicate_family": "fam"} for v in ("r1", "r2")]
    rows = {("m", label, "t"): pd.DataFrame(MULTIPLE_CHOICE.question_rows(full, quant, "t"))
            for label, quant in (("r1", r1), ("r2", r2))}
    q = question_table(rows, comps)
    assert q["flip"].tolist() == ["correct_to_wrong", "none", "none", "none"]
    assert q["full_answer"].tolist() == ["a", "b", "a", "b"] and q["quant_answer"].tolist() == ["b", "b", "a", "b"]
    p0 = 1 / (1 + np.exp(-1.0))  # softmax([0, -1])[0]
    assert q["full_p_gold"].iloc[0] == pytest.approx(p0) and q["quant_p_gold"].iloc[0] == pytest.approx(1 - p0)
    assert q["delta_p_gold"].iloc[1] == pytest.approx(0.0)
    # r1 answers b on question 0, r2 answers a: one of two replicates each; both answer b on question 1
    assert q["replicate_agreement"].tolist() == ["1/2", "2/2", "1/2", "2/2"]
    assert question_counts(q) == {"rows": 4, "correct_to_wrong": 1, "wrong_to_correct": 0, "none": 3}


def test_explorer_rows_and_flips_equal_the_comparisons(finished_study):
    """The page's explorer has one row per compared question, flip kinds as the comparisons count them,
    and every text in it is escaped; plotly is embedded (no CDN)."""
    import re

    study, steps, out, _ = finished_study
    page = write_report(study, out, steps, log=lambda m: None).read_text()
    summary = json.loads((out / "summary.json").read_text())
    comps = summary["comparisons"]
    rows = re.findall(r'<tr data-flip="([a-z_]+)"', page)
    assert len(rows) == sum(c["n"] for c in comps) == summary["questions"]["rows"]
    for kind, key in (("correct_to_wrong", "flips_correct_to_wrong"), ("wrong_to_correct", "flips_wrong_to_correct")):
        assert rows.count(kind) == sum(c[key] for c in comps) == summary["questions"][kind]
    assert sum(c["flips_correct_to_wrong"] for c in comps) > 0
    assert "<b>ctx</b>" not in page and "&lt;b&gt;ctx&lt;/b&gt;" in page
    assert "<script src" not in page and "Plotly.newPlot" in page and page.count('class="plot"') >= 2
    csv = pd.read_csv(out / "questions.csv")
    assert len(csv) == len(rows)


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (`apt-get install chromium`; .ci/run installs it)")
def test_report_in_a_real_browser(finished_study, tmp_path_factory):
    """The page in headless Chromium: no console error, the plots drawn, the explorer's rows and its
    correct→wrong filter equal summary.json, sorting works; one screenshot per section
    (into $QUANTCONF_SCREENSHOTS when set)."""
    import os

    from playwright.sync_api import sync_playwright

    study, steps, out, _ = finished_study
    report = write_report(study, out, steps, log=lambda m: None)
    summary = json.loads((out / "summary.json").read_text())
    shots = Path(os.environ.get("QUANTCONF_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_selector(".plot .main-svg")
        assert page.locator(".plot .js-plotly-plot").count() == page.locator(".plot").count() >= 2
        visible = "#questions tbody tr:not([hidden])"
        assert page.locator(visible).count() == sum(c["n"] for c in summary["comparisons"])
        page.select_option("#q-flip", "correct_to_wrong")
        c2w = sum(c["flips_correct_to_wrong"] for c in summary["comparisons"])
        assert page.locator(visible).count() == c2w > 0
        assert page.inner_text("#q-count").startswith(f"{c2w} of ")
        assert set(page.eval_on_selector_all(visible, "rows => rows.map(r => r.dataset.flip)")) == {"correct_to_wrong"}
        page.select_option("#q-flip", "")
        page.select_option("#q-variant", summary["comparisons"][0]["variant"])
        assert page.locator(visible).count() == summary["comparisons"][0]["n"]
        page.fill("#q-min-delta", "0.2")
        deltas = page.eval_on_selector_all(visible, "rows => rows.map(r => parseFloat(r.dataset.delta))")
        assert deltas and all(abs(d) >= 0.2 for d in deltas)
        page.fill("#q-min-delta", "0")
        page.click("#questions th:has-text('Δp(gold)')")  # ascending
        deltas = page.eval_on_selector_all(visible, "rows => rows.map(r => parseFloat(r.dataset.delta))")
        assert deltas == sorted(deltas)
        page.select_option("#q-variant", "")
        for i in range(page.locator("section[id]").count()):
            section = page.locator("section[id]").nth(i)
            section.screenshot(path=str(shots / f"{i + 1:02d}-{section.get_attribute('id')}.png"))
        browser.close()
    assert errors == []
    assert len(list(shots.glob("*.png"))) >= 5


def test_recalibration_maps_table_per_variant_with_gap_intervals(finished_study):
    """Each (model, variant, single-answer task) has every map's held-out ECE; quantized variants their gap to the
    full model after each map with a paired interval; the report has the section, summary.json the rows."""
    from quantconf.analysis.recalibration_maps import MAPS

    study, steps, out, _ = finished_study
    page = write_report(study, out, steps, log=lambda m: None).read_text()
    maps = json.loads((out / "summary.json").read_text())["recalibration_maps"]
    assert maps and "Which recalibration map undoes it?" in page
    for m in maps:
        assert all(0 <= m[name]["ece_after"] <= 1 for name in MAPS) and 0 <= m["ece_before"] <= 1
        if m["variant"] != "full":
            assert set(m["gap"]) == {"before", *MAPS}
            assert all(g["ci"][0] <= g["estimate"] <= g["ci"][1] for g in m["gap"].values())
        else:
            assert "gap" not in m
