"""Models: loading any model safely (`loading.py`: built-in GGUF, local dir, hub, a quantized checkpoint
through its method), where a spec's weights are (`builtin.py`), what a model's files hold (`files.py`), and the
machine they run on (`runtime.py`: threads, device, dtype, memory preflight).
"""
