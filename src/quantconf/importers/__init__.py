"""Importers: predictions other tools wrote, read into quantconf's prediction files (`lm_eval_files.py`:
lm-evaluation-harness output files; `generations.py`: the seed study's TruthfulQA CSVs and lm-eval
generate_until samples).
"""
