"""Grading generations as lm-eval grades them, without its waste: truthfulqa_gen's ROUGE through
rouge_score's BootstrapAggregator resamples one score 1,000 times; quantconf's equal (tasks/lm_eval_graders)
takes the score. Checked against lm-eval's own process_results_gen on every row of TruthfulQA."""

import functools
import json
import random

import pytest

from quantconf.tasks.lm_eval_graders import GRADERS, fast_process_results


def _truthfulqa_docs(shared_data):
    """TruthfulQA's generation set as lm-eval's truthfulqa_gen prepares its docs (process_docs_gen)."""
    import datasets
    from lm_eval.tasks.truthfulqa import utils

    rows = [json.loads(line) for line in (shared_data / "truthfulqa" / "truthful_qa" / "generation"
                                           / "validation.jsonl").read_text().splitlines()]
    return list(utils.process_docs_gen(datasets.Dataset.from_list(rows)))


def _answers(docs):
    """The dataset's own answers as the "generations" (no model needed): a correct one, an incorrect one, the
    best answer with TruthfulQA's " . " sentence joins, and the empty answer, in turn."""
    out = []
    for i, d in enumerate(docs):
        out.append([d["correct_answers"][0], d["incorrect_answers"][-1], d["best_answer"].replace(". ", " . "),
                    ""][i % 4])
    return out


def _assert_identical(expected: dict, got: dict, where: str):
    assert list(got) == list(expected), where
    for k, v in expected.items():
        assert got[k] == v and type(got[k]) is type(v), f"{where}: {k} {got[k]!r} != lm-eval's {v!r}"


def test_the_bootstrap_of_one_score_is_the_score():
    """Why dropping rouge_score's aggregator is exact: every resample of a single score is that score, and the
    percentiles of identical values are the value (rouge_score's own aggregator, default 1,000 resamples)."""
    from rouge_score import scoring

    rng = random.Random(0)
    for _ in range(60):
        score = scoring.Score(*(rng.random() for _ in range(3)))
        aggregator = scoring.BootstrapAggregator()
        aggregator.add_scores({"rouge1": score})
        assert tuple(aggregator.aggregate()["rouge1"].mid) == tuple(score)


@pytest.mark.integration
def test_truthfulqa_gen_grading_equals_lm_evals_on_every_row(shared_data, monkeypatch):
    """All 817 rows, every metric, exactly (values and types): the fast equal, and quantconf's grading through
    its lm-eval bridge (filters, docs prepared by lm-eval), against lm-eval's process_results_gen. lm-eval runs
    with its own aggregator class at 4 resamples instead of 1,000 (22 CPU-minutes otherwise); the test above
    shows the count cannot change a single score's result, and the next test runs it unpatched."""
    from lm_eval.tasks.truthfulqa import utils
    from rouge_score import scoring

    from quantconf.tasks import load_task

    docs = _truthfulqa_docs(shared_data)
    answers = _answers(docs)
    assert len(docs) == 817
    monkeypatch.setattr(utils.scoring, "BootstrapAggregator", functools.partial(scoring.BootstrapAggregator,
                                                                                n_samples=4))
    expected = [utils.process_results_gen(d, [a]) for d, a in zip(docs, answers)]
    fast = fast_process_results(utils.process_results_gen)
    assert fast is not None, "lm-eval's process_results_gen changed: re-check the equal in lm_eval_graders"
    for i, (d, a, e) in enumerate(zip(docs, answers, expected)):
        _assert_identical(e, fast(d, [a]), f"row {i}")
    loaded = load_task("truthfulqa_gen", data_dir=shared_data)
    assert [p.question for p in loaded.questions] == [d["question"] for d in docs]
    for i, (e, got) in enumerate(zip(expected, loaded.grade(loaded.questions, answers))):
        _assert_identical(e, got, f"quantconf grading, row {i}")
    assert sum(e["bleu_acc"] for e in expected) > 100 and sum(e["rouge1_acc"] for e in expected) > 100


@pytest.mark.integration
def test_truthfulqa_gen_grading_equals_unpatched_lm_eval(shared_data):
    """lm-eval exactly as it runs (1,000 resamples per reference), on rows of every kind of answer."""
    from lm_eval.tasks.truthfulqa import utils

    docs = _truthfulqa_docs(shared_data)
    answers = _answers(docs)
    fast = fast_process_results(utils.process_results_gen)
    for i in (0, 1, 2, 3, 410):
        _assert_identical(utils.process_results_gen(docs[i], [answers[i]]), fast(docs[i], [answers[i]]), f"row {i}")


def test_an_lm_eval_function_unlike_the_one_checked_is_not_replaced(monkeypatch):
    """Another lm-eval version's function (different source) falls back to lm-eval's own: exact, only slower."""
    from lm_eval.tasks.truthfulqa import utils

    assert fast_process_results(utils.process_results_gen) is not None
    key = "lm_eval.tasks.truthfulqa.utils:process_results_gen"
    monkeypatch.setitem(GRADERS, key, GRADERS[key].__class__(**{**GRADERS[key].__dict__, "source_sha256": "0" * 64}))
    assert fast_process_results(utils.process_results_gen) is None
    assert fast_process_results(utils.process_results_mc2) is None  # no equal registered
    assert fast_process_results(None) is None
