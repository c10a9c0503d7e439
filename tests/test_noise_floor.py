"""noise_floor.py and replicated studies: statistics against hand computations on fixed predictions,
replicates that really differ, and resuming a study with more replicates."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ttest_1samp, wilcoxon

from quantconf.noise_floor import noise_floor, replicate_family
from quantconf.quantizers import QuantConfig


def _df(ll, gold):
    n = len(ll)
    return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [["a", "b", "c"]] * n, "gold": gold,
                         "loglik": [list(r) for r in ll], "n_tokens": [[1, 1, 1]] * n, "n_chars": [[1, 1, 1]] * n,
                         "n_bytes": [[1, 1, 1]] * n, "is_greedy": [[False] * 3] * n})


def _softmax(ll):
    e = np.exp(ll - ll.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_noise_floor_equals_hand_computation():
    rng = np.random.default_rng(0)
    n = 60
    full = rng.normal(size=(n, 3)) * 2
    gold = rng.integers(0, 3, n)
    reps = [full + rng.normal(size=(n, 3)) * s for s in (0.8, 1.0, 1.2)]
    nf = noise_floor(_df(full, gold.tolist()), [_df(r, gold.tolist()) for r in reps], n_bins=5, n_conf_bins=3)
    pf, pr = _softmax(full), [_softmax(r) for r in reps]
    correct_f, correct_r = pf.argmax(1) == gold, [p.argmax(1) == gold for p in pr]
    d_acc = [c.mean() - correct_f.mean() for c in correct_r]
    assert nf["replicates"] == 3 and nf["pairs"] == 3
    assert nf["effect"]["delta_acc_mean"] == pytest.approx(np.mean(d_acc))
    assert nf["noise"]["delta_acc_sd"] == pytest.approx(np.std(d_acc, ddof=1))
    pairs = list(itertools.combinations(range(3), 2))
    js_pair = [jensenshannon(pr[i], pr[j], base=2, axis=1) for i, j in pairs]
    assert nf["noise"]["js_mean"] == pytest.approx(np.mean([x.mean() for x in js_pair]))
    flips = [np.mean(correct_r[i] != correct_r[j]) for i, j in pairs]
    assert nf["noise"]["flip_rate"] == pytest.approx(np.mean(flips))
    assert nf["noise"]["delta_acc"] == pytest.approx(np.mean([abs(correct_r[j].mean() - correct_r[i].mean())
                                                             for i, j in pairs]))
    js_eff = np.mean([jensenshannon(pf, p, base=2, axis=1) for p in pr], axis=0)
    js_noise = np.mean(js_pair, axis=0)
    assert nf["test"]["js_effect_mean"] == pytest.approx(js_eff.mean())
    assert nf["test"]["p_wilcoxon_greater"] == pytest.approx(wilcoxon(js_eff - js_noise, alternative="greater").pvalue)
    assert nf["test"]["p_ttest_delta_acc"] == pytest.approx(ttest_1samp(d_acc, 0.0).pvalue)
    preds = np.stack([p.argmax(1) for p in pr])
    unstable = (preds != preds[0]).any(0)
    assert nf["instability"]["unstable_share"] == pytest.approx(unstable.mean())
    assert sum(b["n"] for b in nf["instability"]["by_full_confidence"]) == n


def test_verdict_separates_effect_from_noise():
    rng = np.random.default_rng(1)
    n = 200
    full = rng.normal(size=(n, 3)) * 2
    gold = rng.integers(0, 3, n).tolist()
    shifted = full + rng.normal(size=(n, 3)) * 2  # a large common change ...
    big = [_df(shifted + rng.normal(size=(n, 3)) * 0.1, gold) for _ in range(3)]  # ... replicates agree closely
    nf = noise_floor(_df(full, gold), big)
    assert nf["test"]["clears_noise_floor"] and "more than re-drawing" in nf["verdict"]
    noisy = [_df(full + rng.normal(size=(n, 3)) * 1.0, gold) for _ in range(3)]  # replicates as far apart as from full
    nf = noise_floor(_df(full, gold), noisy)
    assert not nf["test"]["clears_noise_floor"] and "noise of the quantizer" in nf["verdict"]
    with pytest.raises(ValueError, match="at least two replicates"):
        noise_floor(_df(full, gold), noisy[:1])


def test_verdict_wording_of_the_average_effect():
    from quantconf.noise_floor import verdict

    nf = {"replicates": 5, "effect": {"delta_acc_mean": -0.044, "delta_acc_sd": 0.012},
          "test": {"js_effect_mean": 0.149, "js_noise_mean": 0.125, "p_wilcoxon_greater": 0.54, "alpha": 0.05,
                   "clears_noise_floor": False, "p_ttest_delta_acc": 0.001}}
    assert verdict("piqa", nf) == (
        "piqa: quantization moves answers no more than re-drawing the calibration sample does (mean JS to full "
        "0.149 vs 0.125 between replicates, one-sided Wilcoxon p = 0.54): per question, read full-vs-quantized "
        "differences as noise of the quantizer; on average the accuracy change is consistent across calibration "
        "draws, a real effect: Δacc -0.044 ± 0.012 over 5 replicates (t-test p = 0.001).")
    nf["test"]["p_ttest_delta_acc"] = 0.4
    assert verdict("piqa", nf).endswith("the accuracy change is not distinguishable from zero across calibration "
                                        "draws: Δacc -0.044 ± 0.012 over 5 replicates (t-test p = 0.4).")


def test_replicate_family_drops_only_the_seed():
    a = QuantConfig(method="gptq", calib="pydoc", seed=3)
    assert replicate_family(a) == "gptq-w4g128-pydoc" == replicate_family(QuantConfig(method="gptq", calib="pydoc"))
    assert replicate_family(QuantConfig(method="rtn")) == "rtn-w4g128"


def test_replicated_study_differs_per_replicate_and_resumes(tiny_model_dir, tmp_path, capsys):
    from quantconf.study import load_study, plan, run_study

    def study(n):
        return load_study(data={
            "name": "noise", "models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 40, "bootstrap": 20,
            "threads": 1, "variants": [
                {"method": "gptq", "bits": 2, "group_size": 32, "n_samples": 2, "seq_len": 32, "calib": "pydoc",
                 "replicates": n},
                {"method": "rtn", "bits": 4, "group_size": 32, "replicates": n}]})

    s2 = study(2)
    assert "deterministic" in capsys.readouterr().err
    assert [v.seed for v in s2.variants if v.method == "gptq"] == [0, 1] and sum(v.method == "rtn" for v in s2.variants) == 1
    out = tmp_path / "s"
    run_study(s2, out, log=lambda m: None)
    quant = [s.path for s in plan(s2, out) if s.kind == "quantize"]
    weights = [(p / "model.safetensors").read_bytes() for p in quant[:2]]
    assert weights[0] != weights[1]  # another calibration draw, another checkpoint
    stamps = {p: (p / "quantize.json").stat().st_mtime_ns for p in quant}
    s3 = study(3)
    log = []
    run_study(s3, out, log=log.append)
    assert all((p / "quantize.json").stat().st_mtime_ns == stamps[p] for p in quant)
    # 4 quantize steps start, 3 of them find their checkpoint done: one new quantization
    assert sum("quantize" in m and "done, reusing" in m for m in log) == 3
    assert sum(m.startswith("[") and " start quantize" in m for m in log) == 4
    summary = json.loads((out / "summary.json").read_text())
    gptq = [c for c in summary["comparisons"] if c["variant"].startswith("gptq")]
    assert len(gptq) == 3 and all(c["replicates"] == 3 for c in gptq)
    for c in gptq:
        assert set(c["noise"]) >= {"js_mean", "flip_rate", "delta_acc_sd", "delta_ece_sd"}
        assert c["noise"]["js_mean"] > 0
    rtn = [c for c in summary["comparisons"] if c["variant"].startswith("rtn")]
    assert rtn[0]["replicates"] == 1 and rtn[0]["noise"]["js_mean"] is None
    (floor,) = summary["noise_floor"]
    assert floor["variant"] == "gptq-w2g32-pydoc" and len(floor["members"]) == 3
    csv = pd.read_csv(out / "summary.csv")
    assert {"replicates", "noise_js_mean", "noise_flip_rate", "noise_delta_acc_sd", "noise_delta_ece_sd"} <= set(csv)
    page = (out / "report.html").read_text()
    assert "Is it quantization or noise?" in page and "between replicates" in page
