import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from quantconf import QuantconfError
from quantconf.cli import main
from quantconf.compare import compare_task, js_distance, kl_divergence
from conftest import write_jsonl


def _df(ll, gold):
    n = len(ll)
    return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [["a", "b", "c"][:len(r)] for r in ll],
                         "gold": gold, "loglik": ll, "n_tokens": [[1] * len(r) for r in ll],
                         "n_chars": [[1] * len(r) for r in ll], "n_bytes": [[1] * len(r) for r in ll],
                         "is_greedy": [[False] * len(r) for r in ll]})


def test_js_and_kl_match_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet([1] * 4, 50), rng.dirichlet([1] * 4, 50)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2, axis=1), abs=1e-12)
    from scipy.stats import entropy

    assert kl_divergence(p, q) == pytest.approx(entropy(p, q, axis=1), abs=1e-12)


def test_compare_counts_flips_and_bins():
    rng = np.random.default_rng(1)
    n = 200
    full = rng.normal(size=(n, 3)) * 2
    quant = full + rng.normal(size=(n, 3)) * 0.8
    gold = list(rng.integers(0, 3, n))
    f, q = _df(full.tolist(), gold), _df(quant.tolist(), gold)
    c = compare_task(f, q, n_boot=100)
    cf, cq = full.argmax(1) == np.array(gold), quant.argmax(1) == np.array(gold)
    assert c["flips_correct_to_wrong"] == int((cf & ~cq).sum())
    assert c["flips_wrong_to_correct"] == int((~cf & cq).sum())
    assert c["delta_acc"] == pytest.approx(cq.mean() - cf.mean())
    assert sum(b["n"] for b in c["by_confidence_bin"]) == n and len(c["by_confidence_bin"]) == 5
    lo, hi = c["ci"]["delta_acc"]
    assert lo <= c["delta_acc"] <= hi
    same = compare_task(f, f, n_boot=0)
    assert same["js_mean"] == 0 and same["delta_nll"] == 0 and same["p_mcnemar"] == 1.0


def test_compare_refuses_mismatched_choices():
    f = _df([[0.0, -1.0]], [0])
    q = f.copy()
    q["choices"] = [["x", "y"]]
    with pytest.raises(QuantconfError, match="choices differ"):
        compare_task(f, q)


def test_study_runs_resumes_and_reports(tiny_model_dir, tmp_path, capsys):
    rows = [{"query": f"Question: <b>item</b> {i}?\nAnswer:", "choices": ["yes", "no thanks", "maybe"], "gold": i % 3}
            for i in range(30)]
    f = write_jsonl(tmp_path / "mini.jsonl", rows)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"""
name: "tiny <script>alert(1)</script>"
models: ["{tiny_model_dir}"]
variants:
  - {{method: rtn, bits: [2, 8], group_size: 32}}
tasks: ["file:{f}", arithmetic]
limit: 30
bootstrap: 50
""")
    out = tmp_path / "study"
    assert main(["study", str(cfg), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("[todo]") == 5
    assert main(["study", str(cfg), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "data:image/png;base64" in page
    summary = json.loads((out / "summary.json").read_text())
    by = {(c["variant"], c["task"]): c for c in summary["comparisons"]}
    # 2-bit RTN moves predictions more than 8-bit
    assert by[("rtn-w2g32", "arithmetic")]["js_mean"] > by[("rtn-w8g32", "arithmetic")]["js_mean"]
    assert (out / "summary.csv").read_text().startswith("model,")
    assert main(["study", str(cfg), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("[done]") == 5
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize("text, message", [
    ("models: [x]\ntasks: [piqa]\n", "non-empty list `variants`"),
    ("models: [x]\nvariants: [{method: rtn, bits: 9}]\ntasks: [piqa]\n", "--bits"),
    ("models: [x]\nvariants: [{method: rtn, colour: red}]\ntasks: [piqa]\n", "unknown variant field"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [nope]\n", "unknown task"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [piqa]\nlimit: 0\n", "limit must be"),
    ("models: [x\n", "invalid YAML"),
])
def test_study_config_errors(tmp_path, capsys, text, message):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(text)
    assert main(["study", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_killed_study_resumes_without_redoing_steps(tiny_model_dir, tmp_path, monkeypatch):
    import quantconf.run_eval as run_eval_mod
    from quantconf.study import load_study, plan, run_study

    study = load_study(data={"models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 12, "bootstrap": 20,
                             "variants": [{"method": "rtn", "bits": 4, "group_size": 32}]})
    out = tmp_path / "s"
    real = run_eval_mod.run_eval
    calls = []

    def flaky(*a, **k):
        calls.append(a[0])
        if len(calls) == 2:  # killed while evaluating the quantized model
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_eval_mod, "run_eval", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, log=lambda m: None)
    steps = plan(study, out)
    assert [s.done() for s in steps] == [True, True, False]  # full eval, quantize done; quantized eval not
    quant_json = steps[1].path / "quantize.json"
    stamp = quant_json.stat().st_mtime_ns
    log = []
    assert run_study(study, out, log=log.append).is_file()
    assert quant_json.stat().st_mtime_ns == stamp
    assert any("done, reusing" in m for m in log) and all(s.done() for s in steps)


def test_calibration_set_sweep_spread_ppl_and_outliers(tiny_model_dir, tmp_path):
    from quantconf.study import load_study, run_study

    study = load_study(data={
        "name": "sweep", "models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 30, "bootstrap": 20,
        "variants": [{"method": "gptq", "bits": 2, "group_size": 32, "n_samples": 2, "seq_len": 32,
                      "calib": ["pydoc", "random", "punct", "task:arithmetic"]}],
        "ppl_text": "pydoc", "ppl_tokens": 300, "outliers": True, "outlier_samples": 2})
    out = tmp_path / "sweep"
    report = run_study(study, out, log=lambda m: None)
    page = report.read_text()
    assert "Calibration-set sensitivity" in page and "predict its quantization loss" in page
    assert 'alt="heatmap_pydoc"' in page
    spread = pd.read_csv(out / "calib_spread.csv")
    assert spread["n_sets"].tolist() == [4] and (spread["ppl_range"] > 0).all()
    metrics = pd.read_csv(out / "summary.csv")
    assert metrics["ppl"].notna().all() and metrics["calib"].nunique(dropna=True) == 4
    outlier_files = list(out.glob("steps/outliers-*/outliers_*.parquet"))
    assert len(outlier_files) == 4


def test_gptq_refuses_unknown_architecture():
    from types import SimpleNamespace

    from quantconf.quantize import QuantConfig
    from quantconf.quantize.gptq import _check_model

    with pytest.raises(QuantconfError, match="does not support architecture 'weird'"):
        _check_model(SimpleNamespace(model_type="weird"), QuantConfig())


def test_demo_study_falls_back_to_generated_task_offline(monkeypatch, tmp_path):
    import quantconf.study as study_mod

    monkeypatch.delenv("QUANTCONF_DATA_DIR", raising=False)
    monkeypatch.setattr(study_mod, "SHARED_DATA_BESIDE_CHECKOUT", tmp_path / "nowhere")
    s = study_mod.demo_study(None)
    assert s.tasks == ["arithmetic"] and s.data_dir is None
    assert [v.method for v in s.variants] == ["gptq", "rtn"] and s.variants[0].group_size == 128
