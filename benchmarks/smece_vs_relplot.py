"""How close is our smECE to the `relplot` package's? Prints the distribution of |ours - relplot| over
random miscalibrated cases (n 300/1000, 2/4 choices, several sharpness levels), leaving out cases
with many confidences at 1.0, where relplot's grid reflection drops half of a boundary point's
kernel (tests/test_calibration_science.py::test_smooth_ece_near_saturated_confidence).

    .venv/bin/python benchmarks/smece_vs_relplot.py
"""

import numpy as np
import relplot

from quantconf.analysis.metrics import calibration_metrics


def main(cases: int = 60) -> None:
    diffs = []
    for seed in range(cases):
        rng = np.random.default_rng(seed)
        n, k = [300, 1000][seed % 2], [2, 4][seed % 3 == 0]
        scale, sharpen = [0.5, 1, 1.5, 2][seed % 4], [0, 0.7, 1][seed % 3]
        z = rng.normal(size=(n, k)) * scale
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        truth = p ** sharpen / (p ** sharpen).sum(1, keepdims=True)
        y = np.array([rng.choice(k, p=row) for row in truth])
        conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
        if (conf > 0.99).mean() > 0.05:
            continue
        diffs.append(abs(calibration_metrics(p, y)["smece"] - float(relplot.smECE(conf, correct))))
    d = np.array(diffs)
    print(f"smECE vs relplot over {len(d)} cases: |diff| median {np.median(d):.1e}, 90th percentile "
          f"{np.quantile(d, 0.9):.1e}, max {d.max():.1e}")


if __name__ == "__main__":
    main()
