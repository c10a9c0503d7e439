"""quantconf: what post-training quantization does to a language model's confidence.

Pipeline: tasks -> scoring -> evaluation -> predictions -> analysis (metrics, paired, recalibration,
noise floor) -> study (plan, steps, results, report), with quantizers, outliers and perplexity beside
it. The public API is `quantconf.api`, re-exported here:

    import quantconf as qc
    preds = qc.evaluate("default", ["piqa"], data_dir="../shared/data", limit=100)
    qc.metrics(preds["piqa"])["ece"]
"""

from quantconf._version import __version__
from quantconf.api import (compare, evaluate, import_generations, import_lm_eval, load_model, load_task, measures, methods,
                           metrics, noise_floor, outliers, perplexity, divergence, task_divergence, quantize, plan, read_predictions, recalibrate, recalibration_maps, report, run_study, tasks)
from quantconf.errors import QuantconfError

__all__ = ["load_model", "load_task", "evaluate", "quantize", "metrics", "compare", "noise_floor", "recalibrate", "recalibration_maps", "plan", "run_study",
           "read_predictions", "report", "outliers", "perplexity", "divergence", "task_divergence", "import_lm_eval",
           "import_generations", "methods", "measures", "tasks",
           "QuantconfError", "__version__"]
