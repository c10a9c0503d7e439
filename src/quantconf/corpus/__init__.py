"""Measurements of a model on plain text: sliding-window perplexity (`perplexity.py`) and the token-level
divergence of a quantized model from the full one (`divergence.py`, llama.cpp's KLD statistics).
"""
