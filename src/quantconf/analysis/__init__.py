"""Analysis: pure functions on prediction frames and arrays (numpy, pandas, scipy; never torch, models
or studies), scikit-learn style: explicit parameters, no hidden state.

    metrics.py        accuracy and calibration metrics, bootstrap CIs, reliability bins
    paired.py         full vs quantized question by question: deltas, JS/KL, flips, paired tests
    generation.py     generations: calibration of confidence measures; full vs quantized answers
    tasks.py          a task's metrics / comparison whatever its kind (multiple choice or generation)
    recalibration.py  temperature scaling, cross-fitted, and the scaling gap's intervals
    noise_floor.py    replicated quantizations: effects over questions and replicates, systematic share
"""
