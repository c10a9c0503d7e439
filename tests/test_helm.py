"""HELM's calibration battery (analysis/helm.py) equals what HELM computes: the `uncertainty-calibration` package
(`import calibration as cal`) that HELM's compute_calibration_metrics calls, on the same inputs, to 1e-9 — not a
copy of its code: its functions are called here as HELM calls them."""

import json

import numpy as np
import pytest

cal = pytest.importorskip("calibration", reason="uncertainty-calibration (the test extra) is not installed")

from quantconf.analysis.helm import helm_battery, helm_metrics  # noqa: E402
from quantconf.cli import main  # noqa: E402


def helm_reference(max_probs, correct) -> dict:
    """HELM's compute_calibration_metrics on per-instance (max_prob, correct), through the package."""
    out = {"ece_10_bin": cal.get_ece_em(max_probs, correct, num_bins=10),
           "ece_1_bin": cal.get_ece(max_probs, correct, num_bins=1)}
    out["selective_cov_acc_area"], out["selective_acc@10"] = cal.get_selective_stats(max_probs, correct)
    if np.sum(correct) == 0 or np.sum(correct) == len(correct):
        return {**out, "platt_ece_10_bin": 0.0, "platt_ece_1_bin": 0.0}
    scaler, clf = cal.get_platt_scaler(np.array(max_probs), np.array(correct), get_clf=True)
    scaled = scaler(np.array(max_probs))
    return {**out, "platt_coef": clf.coef_[0][0], "platt_intercept": clf.intercept_[0],
            "platt_ece_10_bin": cal.get_ece_em(scaled, correct, num_bins=10),
            "platt_ece_1_bin": cal.get_ece(scaled, correct, num_bins=1)}


CASES = {
    "calibrated": lambda rng, n: (p := rng.uniform(0.25, 1, n), (rng.uniform(size=n) < p).astype(int)),
    "overconfident": lambda rng, n: (p := rng.beta(8, 1, n), (rng.uniform(size=n) < p * 0.7).astype(int)),
    "ties and edges": lambda rng, n: (rng.choice([0.25, 0.5, 0.7, 0.9, 1.0, 0.1], n), rng.integers(0, 2, n)),
    "small n": lambda rng, n: (rng.uniform(0, 1, 7), rng.integers(0, 2, 7)),
    "all right": lambda rng, n: (rng.uniform(0.3, 1, n), np.ones(n, int)),
    "all wrong": lambda rng, n: (rng.uniform(0.3, 1, n), np.zeros(n, int)),
    "near 0 and 1": lambda rng, n: (np.clip(rng.choice([1e-15, 1 - 1e-15, 0.5], n), 0, 1), rng.integers(0, 2, n)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_uncertainty_calibration_package(case, seed):
    conf, correct = CASES[case](np.random.default_rng(seed), 400)
    ours, theirs = helm_metrics(conf, correct), helm_reference(list(conf), list(correct))
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(float(value), abs=1e-9, rel=1e-9), (case, name)
    assert set(ours) - set(theirs) <= {"platt_coef", "platt_intercept"}  # NaN where HELM reports none
    if "platt_coef" not in theirs:
        assert np.isnan(ours["platt_coef"]) and np.isnan(ours["platt_intercept"])


def test_hand_example():
    """Four answers: confidences .9 .8 .6 .3, right, right, wrong, right."""
    m = helm_metrics([0.9, 0.8, 0.6, 0.3], [1, 1, 0, 1])
    assert m["ece_1_bin"] == pytest.approx(abs(0.65 - 0.75))
    # four points, ten bins asked: one point per bin, each |conf - y|: .1 + .2 + .6 + .7 over 4
    assert m["ece_10_bin"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.7) / 4)
    assert m["selective_acc@10"] == 1.0  # int(0.1 * 4) = 0: the single most confident answer
    assert m["selective_cov_acc_area"] == pytest.approx((1 + 1 + 2 / 3 + 3 / 4) / 4)


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1, 300)
    correct = (rng.uniform(size=300) < conf).astype(int)
    a, b = helm_battery(conf, correct, n_boot=100, seed=5), helm_battery(conf, correct, n_boot=100, seed=5)
    assert a == b
    for name in ("ece_10_bin", "selective_acc@10", "platt_coef"):
        lo, hi = a["ci"][name]
        assert lo <= hi and lo - 0.05 <= a[name] <= hi + 0.05


def test_metrics_compat_helm_prints_the_battery_per_task(tmp_path, capsys):
    """`quantconf metrics DIR --compat helm --json` gives {task: {"helm": {name: value}, ...}} (as proskurina2024),
    on the top-choice probability and its correctness."""
    from quantconf.analysis.metrics import probs_from_predictions
    from quantconf.kinds.choice import MULTIPLE_CHOICE
    from quantconf.predictions import write_predictions

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 80)
    ll = rng.normal(size=(80, 4))
    ll[np.arange(80), gold] += 1
    rows = [{"doc_id": i, "task": "t", "context": "q", "choices": list("abcd"), "gold": int(g),
             "loglik": list(map(float, ll[i])), "n_tokens": [1] * 4, "n_chars": [1] * 4, "n_bytes": [1] * 4,
             "is_greedy": [False] * 4} for i, g in enumerate(gold)]
    df = MULTIPLE_CHOICE.frame(rows)
    (tmp_path / "p").mkdir()
    write_predictions(df, tmp_path / "p" / "t.parquet")
    assert main(["metrics", str(tmp_path / "p"), "--compat", "helm", "--bootstrap", "20", "--json"]) == 0
    helm = json.loads(capsys.readouterr().out)["t"]["helm"]
    probs, _ = probs_from_predictions(df)
    reference = helm_reference(list(probs.max(1)), list((probs.argmax(1) == gold).astype(int)))
    for name, value in reference.items():
        assert helm[name] == pytest.approx(float(value), abs=1e-9)
    assert set(helm["ci"]) == set(reference)
    assert main(["metrics", str(tmp_path / "p"), "--compat", "helm", "--bootstrap", "0"]) == 0
    assert "ece_10_bin" in capsys.readouterr().out


def test_compare_compat_helm_gives_each_models_battery_and_paired_deltas(tmp_path, capsys):
    """`quantconf compare FULL QUANT --compat helm`: HELM's battery of each model on the paired questions (equal to
    the package on each) and quant - full with paired bootstrap intervals that hold the estimate."""
    import quantconf as qc
    from quantconf.analysis.metrics import probs_from_predictions
    from quantconf.kinds.choice import MULTIPLE_CHOICE

    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 120)
    base = rng.normal(size=(120, 3))
    base[np.arange(120), gold] += 1.2

    def frame(ll):
        return MULTIPLE_CHOICE.frame([{"doc_id": i, "task": "t", "context": "q", "choices": list("abc"), "gold": int(g),
                                       "loglik": list(map(float, ll[i])), "n_tokens": [1] * 3, "n_chars": [1] * 3,
                                       "n_bytes": [1] * 3, "is_greedy": [False] * 3} for i, g in enumerate(gold)])

    full, quant = frame(base), frame(base * 1.6 + 0.3 * rng.normal(size=base.shape))  # sharper, noisier
    res = qc.compare(full, quant, n_boot=40, compat="helm")["helm"]
    for model, df in (("full", full), ("quant", quant)):
        probs, _ = probs_from_predictions(df)
        ref = helm_reference(list(probs.max(1)), list((probs.argmax(1) == gold).astype(int)))
        for name, value in ref.items():
            assert res[model][name] == pytest.approx(float(value), abs=1e-9)
    for name, d in res["delta"].items():
        assert d == pytest.approx(res["quant"][name] - res["full"][name])
        lo, hi = res["ci"][name]
        assert lo <= hi
    assert res["delta"]["ece_10_bin"] > 0  # sharpened logits: more overconfident
