"""Tasks served by lm-evaluation-harness: names, groups, few-shot, per-choice contexts, offline files.

Agreement tests run lm-eval itself (`simple_evaluate` with its own task YAMLs, only the dataset
pointed at local jsonl files) and quantconf on the same tiny model, then compare contexts byte for
byte, per-choice log-likelihoods, acc/acc_norm and group aggregates. lm-eval's samples are written
by its own `EvaluationTracker` (what `--log_samples` runs) and imported back with import-lm-eval.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_model, evaluate_into, write_jsonl, folder_task_manager
from quantconf import QuantconfError
from quantconf.analysis.metrics import accuracy, mc2_mass
from quantconf.evaluation import evaluate_task
from quantconf.importers.lm_eval_files import BUILTIN_LM_EVAL_YAMLS, import_lm_eval, write_offline_task_yamls
from quantconf.predictions import group_metrics, read_manifest, read_prediction_dir
from quantconf.inference.scoring import QuestionTree, score_questions, score_requests
from quantconf.tasks import Question, load_task, resolve_tasks

lm_eval = pytest.importorskip("lm_eval")
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"

WINOGRANDE_ROWS = [
    {"sentence": "The trophy doesn't fit into the brown suitcase because the _ is too large.",
     "option1": "trophy", "option2": "suitcase", "answer": "1"},
    {"sentence": "The trophy doesn't fit into the brown suitcase because the _ is too small.",
     "option1": "trophy", "option2": "suitcase", "answer": "2"},
    {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "1"},
    {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "2"},
    {"sentence": "The city councilmen refused the demonstrators a permit because _ feared violence.",
     "option1": "the city councilmen", "option2": "the demonstrators", "answer": "1"},
    {"sentence": "The city councilmen refused the demonstrators a permit because _ advocated violence.",
     "option1": "the city councilmen", "option2": "the demonstrators", "answer": "2"},
]


@pytest.fixture(scope="module")
def long_lm(tmp_path_factory):
    """The tiny model with a window long enough for 5-shot prompts in its short tokens."""
    from quantconf.models.loading import load_model

    return load_model(str(build_tiny_model(tmp_path_factory.mktemp("tiny-long"), max_positions=4096)))


def run_lm_eval(lm, tasks, task_manager, out: Path, **kwargs) -> tuple[dict, Path]:
    """simple_evaluate, then lm-eval's own EvaluationTracker writes the --log_samples files, called
    as lm-eval's CLI (`lm_eval run ... --log_samples --output_path OUT`) calls it."""
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM

    hflm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=4, device="cpu")
    tracker = EvaluationTracker(output_path=str(out))
    res = lm_eval.simple_evaluate(model=hflm, tasks=tasks, log_samples=True, task_manager=task_manager,
                                  bootstrap_iters=0, evaluation_tracker=tracker, **kwargs)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=copy.deepcopy(samples))
    for name in res["configs"]:
        tracker.save_results_samples(task_name=name, samples=copy.deepcopy(samples[name]))  # it rewrites them
    assert list(out.rglob("samples_*.jsonl")), "lm-eval wrote no samples files"
    return {**res, "samples": samples}, out


def check_same(samples: list[dict], df, rtol=1e-6):
    """lm-eval's in-memory samples vs our predictions: contexts byte-identical, logliks, greedy, acc."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    assert len(samples) == len(df)
    for s, (_, row) in zip(samples, df.iterrows()):
        assert s["doc_id"] == row["doc_id"]
        contexts = [a[0] for a in s["arguments"]]
        if "contexts" in row and row["contexts"] is not None:
            assert contexts == list(row["contexts"])
            assert {a[1] for a in s["arguments"]} == {" " + row["continuation"]}
        else:
            assert set(contexts) == {row["context"]}
            assert [a[1] for a in s["arguments"]] == [" " + c for c in row["choices"]]
        np.testing.assert_allclose(row["loglik"], [float(r[0]) for r in s["filtered_resps"]], atol=1e-4, rtol=rtol)
        assert [bool(r[1]) for r in s["filtered_resps"]] == list(row["is_greedy"])
        assert s["acc"] == float(np.argmax(row["loglik"]) == row["gold"])
        if "acc_norm" in s:
            assert s["acc_norm"] == float(np.argmax(np.array(row["loglik"]) / np.array(row["n_chars"])) == row["gold"])


# ---------------------------------------------------------------------------------------------
# The question model: per-choice contexts


def test_requests_of_shared_and_per_choice_contexts():
    q = Question(0, "Q: x\nA:", ["yes", "no"], 1)
    assert q.requests(" ") == [("Q: x\nA:", " yes"), ("Q: x\nA:", " no")]
    w = Question(1, "The cat ", ["The cat sat", "The dog sat"], 0, contexts=("The cat sat", "The dog sat"),
                 continuation="on the mat.")
    assert w.requests(" ") == [("The cat sat", " on the mat."), ("The dog sat", " on the mat.")]


def test_prefix_tree_shares_what_per_choice_contexts_have_in_common(tiny_lm):
    ctxs, conts = [[1, 2, 3, 4], [1, 2, 5]], [[7, 8], [7, 8]]
    tree = QuestionTree.build(ctxs, conts)
    # 1,2 shared; then 3,4,7 and 5,7 (the last continuation token is never an input)
    assert tree.tokens == [1, 2, 3, 4, 7, 5, 7]
    assert tree.depths == [0, 1, 2, 3, 4, 2, 3]
    assert tree.predictors == [[3, 4], [5, 6]]
    with pytest.raises(ValueError, match="2 contexts for 3"):
        QuestionTree.build(ctxs, conts + [[9]])
    packed = score_questions(tiny_lm.model, [(ctxs, conts)])[0]
    naive = score_requests(tiny_lm.model, list(zip(ctxs, conts)))
    np.testing.assert_allclose([s.loglik for s in packed], [s.loglik for s in naive], atol=1e-5)


def test_file_task_with_per_choice_contexts(tmp_path, tiny_lm):
    rows = [{"contexts": [r["sentence"].split("_")[0] + r["option1"], r["sentence"].split("_")[0] + r["option2"]],
             "continuation": r["sentence"].split("_")[1].strip(), "gold": int(r["answer"]) - 1}
            for r in WINOGRANDE_ROWS] + [{"query": "Is it?", "choices": ["yes", "no"], "gold": 0}]
    f = write_jsonl(tmp_path / "wg.jsonl", rows)
    loaded = load_task(f"file:{f}")
    q = loaded.questions[0]
    assert q.contexts[1] == "The trophy doesn't fit into the brown suitcase because the suitcase"
    assert q.continuation == "is too large." and q.context.endswith("because the ")
    assert loaded.questions[-1].contexts is None
    packed = evaluate_task(tiny_lm, loaded)
    naive = evaluate_task(tiny_lm, loaded, scorer="naive")
    np.testing.assert_allclose(np.concatenate(packed["loglik"]), np.concatenate(naive["loglik"]), rtol=1e-6)
    assert list(packed["contexts"][0]) == list(q.contexts) and packed["contexts"].iloc[-1] is None
    # a per-choice row without its continuation names the row
    write_jsonl(tmp_path / "bad.jsonl", [{"contexts": ["a", "b"], "gold": 0}])
    with pytest.raises(QuantconfError, match=r"bad.jsonl:1: .*continuation"):
        load_task(f"file:{tmp_path / 'bad.jsonl'}")


# ---------------------------------------------------------------------------------------------
# Names, groups, bad input (nothing is loaded)


def _own_scorer_task(folder: Path, name: str, scorer: str, docs: list[dict]) -> Path:
    """A user YAML multiple-choice task over local docs, scored by `utils.<scorer>` (written beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / f"{name}.jsonl", docs)
    (folder / "utils.py").write_text(
        "import numpy as np\n"
        "def mass_on_labelled(doc, results):  # truthfulqa_mc2's scorer, labels in any order\n"
        "    ll = np.array([r[0] for r in results]); p = np.exp(ll - ll.max())\n"
        "    return {'acc': float(p[np.array(doc['labels']) == 1].sum() / p.sum())}\n"
        "def likelihood_difference(doc, results):  # crows_pairs-like: not a mass on a set of choices\n"
        "    return {'likelihood_diff': abs(results[0][0] - results[1][0])}\n")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: {folder / name}.jsonl\n"
        "validation_split: validation\noutput_type: multiple_choice\ndoc_to_text: 'Q: {{question}}\\nA:'\n"
        "doc_to_target: 0\ndoc_to_choice: '{{choices}}'\n"
        f"process_results: !function utils.{scorer}\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return folder


def test_lm_eval_tasks_scored_by_their_own_process_results(tmp_path, tiny_lm):
    """lm_eval:truthfulqa_mc2 read its gold as 0 for every question and reported argmax == 0 as "acc" (exit 0).
    A multiple-choice task with its own process_results is scored by that function when it is the mass on a set
    of choices (the set found by probing it: here labels in any order), and refused by name otherwise."""

    docs = [{"question": f"q{i}", "choices": ["a", "bb", "c c", "d"], "labels": labels}
            for i, labels in enumerate([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]])]
    folder = _own_scorer_task(tmp_path / "mass", "my_mass", "mass_on_labelled", docs)
    task = load_task("my_mass", include_path=str(folder))
    assert [q.gold for q in task.questions] == [[1, 3], [0], [2, 3]]
    df = evaluate_task(tiny_lm, task, batch_size=4)
    lm_task = folder_task_manager(folder).load(["my_mass"])["tasks"]["my_mass"]
    theirs = [lm_task.process_results(d, [(ll, False) for ll in row]) ["acc"] for d, row in zip(docs, df["loglik"])]
    assert accuracy(df)["acc"] == pytest.approx(np.mean(theirs), abs=1e-12)

    folder = _own_scorer_task(tmp_path / "diff", "my_diff", "likelihood_difference", docs)
    with pytest.raises(QuantconfError, match=r"task my_diff is scored by its own process_results "
                                             r"\(likelihood_difference\), which is not the probability mass .*"
                                             r"my_diff doc 0: choice 0 alone scores 50, neither 0 nor 1"):
        load_task("my_diff", include_path=str(folder))
    (mc1,), _ = resolve_tasks(["lm_eval:truthfulqa_mc1"])  # single-gold: served as before
    assert mc1.lm_eval == "truthfulqa_mc1"


@pytest.mark.integration  # ../shared data, the default model
def test_truthfulqa_mc2_both_routes_equal_lm_eval_evaluator(shared_data, tmp_path, capsys):
    """`quantconf eval default --tasks truthfulqa_mc2` and `--tasks lm_eval:truthfulqa_mc2` give lm-eval's own
    evaluator's mc2 on the same questions, per question and in aggregate."""

    from quantconf.cli import main
    from quantconf.models.loading import load_model

    limit = 5  # ~8 choices each behind a 6-shot preamble: lm-eval's runner scores each choice in full
    for route in ("truthfulqa_mc2", "lm_eval:truthfulqa_mc2"):
        assert main(["eval", "default", "--tasks", route, "--data-dir", str(shared_data), "--limit", str(limit),
                     "--out", str(tmp_path / route.replace(":", "_")), "--quiet", "--threads", "2"]) == 0
    builtin = read_prediction_dir(tmp_path / "truthfulqa_mc2")["truthfulqa_mc2"]
    via_lm_eval = read_prediction_dir(tmp_path / "lm_eval_truthfulqa_mc2")["truthfulqa_mc2"]
    (tmp_path / "yaml").mkdir()
    names = write_offline_task_yamls(tmp_path / "yaml", shared_data,
                                     {"truthfulqa_mc2": BUILTIN_LM_EVAL_YAMLS["truthfulqa_mc2"]})
    res, _ = run_lm_eval(load_model("default"), names, folder_task_manager(tmp_path / "yaml"),
                         tmp_path / "logs", limit=limit)
    samples = sorted(res["samples"]["qc_truthfulqa_mc2"], key=lambda s: s["doc_id"])
    theirs = res["results"]["qc_truthfulqa_mc2"]["acc,none"]
    assert 0.1 < theirs < 0.9
    for df in (builtin, via_lm_eval):
        assert list(df["gold"].map(list)) == list(builtin["gold"].map(list))
        per_question = mc2_mass(df["loglik"], df["gold"])
        np.testing.assert_allclose(per_question, [s["acc"] for s in samples], atol=1e-5)
        assert accuracy(df)["acc"] == pytest.approx(theirs, abs=1e-5)
    capsys.readouterr()
    assert main(["metrics", str(tmp_path / "lm_eval_truthfulqa_mc2"), "--json", "--bootstrap", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["truthfulqa_mc2"]["mc2"] == pytest.approx(theirs, abs=1e-5)


def test_names_resolve_builtins_first_then_lm_eval():
    (arc,), groups = resolve_tasks(["arc_easy"])
    assert arc.lm_eval is None and not groups
    (forced,), _ = resolve_tasks(["lm_eval:arc_easy"])
    assert forced.lm_eval == "arc_easy" and forced.version.startswith("lm-eval-")
    (fewshot,), _ = resolve_tasks(["arc_easy"], num_fewshot=5)
    assert fewshot.lm_eval == "arc_easy" and fewshot.num_fewshot == 5 and fewshot.fewshot_seed == 1234
    (wg,), _ = resolve_tasks(["winogrande"])
    assert (wg.lm_eval, wg.hub_path, wg.hub_name, wg.split) == ("winogrande", "allenai/winogrande", "winogrande_xl",
                                                                 "validation")
    tasks, groups = resolve_tasks(["mmlu"])
    assert len(tasks) == 57 and "mmlu_machine_learning" in [t.name for t in tasks]
    assert set(groups) == {"mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}
    assert sorted(groups["mmlu"]["tasks"]) == ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]
    assert groups["mmlu_stem"]["aggregate_metric_list"][0]["weight_by_size"] is True
    tasks, groups = resolve_tasks(["ai2_arc"])  # a tag: its tasks, no group
    assert sorted(t.name for t in tasks) == ["arc_challenge", "arc_easy"] and not groups


@pytest.mark.parametrize("call, message", [
    (lambda: resolve_tasks(["winogrand"]), r"unknown task 'winogrand'; did you mean winogrande"),
    (lambda: resolve_tasks(["pika"]), r"did you mean piqa"),
    (lambda: resolve_tasks(["wikitext"]), r"task wikitext is an lm-eval 'loglikelihood_rolling' task"),
    (lambda: resolve_tasks(["file:x.jsonl"], num_fewshot=2), r"num_fewshot does not apply to file:x.jsonl"),
    (lambda: resolve_tasks(["arithmetic"], num_fewshot=2), r"num_fewshot does not apply to arithmetic"),
    (lambda: resolve_tasks(["piqa"], num_fewshot=-1), r"num_fewshot must be a whole number >= 0"),
])
def test_bad_names_and_options(call, message):
    with pytest.raises(QuantconfError, match=message):
        call()


def test_missing_split_and_too_many_shots_fail_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch):
    import quantconf.models.loading as models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    data = tmp_path / "data"
    write_jsonl(data / "allenai/winogrande/winogrande_xl/validation.jsonl", WINOGRANDE_ROWS)
    with pytest.raises(QuantconfError, match=r"winogrande_xl/train.jsonl not found \(its few-shot split 'train'"):
        evaluate_into(str(tiny_model_dir), ["winogrande"], tmp_path / "o1", data_dir=data, num_fewshot=1)
    with pytest.raises(QuantconfError, match=r"allenai/winogrande/winogrande_xl/validation.jsonl not found"):
        evaluate_into(str(tiny_model_dir), ["winogrande"], tmp_path / "o2", data_dir=tmp_path, limit=2)
    write_jsonl(data / "allenai/winogrande/winogrande_xl/train.jsonl", WINOGRANDE_ROWS[:3])
    with pytest.raises(QuantconfError, match=r"num_fewshot 3 needs 4 examples in its few-shot split, which has 3"):
        evaluate_into(str(tiny_model_dir), ["winogrande"], tmp_path / "o3", data_dir=data, num_fewshot=3)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))  # failed first runs leave no dirs


def test_builtin_index_is_kept_on_disk_equal_to_lm_evals_build(tmp_path, monkeypatch):
    """lm-eval's built-in index is built once per installation (~10 s) and read back from the cache dir in
    later processes: the entries read equal the ones lm-eval's TaskIndex.build made, in the same order; a
    corrupt file is built again, not trusted."""
    from lm_eval.tasks._index import TaskIndex

    from quantconf.tasks import lm_eval_bridge as bridge

    monkeypatch.setenv("QUANTCONF_CACHE", str(tmp_path))
    builds = []
    real_build = TaskIndex.build
    monkeypatch.setattr(TaskIndex, "build", staticmethod(lambda paths, **kw: builds.append(paths) or real_build(paths, **kw)))
    bridge.builtin_task_index.cache_clear()
    try:
        built = bridge.builtin_task_index()
        path = bridge.builtin_index_cache_path()
        assert len(builds) == 1 and path.parent.parent == tmp_path and path.is_file()
        read = bridge.read_cached_index(path)
        assert read == built and list(read) == list(built) and len(read) > 10_000
        bridge.builtin_task_index.cache_clear()
        assert bridge.builtin_task_index() == built and len(builds) == 1  # read, not built
        path.write_text('[["arc_easy", "TASK"')  # cut off mid-write by something else
        assert bridge.read_cached_index(path) is None
        bridge.builtin_task_index.cache_clear()
        monkeypatch.setattr(TaskIndex, "build", staticmethod(lambda paths, **kw: builds.append(paths) or built))
        assert bridge.builtin_task_index() == built and len(builds) == 2  # built again and the file replaced
        assert bridge.read_cached_index(path) == built
    finally:
        bridge.builtin_task_index.cache_clear()


def test_task_manager_reusing_the_builtin_index_equals_lm_evals_own(tmp_path):
    """The bridge's task manager for an include path (lm-eval's built-in index built once per process, the
    folder's names added) has the index lm-eval builds for the same path: a folder task replacing a built-in
    name, a new group over built-in tasks, and a tag."""
    from lm_eval.tasks import TaskManager

    from quantconf.tasks.lm_eval_bridge import composed_task_manager

    (tmp_path / "piqa_mine.yaml").write_text("task: piqa\ndataset_path: json\noutput_type: multiple_choice\n"
                                            "doc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n"
                                            "tag: [my_tag]\n")
    (tmp_path / "g.yaml").write_text("group: my_group\ntask: [arc_easy, piqa]\n")
    theirs, ours = TaskManager(include_path=str(tmp_path)), composed_task_manager(str(tmp_path))
    assert ours.task_index == theirs.task_index
    for listing in ("all_tasks", "all_subtasks", "all_groups", "all_tags"):
        assert getattr(ours, listing) == getattr(theirs, listing), listing
    assert ours.task_index["piqa"].yaml_path == tmp_path / "piqa_mine.yaml" and "my_group" in ours.all_groups
    assert "my_tag" in ours.all_tags and len(ours.all_tasks) > 10_000


@pytest.mark.integration  # ../shared data
def test_builtins_equal_lm_eval_on_every_shared_document(shared_data, tmp_path):
    """Contexts, choices and gold of every built-in (but the generated one) equal what lm-eval's own
    task definitions build for every document of ../shared/data."""

    names = write_offline_task_yamls(tmp_path, shared_data, BUILTIN_LM_EVAL_YAMLS)
    tm = folder_task_manager(tmp_path)  # the files include lm-eval's by path
    for name, lm_name in zip(BUILTIN_LM_EVAL_YAMLS, names):
        task = tm.load([lm_name])["tasks"][lm_name]
        task.build_all_requests(limit=None)
        by_doc = {}
        for inst in task.instances:
            by_doc.setdefault(inst.doc_id, []).append(inst)
        ours = load_task(name, data_dir=shared_data).questions
        assert len(ours) == len(by_doc), name
        for q in ours:
            insts = sorted(by_doc[q.doc_id], key=lambda i: i.idx)
            assert [i.arguments for i in insts] == q.requests(" "), (name, q.doc_id)
            doc = insts[0].doc
            assert task.doc_to_choice(doc) == q.choices, (name, q.doc_id)
            if name != "truthfulqa_mc2":  # lm-eval's mc2 finds the true answers in process_results
                assert task.doc_to_target(doc) == q.gold, (name, q.doc_id)
            else:
                assert q.gold == [i for i, v in enumerate(doc["mc2_targets"]["labels"]) if v == 1]


# ---------------------------------------------------------------------------------------------
# Agreement with lm-eval itself


def _lm_eval_yaml(folder: Path, task: str, include: str, data_files: dict, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task}.yaml").write_text(json.dumps({
        "include": str(LM_EVAL_TASKS / include), "task": task, "tag": [], "dataset_path": "json",
        "dataset_name": None, "dataset_kwargs": {"data_files": {k: str(v) for k, v in data_files.items()}}, **extra}))


def test_per_choice_context_task_agrees_with_lm_eval(tmp_path, long_lm):
    """lm-eval's winogrande (choices in the context) from local files, 0- and 2-shot."""

    data = tmp_path / "data"
    valid = write_jsonl(data / "allenai/winogrande/winogrande_xl/validation.jsonl", WINOGRANDE_ROWS)
    train = write_jsonl(data / "allenai/winogrande/winogrande_xl/train.jsonl", WINOGRANDE_ROWS[::-1])
    _lm_eval_yaml(tmp_path / "yaml", "qc_winogrande", "winogrande/default.yaml",
                  {"validation": valid, "train": train})
    for shots in (0, 2):
        res, logs = run_lm_eval(long_lm, ["qc_winogrande"], folder_task_manager(tmp_path / "yaml"),
                                tmp_path / f"logs{shots}", num_fewshot=shots)
        ours = evaluate_task(long_lm, load_task("winogrande", data_dir=data, num_fewshot=shots))
        assert ours["task"][0] == "winogrande" and len(ours) == len(WINOGRANDE_ROWS)
        check_same(res["samples"]["qc_winogrande"], ours)
        assert accuracy(ours)["acc"] == res["results"]["qc_winogrande"]["acc,none"]
        # lm-eval's own --log_samples file imports back to the same numbers and gold labels
        imported = read_prediction_dir(_import(logs, tmp_path / f"imp{shots}"))["qc_winogrande"]
        assert list(imported["gold"]) == list(ours["gold"])
        assert [list(c) for c in imported["contexts"]] == [list(c) for c in ours["contexts"]]
        np.testing.assert_allclose(np.concatenate(imported["loglik"]), np.concatenate(ours["loglik"]), atol=1e-4)
        assert accuracy(imported) == pytest.approx(accuracy(ours))
    assert "\n\n" in ours["contexts"][0][0]  # the 2-shot contexts hold two solved examples


def _import(logs: Path, out: Path) -> Path:
    import_lm_eval([logs], out)
    return out


def test_five_shot_arc_easy_agrees_with_lm_eval(shared_data, tmp_path, long_lm):
    """arc_easy 5-shot: lm-eval's sampler (seed 1234) draws from the train split; the test split
    and a train split are cut from ../shared/data's ARC-Easy test file into a hub-layout dir."""

    rows = [json.loads(line) for line in (shared_data / "arc_easy/test.jsonl").read_text().splitlines()[:200]]
    data = tmp_path / "data"
    test = write_jsonl(data / "allenai/ai2_arc/ARC-Easy/test.jsonl", rows[:12])
    train = write_jsonl(data / "allenai/ai2_arc/ARC-Easy/train.jsonl", rows[100:200])
    _lm_eval_yaml(tmp_path / "yaml", "qc_arc_easy", "arc/arc_easy.yaml", {"test": test, "train": train},
                  validation_split=None)
    res, logs = run_lm_eval(long_lm, ["qc_arc_easy"], folder_task_manager(tmp_path / "yaml"),
                            tmp_path / "logs", num_fewshot=5)
    loaded = load_task("arc_easy", data_dir=data, num_fewshot=5)
    assert loaded.task.lm_eval == "arc_easy" and loaded.questions[0].context.count("Question:") == 6
    ours = evaluate_task(long_lm, loaded)
    check_same(res["samples"]["qc_arc_easy"], ours)
    for metric in ("acc", "acc_norm"):
        assert accuracy(ours)[metric] == res["results"]["qc_arc_easy"][f"{metric},none"]
    imported = read_prediction_dir(_import(logs, tmp_path / "imp"))["qc_arc_easy"]
    assert list(imported["gold"]) == list(ours["gold"]) and list(imported["context"]) == list(ours["context"])
    # another few-shot seed draws other examples
    other = load_task("arc_easy", data_dir=data, num_fewshot=5, fewshot_seed=7)
    assert other.questions[0].context != loaded.questions[0].context
    assert other.source_sha256 != loaded.source_sha256


def test_group_of_user_yaml_tasks_agrees_with_lm_eval(shared_data, tmp_path, long_lm, capsys):
    """--include-path with the user's own YAML tasks and a group over them: one parquet per task,
    and the group's aggregate equal to lm-eval's (weighted by size)."""

    yaml_dir = tmp_path / "yaml"
    _lm_eval_yaml(yaml_dir, "my_piqa", "piqa/piqa.yaml", {"validation": shared_data / "piqa/validation.jsonl"},
                  training_split=None)
    _lm_eval_yaml(yaml_dir, "my_boolq", "super_glue/boolq/default.yaml",
                  {"validation": shared_data / "boolq/validation.jsonl"}, training_split=None)
    (yaml_dir / "my_group.yaml").write_text(json.dumps({
        "group": "my_group", "task": ["my_piqa", "my_boolq"],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True},
                                  {"metric": "acc_norm", "aggregation": "mean", "weight_by_size": False}]}))
    res, logs = run_lm_eval(long_lm, ["my_group"], folder_task_manager(yaml_dir), tmp_path / "logs",
                            limit=8)
    out = tmp_path / "out"
    summary = evaluate_into(long_lm, ["my_group"], out, limit=8, include_path=str(yaml_dir), progress=False,
                              log=lambda m: None)
    assert list(summary) == ["my_piqa", "my_boolq"]
    preds = read_prediction_dir(out)
    imported = read_prediction_dir(_import(logs, tmp_path / "imp"))  # lm-eval's files of user YAML tasks
    for name in ("my_piqa", "my_boolq"):
        check_same(res["samples"][name], preds[name])
        assert list(imported[name]["gold"]) == list(preds[name]["gold"])
        assert accuracy(imported[name]) == pytest.approx(accuracy(preds[name]))
    manifest = read_manifest(out)
    assert manifest["groups"]["my_group"]["tasks"] == ["my_piqa", "my_boolq"]
    results = {name: {"n": len(df), **accuracy(df)} for name, df in preds.items()}
    agg = group_metrics(results, manifest["groups"])["my_group"]
    assert agg["acc"] == pytest.approx(res["results"]["my_group"]["acc,none"], abs=1e-12)
    assert agg["acc_norm"] == pytest.approx(np.mean([results[t]["acc_norm"] for t in ("my_piqa", "my_boolq")]))
    assert manifest["tasks"]["my_piqa"]["lm_eval_task"] == "my_piqa"
    from quantconf.cli import main  # `quantconf metrics` shows the group's aggregate beside its tasks

    assert main(["metrics", str(out), "--json", "--bootstrap", "0"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["my_group"]["acc"] == pytest.approx(res["results"]["my_group"]["acc,none"], abs=1e-12)
    assert shown["my_group"]["n"] == 16 and shown["my_group"]["tasks"] == ["my_piqa", "my_boolq"]
    # a second run reuses both tasks; another few-shot count is a new key
    again = evaluate_into(long_lm, ["my_group"], out, limit=8, include_path=str(yaml_dir), progress=False,
                            log=lambda m: None)
    assert all(v["reused"] for v in again.values())


def test_group_metrics_by_hand():
    results = {"a": {"n": 10, "acc": 0.5}, "b": {"n": 30, "acc": 0.9}, "c": {"n": 20, "acc": 0.2}}
    groups = {"inner": {"tasks": ["a", "b"], "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]},
              "outer": {"tasks": ["inner", "c"], "aggregate_metric_list": [{"metric": "acc", "weight_by_size": False}]},
              "bare": {"tasks": ["a"], "aggregate_metric_list": []},
              "partial": {"tasks": ["a", "zzz"], "aggregate_metric_list": [{"metric": "acc"}]}}
    out = group_metrics(results, groups)
    assert out["inner"]["acc"] == pytest.approx((10 * 0.5 + 30 * 0.9) / 40) and out["inner"]["n"] == 40
    assert out["outer"]["acc"] == pytest.approx((0.8 + 0.2) / 2) and out["outer"]["n"] == 60
    assert "bare" not in out and "partial" not in out


# ---------------------------------------------------------------------------------------------
# CLI and studies


def test_cli_lists_lm_eval_tasks_and_names_the_flag(capsys, tmp_path):
    from quantconf.cli import main

    assert main(["tasks", "--lm-eval", "winogr"]) == 0
    out = capsys.readouterr()
    assert "winogrande" in out.out and "task" in out.out and "lm-eval names match" in out.err
    assert main(["tasks"]) == 0
    assert "quantconf tasks --lm-eval PATTERN" in capsys.readouterr().out
    f = write_jsonl(tmp_path / "t.jsonl", [{"query": "q", "choices": ["a", "b"], "gold": 0}])
    assert main(["eval", "default", "--tasks", f"file:{f}", "--out", str(tmp_path / "o"), "--num-fewshot", "2"]) == 2
    assert "--num-fewshot does not apply to file:" in capsys.readouterr().err
    assert main(["eval", "default", "--tasks", "winogrand", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean winogrande" in capsys.readouterr().err


def test_study_takes_num_fewshot_and_expands_groups(tmp_path):
    from quantconf.study import load_study, plan

    base = {"models": ["default"], "variants": [{"method": "rtn", "bits": 4, "group_size": 64}]}
    zero = plan(load_study(data={**base, "tasks": ["winogrande", "ai2_arc"]}), tmp_path)
    five = plan(load_study(data={**base, "tasks": ["winogrande", "ai2_arc"], "num_fewshot": 5}), tmp_path)
    evals = [s for s in zero if s.kind == "eval"]
    assert evals[0].tasks == ("winogrande", "arc_challenge", "arc_easy")
    assert {s.path for s in evals}.isdisjoint({s.path for s in five if s.kind == "eval"})
    with pytest.raises(QuantconfError, match="wikitext is an lm-eval 'loglikelihood_rolling' task"):
        load_study(data={**base, "tasks": ["wikitext"]})
