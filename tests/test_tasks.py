"""tasks/: the registry, built-in tasks, file tasks (and their fuzzing), lm-eval names."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FUZZ, JSON, write_jsonl
from quantconf import QuantconfError
from quantconf.tasks import get_task, load_task, task_names

PAPER_TASKS = ["hellaswag", "piqa", "boolq", "arc_easy", "arc_challenge", "openbookqa",
               "xstory_cloze_en", "truthfulqa_mc1", "truthfulqa_mc2"]


def test_registry_has_paper_tasks_and_generated():
    assert set(PAPER_TASKS + ["arithmetic"]) <= set(task_names())


def _one(task, doc):
    t = get_task(task)
    return t.doc_to_text(doc), t.doc_to_choices(doc), t.doc_to_gold(doc)


def test_prompts_match_lm_eval_formats():
    # expected strings written out by hand from lm-eval's task YAMLs
    assert _one("piqa", {"goal": "Open a jar", "sol1": "twist", "sol2": "pull", "label": 1}) == (
        "Question: Open a jar\nAnswer:", ["twist", "pull"], 1)
    assert _one("boolq", {"passage": "P.", "question": "is it", "label": 0}) == (
        "P.\nQuestion: is it?\nAnswer:", ["no", "yes"], 0)
    arc = {"question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "3"}
    assert _one("arc_easy", arc) == ("Question: Q?\nAnswer:", ["a", "b", "c"], 2)
    obqa = {"question_stem": "Stem", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": " B"}
    assert _one("openbookqa", obqa) == ("Stem", ["a", "b"], 1)
    hs = {"activity_label": "Roof", "ctx_a": "A man [title] is on it.", "ctx_b": "he",
          "endings": [" climbs  down. ", "[step] falls"], "label": "1"}
    assert _one("hellaswag", hs) == ("Roof: A man. is on it. He", ["climbs down.", " falls"], 1)  # strip runs before the [step] removal
    story = {f"input_sentence_{i}": f"S{i}." for i in range(1, 5)} | {
        "sentence_quiz1": "E1.", "sentence_quiz2": "E2.", "answer_right_ending": 2}
    assert _one("xstory_cloze_en", story) == ("S1. S2. S3. S4.", ["E1.", "E2."], 1)
    tq = {"question": "Why?", "mc1_targets": {"choices": ["t", "f"], "labels": [1, 0]},
          "mc2_targets": {"choices": ["t1", "t2", "f"], "labels": [1, 1, 0]}}
    text, choices, gold = _one("truthfulqa_mc2", tq)
    assert text.startswith("Q: What is human life expectancy") and text.endswith("\n\nQ: Why?\nA:")
    assert (choices, gold) == (["t1", "t2", "f"], [0, 1])
    assert _one("truthfulqa_mc1", tq)[1:] == (["t", "f"], 0)


def test_generated_arithmetic_is_deterministic_and_correct():
    a = load_task("arithmetic", seed=7, limit=60)
    b = load_task("arithmetic", seed=7, limit=60)
    c = load_task("arithmetic", seed=8, limit=60)
    assert a.questions == b.questions and a.questions != c.questions
    for q in a.questions:
        expr = q.context.split("What is ")[1].split("?")[0]
        assert int(q.choices[q.gold]) == eval(expr)  # noqa: S307 - our own generated digits
        assert len(set(q.choices)) == 4


def test_local_file_task_and_limit(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"query": "Q1", "choices": ["a", "b"], "gold": 1},
                                           {"query": "Q2", "choices": ["c"], "gold": 0}])
    loaded = load_task(f"file:{f}")
    assert [q.gold for q in loaded.questions] == [1, 0]
    assert len(load_task(f"file:{f}", limit=1).questions) == 1
    assert loaded.source == str(f) and len(loaded.source_sha256) == 64


@pytest.mark.parametrize("rows, message", [
    ([{"query": "Q", "choices": ["a"], "gold": 0}, "{not json"], ":2: malformed JSON"),
    ([{"query": "Q", "choices": ["a", "b"], "gold": 2}], "gold label 2 out of range for 2 choices"),
    ([{"query": "Q", "choices": [], "gold": 0}], "empty choice list"),
    ([{"query": "Q", "choices": ["a"]}], "row does not fit task"),
    ([{"query": "Q", "choices": ["a"], "gold": "x"}], "gold label must be an integer"),
])
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    f = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(QuantconfError, match=message) as e:
        load_task(f"file:{f}")
    assert str(f) in str(e.value)


def test_unknown_task_missing_dir_missing_file_and_bad_limit(tmp_path):
    with pytest.raises(QuantconfError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(QuantconfError, match="data dir .* does not exist"):
        load_task("piqa", data_dir=tmp_path / "missing")
    with pytest.raises(QuantconfError, match="piqa/validation.jsonl not found"):
        load_task("piqa", data_dir=tmp_path)
    with pytest.raises(QuantconfError, match="task file .* not found"):
        load_task(f"file:{tmp_path}/none.jsonl")
    for bad in (0, -3):
        with pytest.raises(QuantconfError, match="^limit must be a positive"):
            load_task("arithmetic", limit=bad)


def test_hub_offline_gives_clear_error(monkeypatch):
    monkeypatch.delenv("QUANTCONF_DATA_DIR", raising=False)
    with pytest.raises(QuantconfError, match="not reachable .offline.*pass --data-dir DIR with DIR/piqa/validation.jsonl"):
        load_task("piqa", limit=2)


def test_unreachable_hub_is_detected_once_without_retries(monkeypatch):
    """HF_HUB_OFFLINE unset and no network: one failed connection (not datasets' retry loop) and every
    hub task then fails at once naming the --data-dir layout."""
    import socket

    from quantconf.tasks import lm_eval_bridge

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "QUANTCONF_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    calls = []

    def refuse(address, timeout=None):
        calls.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    lm_eval_bridge.hub_offline.cache_clear()
    try:
        for task in ("piqa", "hellaswag", "openbookqa"):
            with pytest.raises(QuantconfError, match="not reachable"):
                load_task(task, limit=2)
        assert len(calls) == 1 and calls[0] == (("huggingface.co", 443), 2)
    finally:
        lm_eval_bridge.hub_offline.cache_clear()


def test_env_data_dir(tmp_path, monkeypatch):
    (tmp_path / "piqa").mkdir()
    write_jsonl(tmp_path / "piqa" / "validation.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}])
    monkeypatch.setenv("QUANTCONF_DATA_DIR", str(tmp_path))
    assert load_task("piqa").questions[0].context == "Question: g\nAnswer:"


def test_every_task_loads_shared_data(shared_data):
    for name in PAPER_TASKS:
        loaded = load_task(name, data_dir=shared_data, limit=20)
        assert len(loaded.questions) == 20, name


ROW = st.fixed_dictionaries({}, optional={"query": JSON | st.text(), "choices": JSON | st.lists(st.text(), max_size=5),
                                          "gold": JSON | st.integers(-3, 6)})


LINE = (ROW.map(json.dumps) | JSON.map(json.dumps) | st.text(max_size=40)
        | st.just("[" * 5000 + "]" * 5000) | st.just('{"gold": ' + "9" * 5000 + "}")
        | st.binary(max_size=12).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(lines=st.lists(LINE, max_size=6), raw_bytes=st.binary(max_size=8))
def test_fuzz_file_task_reader_gives_questions_or_one_error(tmp_path, lines, raw_bytes):
    from quantconf.tasks import load_task

    f = tmp_path / "fuzz.jsonl"
    f.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + raw_bytes)
    try:
        loaded = load_task(f"file:{f}")
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    for q in loaded.questions:
        assert isinstance(q.context, str) and q.choices and 0 <= q.gold < len(q.choices)
