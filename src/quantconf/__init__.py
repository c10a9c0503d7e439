"""quantconf: what post-training quantization does to a language model's confidence.

Pipeline: tasks -> scoring -> evaluation -> predictions -> calibration / paired -> study_results -> report,
with quantizers, outliers and perplexity beside it. The public API is `quantconf.api`, re-exported here:

    import quantconf as qc
    preds = qc.evaluate("default", ["piqa"], data_dir="../shared/data", limit=100)
    qc.metrics(preds["piqa"])["ece"]
"""

from quantconf._version import __version__
from quantconf.api import (compare, evaluate, load_model, load_task, metrics, noise_floor, quantize, read_predictions,
                           recalibrate, run_study)
from quantconf.errors import QuantconfError

__all__ = ["load_model", "load_task", "evaluate", "quantize", "metrics", "compare", "noise_floor", "recalibrate", "run_study",
           "read_predictions", "QuantconfError", "__version__"]
