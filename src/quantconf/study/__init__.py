"""Studies: models × quantization variants × tasks, content-addressed, resumable, reported.

    config.py     the YAML schema (`Study`), variant expansion, `load_study`
    steps.py      the kinds of step (quantize, eval, ppl, outliers, analysis, noise floor), one class each
    plan.py       every step of a study at its content-addressed path; the data check before running
    executors.py  run dependent jobs locally or as Ray tasks
    run.py        `run_study`: the plan as jobs, then the report
    results.py    a finished study's analysis outputs as tables (reads, never computes statistics)
    report.py     the HTML report, summary.csv/json, questions.csv
    demo.py       the built-in demo study
"""

from quantconf.study.config import Study, expand_variant, load_study
from quantconf.study.demo import demo_study
from quantconf.study.plan import check_study_data, plan
from quantconf.study.run import run_study
from quantconf.study.plan import outlier_calib_sets

__all__ = ["Study", "expand_variant", "load_study", "plan", "check_study_data", "run_study", "demo_study",
           "outlier_calib_sets"]
