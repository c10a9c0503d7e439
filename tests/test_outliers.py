import numpy as np
import pytest
import torch

from quantconf.activation_outliers import StreamingStats, collect_outlier_stats, jaccard


def test_planted_outliers_are_found():
    rng = np.random.default_rng(0)
    st = StreamingStats(channels=32)
    for _ in range(5):
        x = rng.normal(size=(200, 32))
        x[:, 7] *= 10  # a high-variance channel
        x[3, 20] = 50.0  # one huge value
        st.update(x)
    s = st.summary(threshold=6.0, top_k=2)
    assert s["max_abs"] == pytest.approx(50.0)
    assert s["top_channels"] == [20, 7]
    assert s["n_outlier_channels"] >= 2 and 7 in s["top_channels"]
    assert s["kurtosis"] > 3  # heavy tails from the planted channel


def test_kurtosis_and_percentiles_of_gaussian():
    rng = np.random.default_rng(1)
    st = StreamingStats(channels=10, reservoir_size=50000)
    data = rng.normal(size=(30000, 10))
    for chunk in np.array_split(data, 7):
        st.update(chunk)
    s = st.summary()
    assert s["kurtosis"] == pytest.approx(3.0, abs=0.1)
    assert s["p99"] == pytest.approx(np.quantile(np.abs(data), 0.99), rel=0.05)
    assert s["n_outlier_channels"] == 0
    assert jaccard([1, 2, 3], [2, 3, 4]) == 0.5


def test_hooks_on_tiny_model(tiny_lm):
    model = tiny_lm.model
    with torch.no_grad():  # plant an outlier feature in layer 1's MLP input via the post-attn norm weight
        model.model.layers[1].post_attention_layernorm.weight[5] = 200.0
    try:
        rows = collect_outlier_stats(model, [[3, 4, 5, 6, 7, 8, 9, 10]] * 2, threshold=6.0, top_k=3)
    finally:
        with torch.no_grad():
            model.model.layers[1].post_attention_layernorm.weight[5] = 1.0
    assert len(rows) == 2 * 5
    gate1 = next(r for r in rows if r["layer"] == 1 and r["module"] == "mlp.gate_proj")
    gate0 = next(r for r in rows if r["layer"] == 0 and r["module"] == "mlp.gate_proj")
    assert gate1["top_channels"][0] == 5 and gate1["max_abs"] > 10 * gate0["max_abs"]
