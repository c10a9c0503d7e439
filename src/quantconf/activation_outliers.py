"""Activation-outlier statistics per decoder layer and module, streamed over calibration samples.

Forward pre-hooks capture the inputs of every decoder layer (the residual stream) and of its
attention and MLP projections (`q_proj` input = normed attention input, `o_proj` input, `gate_proj`
input = normed MLP input, `down_proj` input). Nothing is stored per token: for each (layer, module)
we keep running moments (for kurtosis), the running per-channel max |x|, and a fixed-size random
reservoir of |x| values (for percentiles and the median), so memory is bounded by
channels + reservoir size whatever the number of samples.

Per (layer, module): max_abs, p99, p99_9, median_abs, max_to_median = max_abs / median_abs,
kurtosis (Pearson, = 3 for a Gaussian), n_outlier_channels / outlier_share (channels whose max |x|
exceeds `threshold`, 6 by default as in LLM.int8), and the top-k channel ids by max |x|
(Jaccard overlap of those ids across calibration sets says whether the sets light up the same
features).

torch and matplotlib are imported inside functions: they take seconds to import and only the
outlier run needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, atomic_write_parquet, ensure_writable_dir, package_versions
from quantconf.models.loading import LoadOptions
from quantconf.quantizers.calib_data import build_calibration

MODULES = ("residual", "self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")


@dataclass
class StreamingStats:
    channels: int
    reservoir_size: int = 20000
    seed: int = 0
    n: int = 0
    moments: np.ndarray = field(default_factory=lambda: np.zeros(4))  # sum x, x^2, x^3, x^4
    channel_max: np.ndarray | None = None
    reservoir: np.ndarray | None = None
    seen: int = 0

    def update(self, x) -> None:
        """x: (..., channels) activations of one batch (torch tensor or numpy array)."""
        import torch

        x = torch.as_tensor(x).reshape(-1, self.channels).double()
        self.n += x.numel()
        x2 = x * x
        self.moments += np.array([x.sum().item(), x2.sum().item(), (x2 * x).sum().item(), (x2 * x2).sum().item()])
        ax = x.abs()
        cmax = ax.amax(dim=0).numpy()
        self.channel_max = cmax if self.channel_max is None else np.maximum(self.channel_max, cmax)
        # reservoir: a uniform sample (with replacement) of all |x| seen, weighted by counts
        flat = ax.reshape(-1)
        gen = torch.Generator().manual_seed(self.seed + self.seen)
        sample = flat[torch.randint(flat.numel(), (self.reservoir_size,), generator=gen)].numpy()
        if self.reservoir is None:
            self.reservoir = sample
        else:
            keep_old = int(round(self.reservoir_size * self.seen / (self.seen + flat.numel())))
            old = self.reservoir[torch.randint(len(self.reservoir), (keep_old,), generator=gen).numpy()]
            self.reservoir = np.concatenate([old, sample[: self.reservoir_size - keep_old]])
        self.seen += flat.numel()

    def summary(self, threshold: float = 6.0, top_k: int = 10) -> dict:
        s1, s2, s3, s4 = self.moments / self.n
        var = s2 - s1**2
        m4 = s4 - 4 * s1 * s3 + 6 * s1**2 * s2 - 3 * s1**4
        med = float(np.median(self.reservoir))
        top = np.argsort(-self.channel_max)[:top_k]
        outliers = self.channel_max > threshold
        return {
            "max_abs": float(self.channel_max.max()), "p99": float(np.quantile(self.reservoir, 0.99)),
            "p99_9": float(np.quantile(self.reservoir, 0.999)), "median_abs": med,
            "max_to_median": float(self.channel_max.max() / med) if med > 0 else float("inf"),
            "kurtosis": float(m4 / var**2) if var > 0 else float("nan"),
            "n_outlier_channels": int(outliers.sum()), "outlier_share": float(outliers.mean()),
            "top_channels": [int(c) for c in top],
        }


def collect_outlier_stats(model, samples: list[list[int]], threshold: float = 6.0, top_k: int = 10,
                          progress: bool = False) -> list[dict]:
    """Run `samples` through `model` with hooks; one dict per (layer, module)."""
    import torch

    layers = model.model.layers
    stats: dict[tuple[int, str], StreamingStats] = {}
    handles = []

    def hook_for(key):
        def hook(module, args, kwargs=None):
            x = args[0] if args else (kwargs or {}).get("hidden_states")
            x = x.detach().float().cpu()
            if key not in stats:
                stats[key] = StreamingStats(x.shape[-1], seed=key[0] * 10 + MODULES.index(key[1]))
            stats[key].update(x)
        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(hook_for((i, "residual")), with_kwargs=True))
        for name in MODULES[1:]:
            handles.append(layer.get_submodule(name).register_forward_pre_hook(hook_for((i, name))))
    bar = samples
    if progress:
        bar = tqdm(samples, desc="outliers", unit="sample", leave=False)
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            for s in bar:
                model(input_ids=torch.tensor([s], device=device))
    finally:
        for h in handles:
            h.remove()
    return [{"layer": i, "module": m, **st.summary(threshold, top_k)} for (i, m), st in sorted(stats.items())]


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass(frozen=True)
class OutlierOptions:
    """What `run_outliers` measures: calibration samples per set, their length and seed, the outlier
    threshold on |x| and how many top channels per layer are compared across sets."""

    n_samples: int = 16
    seq_len: int = 512
    seed: int = 0
    threshold: float = 6.0
    top_k: int = 10


def run_outliers(model_spec: str, calib_sets: list[str], out, options: OutlierOptions = OutlierOptions(),
                 load: LoadOptions = LoadOptions(), data_dir=None, log=print, overwrite: bool = False) -> dict:
    """Per-layer activation-outlier statistics of `model_spec` on each calibration set, into `out`
    (an existing outliers.json there is replaced only with `overwrite`)."""
    n_samples, seq_len, seed, threshold, top_k = (options.n_samples, options.seq_len, options.seed,
                                                  options.threshold, options.top_k)
    if (Path(out) / "outliers.json").exists() and not overwrite:
        raise QuantconfError(f"out {out} already holds outliers.json; pass --overwrite to replace it, or choose "
                             "another out dir", param="out")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = ensure_writable_dir(Path(out))
    lm = load.load(model_spec)
    tables, records = {}, {}
    for spec in calib_sets:
        calib = build_calibration(spec, lm.tokenizer, n_samples, seq_len, seed, data_dir=data_dir)
        rows = collect_outlier_stats(lm.model, calib.samples, threshold, top_k, progress=True)
        df = pd.DataFrame(rows)
        name = spec.replace(":", "_").replace("/", "_")
        atomic_write_parquet(out / f"outliers_{name}.parquet", df)
        tables[spec], records[spec] = df, calib.record()
        fig, axes = plt.subplots(1, 2, figsize=(10, 5))
        for ax, col in zip(axes, ("max_abs", "n_outlier_channels")):
            grid = df.pivot(index="layer", columns="module", values=col)[list(MODULES)]
            im = ax.imshow(np.log10(grid.values + 1) if col == "max_abs" else grid.values, aspect="auto", cmap="viridis")
            ax.set(xticks=range(len(MODULES)), yticks=range(0, len(grid), max(1, len(grid) // 10)),
                   title=f"{spec}: {'log10(1+max |x|)' if col == 'max_abs' else 'outlier channels (>%g)' % threshold}",
                   ylabel="layer")
            ax.set_xticklabels(MODULES, rotation=45, ha="right", fontsize=7)
            fig.colorbar(im, ax=ax)
        fig.savefig(out / f"heatmap_{name}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        log(f"{spec}: max |x| {df['max_abs'].max():.1f}, outlier channels {int(df['n_outlier_channels'].sum())}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for spec, df in tables.items():
        res = df[df["module"] == "residual"]
        axes[0].plot(res["layer"], res["max_abs"], "o-", ms=3, label=spec)
        axes[1].plot(res["layer"], res["kurtosis"], "o-", ms=3, label=spec)
    axes[0].set(yscale="log", xlabel="layer", ylabel="residual max |x|")
    axes[1].set(yscale="log", xlabel="layer", ylabel="residual kurtosis")
    axes[0].legend(fontsize=7)
    fig.savefig(out / "compare_sets.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    overlap = []
    specs = list(tables)
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            ta, tb = tables[a], tables[b]
            j = [jaccard(x, y) for x, y in zip(ta["top_channels"], tb["top_channels"])]
            overlap.append({"set_a": a, "set_b": b, "mean_jaccard_top_channels": float(np.mean(j))})
    summary = {"model": lm.info, "calibration": records, "threshold": threshold, "top_k": top_k,
               "overlap": overlap, "packages": package_versions(),
               "per_set": {s: {"max_abs": float(t["max_abs"].max()), "mean_kurtosis": float(t["kurtosis"].mean()),
                               "outlier_channels": int(t["n_outlier_channels"].sum())} for s, t in tables.items()}}
    atomic_write_json(out / "outliers.json", summary)
    return summary
