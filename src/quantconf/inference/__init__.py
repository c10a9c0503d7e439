"""Running a model on items: per-choice log-likelihoods (`scoring.py`, lm-eval-compatible) and greedy
generations with their confidence (`generation.py`). Each task kind (`kinds/`) calls the one it needs.
"""
