"""Shared fixtures: a tiny randomly initialised Llama (2 layers, fixed seed) with a byte-level
BPE tokenizer trained in-test, saved as a safetensors HF directory; and the shared data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _pin_xdist_worker():
    """Under pytest-xdist (`make test`, `make test-fast`: one worker per core) give each worker its share of
    the cores. quantconf runs torch on every core the process may use (runtime.available_cores), so
    unpinned workers would each start one thread per core: twice as many threads as cores, which on 2
    cores is slower than either worker alone. Subprocesses (CLI runs, Ray nodes) inherit the pinning."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores, i, n = sorted(os.sched_getaffinity(0)), int(worker.removeprefix("gw")), int(count)
    share = cores[i * len(cores) // n:(i + 1) * len(cores) // n] if len(cores) >= n else [cores[i % len(cores)]]
    os.sched_setaffinity(0, share)


_pin_xdist_worker()

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Longest tests first. Under `--dist loadgroup` xdist hands a worker its next test in collection order (groups
# of several tests first), so a long test collected late runs alone while the other worker idles. Tests are
# ordered by their durations in a previous full run (tests/durations.json: seconds per test id; a test not
# in it counts as short); a group stays in file order (its tests share fixtures and may depend on it).
# Refresh the file with `make durations`. The order changes nothing but when each test starts.
DURATIONS_FILE = Path(__file__).with_name("durations.json")


def pytest_collection_modifyitems(config, items):
    import json

    try:
        seconds = json.loads(DURATIONS_FILE.read_text())
    except (OSError, ValueError):
        return
    group_of = {item.nodeid: m.args[0] for item in items if (m := item.get_closest_marker("xdist_group"))}
    totals: dict = {}
    for item in items:
        key = group_of.get(item.nodeid, item.nodeid)
        totals[key] = totals.get(key, 0.0) + float(seconds.get(item.nodeid.split("@", 1)[0], 0.0))
    items.sort(key=lambda item: -totals[group_of.get(item.nodeid, item.nodeid)])  # stable: a group keeps its order


def pytest_runtest_logreport(report):
    if os.environ.get("QUANTCONF_STORE_DURATIONS"):
        nodeid = report.nodeid.split("@", 1)[0]  # xdist's loadgroup appends "@group" to a grouped test's id
        _DURATIONS[nodeid] = _DURATIONS.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    import json

    if os.environ.get("QUANTCONF_STORE_DURATIONS") and _DURATIONS and not hasattr(session.config, "workerinput"):
        DURATIONS_FILE.write_text(json.dumps({k: round(v, 1) for k, v in sorted(_DURATIONS.items())}, indent=0) + "\n")


_DURATIONS: dict = {}


CORPUS = [
    "Question: How do you boil water?\nAnswer: Put it in a pot and heat it.",
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof.",
    "Which statement best explains why photosynthesis is the foundation of most food webs?",
    "Sunlight is the source of energy for nearly all ecosystems. 0123456789 + - * = ?",
] * 20


def build_tiny_model(out: Path, seed: int = 0, layers: int = 2, hidden: int = 64, max_positions: int = 256) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=fast.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # larger init than default so predictions are confident enough to differ between choices
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from quantconf.models.loading import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"integration data {SHARED_DATA} absent (it lives in ../shared/data beside the project)")
    return SHARED_DATA


def write_jsonl(path: Path, rows: list) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def evaluate_into(model, tasks, out, log=lambda m: None, **options):
    """`evaluation.evaluate_to_dir` with flat keyword options (data_dir=, limit=, threads=, progress=, ...),
    each sorted into the option object that holds it (LoadOptions, TaskOptions, EvalOptions)."""
    from dataclasses import fields

    from quantconf import evaluation
    from quantconf.models.loading import LoadOptions
    from quantconf.tasks import TaskOptions

    split = {}
    for cls in (LoadOptions, TaskOptions, evaluation.EvalOptions):
        names = {f.name for f in fields(cls)}
        split[cls] = cls(**{k: options.pop(k) for k in list(options) if k in names})
    assert not options, f"not an evaluation option: {sorted(options)}"
    return evaluation.evaluate_to_dir(model, tasks, out, load=split[LoadOptions], data=split[TaskOptions],
                                      run=split[evaluation.EvalOptions], log=log)


# property-based fuzzing: any JSON value, and the settings every fuzz test uses
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def yes_no_task(tmp_path, name="mini", n=8) -> str:
    """A `file:` task of n yes/no questions (gold alternates)."""
    rows = [{"query": f"Question: is {i} small?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2} for i in range(n)]
    return f"file:{write_jsonl(tmp_path / f'{name}.jsonl', rows)}"


def mc_frame(ll, gold, task="t", chars=None):
    """A predictions frame (the columns evaluate writes) from per-choice log-likelihoods and gold indices."""
    n = len(ll)
    return pd.DataFrame({"doc_id": range(n), "task": task, "choices": [[f"c{j}" for j in range(len(r))] for r in ll],
                         "gold": gold, "loglik": ll, "n_tokens": [[1] * len(r) for r in ll],
                         "n_chars": chars or [[1] * len(r) for r in ll], "n_bytes": [[1] * len(r) for r in ll],
                         "is_greedy": [[False] * len(r) for r in ll]})


def folder_task_manager(folder):
    """lm-eval's own TaskManager (the reference side of agreement tests) for a folder of YAML files that
    include lm-eval's task files by path: without lm-eval's ~15k built-in names (include_defaults=False),
    which such files do not use and which take ~10 s to index."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=False)
