"""Recalibration maps (analysis/recalibration_maps.py): each map's held-out values equal netcal's and
scikit-learn's maps fitted on the same folds; the ECE is metrics.py's; cross-fitting never scores a question with
a map that saw it; the gap interval is paired."""

import numpy as np
import pytest

from quantconf.analysis.recalibration import fold_ids
from quantconf.analysis.recalibration_maps import MAPS, cross_fitted_map, maps_gap, maps_of, top_label_ece

netcal = pytest.importorskip("netcal", reason="netcal (the test extra) is not installed")


def _data(seed, n=300, shape=(5, 2), shrink=0.8):
    rng = np.random.default_rng(seed)
    conf = rng.beta(*shape, n)
    return conf, (rng.uniform(size=n) < conf * shrink).astype(float)


def _netcal_held_out(name, conf, correct, folds):
    from netcal.binning import HistogramBinning, IsotonicRegression
    from netcal.scaling import LogisticCalibration

    if name == "beta":  # the authors' reference implementation (netcal's MLE differs from it by up to 0.1)
        from betacal import BetaCalibration as make
    else:
        make = {"platt": LogisticCalibration, "isotonic": IsotonicRegression,
                "histogram": lambda: HistogramBinning(bins=10)}[name]
    out = np.empty(len(conf))
    for f in np.unique(folds):
        held = folds == f
        m = make()
        m.fit(conf[~held], correct[~held].astype(int))
        out[held] = np.asarray(m.predict(conf[held]) if name == "beta" else m.transform(conf[held]),
                               dtype=float).reshape(-1)
    return out


# netcal fits Platt scaling with its own iterative optimiser (a tolerance of its own: 5e-5 at most measured here);
# betacal fits with scikit-learn as we do; histogram binning and isotonic regression have exact solutions
TOLERANCE = {"platt": 1e-3, "beta": 1e-9, "isotonic": 1e-12, "histogram": 1e-12}


@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_held_out_values_equal_netcals_maps_on_the_same_folds(name, seed):
    conf, correct = _data(seed)
    folds = fold_ids(len(conf), 5, seed)
    ours = cross_fitted_map(conf, correct, name, folds)
    assert np.abs(ours - _netcal_held_out(name, conf, correct, folds)).max() <= TOLERANCE[name]


def test_the_logistic_maps_equal_scikit_learns_fit():
    from sklearn.linear_model import LogisticRegression

    conf, correct = _data(4)
    folds = fold_ids(len(conf), 5, 0)
    held = folds == 0
    x = np.log(np.clip(conf, 1e-12, 1 - 1e-12) / (1 - np.clip(conf, 1e-12, 1 - 1e-12)))
    clf = LogisticRegression(C=1e10).fit(x[~held, None], correct[~held])
    assert cross_fitted_map(conf, correct, "platt", folds)[held] == pytest.approx(
        clf.predict_proba(x[held, None])[:, 1], abs=1e-12)


def test_cross_fitting_never_scores_with_a_map_that_saw_the_question():
    """A question's held-out value does not change when its own correctness flips (it is not in its map's fit)."""
    conf, correct = _data(2, n=100)
    folds = fold_ids(100, 5, 0)
    for name in MAPS:
        base = cross_fitted_map(conf, correct, name, folds)
        flipped = correct.copy()
        flipped[7] = 1 - flipped[7]
        assert cross_fitted_map(conf, flipped, name, folds)[7] == base[7], name


def test_top_label_ece_is_metrics_ece():
    from quantconf.analysis.metrics import calibration_metrics

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, 200)
    gold = rng.integers(0, 4, 200)
    assert top_label_ece(probs.max(1), probs.argmax(1) == gold)[0] == pytest.approx(
        calibration_metrics(probs, gold)["ece"], abs=1e-12)


def test_an_overconfident_model_is_fixed_by_the_maps_and_the_gap_is_paired():
    """The quantized model is the full one made overconfident: every map closes most of the ECE gap, and the
    gap's interval before the maps excludes 0."""
    conf_f, correct = _data(5, n=600, shape=(3, 3), shrink=1.0)
    conf_q = conf_f ** 0.3  # pushed towards 1: overconfident, same ranking
    folds = fold_ids(600, 5, 0)
    before = maps_of(conf_q, correct, folds)
    gap = maps_gap((conf_f, correct), (conf_q, correct), folds, n_boot=200)
    assert gap["before"]["ci"][0] > 0.05
    for name in MAPS:
        assert before[name]["ece_after"] < before["ece_before"] / 3, name
        assert abs(gap[name]["estimate"]) < gap["before"]["estimate"] / 3, name


def test_api_maps_a_directory_and_its_gap_to_the_full_model(tmp_path):
    import quantconf as qc
    from quantconf.kinds.choice import MULTIPLE_CHOICE

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 150)
    base = rng.normal(size=(150, 4))
    base[np.arange(150), gold] += 1.0
    rows = lambda ll: [{"doc_id": i, "task": "t", "context": "q", "choices": list("abcd"), "gold": int(g),  # noqa: E731
                        "loglik": list(map(float, ll[i])), "n_tokens": [1] * 4, "n_chars": [1] * 4, "n_bytes": [1] * 4,
                        "is_greedy": [False] * 4} for i, g in enumerate(gold)]
    full, quant = MULTIPLE_CHOICE.frame(rows(base)), MULTIPLE_CHOICE.frame(rows(3 * base))
    res = qc.recalibration_maps({"t": quant}, full={"t": full}, n_boot=50)["t"]
    probs = np.exp(3 * base) / np.exp(3 * base).sum(1, keepdims=True)
    assert res["ece_before"] == pytest.approx(top_label_ece(probs.max(1), probs.argmax(1) == gold)[0])
    assert res["gap"]["before"]["estimate"] > 0.05  # sharpened threefold: overconfident
    assert all(abs(res["gap"][m]["estimate"]) < res["gap"]["before"]["estimate"] for m in MAPS)
