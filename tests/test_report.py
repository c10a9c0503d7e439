"""study_results.py and report.py on a study whose step outputs are written by hand (no model):
the numbers in summary.json equal direct calls, text is escaped, provenance covers every step kind."""

import base64
import json

import numpy as np
import pandas as pd
import pytest

import quantconf as qc
from quantconf.io import atomic_write_json
from quantconf.predictions import MANIFEST, write_predictions
from quantconf.report import write_report
from quantconf.study import load_study, plan
from quantconf.study_results import calib_spread, collect, headlines, provenance

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
            atomic_write_json(s.path / "quantize.json", {"calibration": {"name": s.variant.calib}, "seconds": 1.0})
        elif s.kind == "ppl":
            atomic_write_json(s.path, {"text": "pydoc", "source": "pydoc_data", "tokens": 100, "window": 512,
                                       "stride": 256, "perplexity": 10.0 + len(label)})
        else:
            atomic_write_json(s.path / "outliers.json", {
                "model": {"spec": "org/model"}, "threshold": 6.0, "calibration": {"pydoc": {}, "punct": {}},
                "per_set": {c: {"max_abs": m, "mean_kurtosis": 3.0 * m, "outlier_channels": int(m)}
                            for c, m in (("pydoc", 5.0), ("punct", 9.0))}})
            (s.path / "heatmap_pydoc.png").write_bytes(PNG_1X1)
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
    from quantconf.study_results import model_method_table

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
    from quantconf.study_results import methods_table

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

    from quantconf.report import task_plot_sections
    from quantconf.study_results import StudyResults

    rng = np.random.default_rng(0)

    def frame(task):
        ll = rng.normal(size=(30, 4))
        return pd.DataFrame({"doc_id": range(30), "task": task, "choices": [list("abcd")] * 30,
                             "gold": rng.integers(0, 4, 30), "loglik": list(ll)})

    preds = {("m", "full"): {t: frame(t) for t in ("grp_a", "grp_b")},
             ("m", "rtn"): {t: frame(t) for t in ("grp_a", "grp_b")}}
    study = SimpleNamespace(models=["m"], tasks=["grp"], bins=10, leaf_tasks=lambda: ("grp_a", "grp_b"))
    res = StudyResults(pd.DataFrame(), [], pd.DataFrame(), preds)
    sections = task_plot_sections(study, res)
    assert [s.title for s in sections] == ["m — grp_a", "m — grp_b"]
