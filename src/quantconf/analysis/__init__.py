"""Analysis: pure functions on prediction frames and arrays (numpy, pandas, scipy; never torch, models
or studies), scikit-learn style: explicit parameters, no hidden state. One task's metrics or comparison whatever
its kind: `kinds/` (each kind calls the functions here that fit it).

    metrics.py        accuracy and calibration metrics, bootstrap CIs, reliability bins
    paired.py         full vs quantized question by question: deltas, JS/KL, flips, paired tests
    generation.py     generations: calibration of confidence measures; full vs quantized answers
    helm.py           HELM's calibration battery, as HELM computes it
    recalibration.py  temperature scaling, cross-fitted, and the scaling gap's intervals
    recalibration_maps.py  Platt, beta, isotonic and histogram-binning maps of the top-label confidence, cross-fitted
    power.py          minimum detectable effects and the questions / replicates a study needs
    noise_floor.py    replicated quantizations: effects over questions and replicates, systematic share
"""
