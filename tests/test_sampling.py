"""inference/sampling.py: K samples per prompt from one prefill equal K separate `model.generate` calls with the
same per-sample streams; a sample depends only on its own seed; temperature / top-p draw from the distribution
they name; the model's own log-probabilities are recorded."""

import math

import numpy as np
import pytest
import torch

from quantconf.errors import QuantconfError
from quantconf.inference.generation import cut_at_stop, encode_prompts, stop_token_ids
from quantconf.inference.generation import sample_generate as sample_batch
from quantconf.inference.sampling import GumbelSampler, SamplingConfig, sample_stream_seed, warp

PROMPTS = ["Question: what is 2 + 2?\nAnswer:", "The", "A much longer prompt about apples, pears and plums, then:"]


def generate_one(lm, prompt_ids: list[int], seed: int, config: SamplingConfig, max_new: int, until: list[str]):
    """The naive way: one transformers `generate` call for one sample, drawing from the same stream."""
    sampler = GumbelSampler(config, [seed])
    out = lm.model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                            do_sample=False, max_new_tokens=max_new, logits_processor=[sampler.processor(0)],
                            pad_token_id=lm.tokenizer.eos_token_id, eos_token_id=sorted(stop_token_ids(lm)))
    new = [int(t) for t in out[0, len(prompt_ids):]]
    stops = stop_token_ids(lm)
    new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
    return cut_at_stop(lm.tokenizer.decode(new, skip_special_tokens=True), until), new


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_k_samples_from_one_prefill_equal_k_separate_generate_calls(tiny_lm, temperature, top_p):
    config = SamplingConfig(k=4, temperature=temperature, top_p=top_p, seed=3)
    encoded = encode_prompts(tiny_lm, PROMPTS, 10)
    seeds = [[sample_stream_seed(3, "t", i, k) for k in range(4)] for i in range(len(PROMPTS))]
    samples = sample_batch(tiny_lm, encoded, seeds, [], 10, config)
    for ids, row_seeds, row in zip(encoded, seeds, samples):
        assert len(row) == 4
        for seed, s in zip(row_seeds, row):
            text, tokens = generate_one(tiny_lm, ids, seed, config, 10, [])
            assert s.token_ids == tokens and s.text == text
    # a tiny random model at temperature 1 writes different answers for different seeds
    assert len({tuple(s.token_ids) for s in samples[0]}) > 1


def test_a_sample_depends_only_on_its_own_seed(tiny_lm):
    """Another batch (one prompt alone, other prompts beside it) writes the same sample."""
    config = SamplingConfig(k=3, seed=1)
    encoded = encode_prompts(tiny_lm, PROMPTS, 8)
    seeds = [[sample_stream_seed(1, "t", i, k) for k in range(3)] for i in range(len(PROMPTS))]
    together = sample_batch(tiny_lm, encoded, seeds, [], 8, config)
    alone = sample_batch(tiny_lm, encoded[1:2], seeds[1:2], [], 8, config)
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in together[1]]
    assert sample_stream_seed(1, "t", 0, 0) != sample_stream_seed(1, "t", 0, 1) != sample_stream_seed(2, "t", 0, 1)


def test_recorded_logprobs_are_the_models_own(tiny_lm):
    """At temperature 0.5 the tokens are drawn from the tempered distribution, but the recorded log-probabilities
    are the model's (temperature 1): one full forward pass over prompt + sample gives them."""
    config = SamplingConfig(k=2, temperature=0.5, seed=0)
    ids = encode_prompts(tiny_lm, PROMPTS[:1], 6)
    sample = sample_batch(tiny_lm, ids, [[11, 12]], [], 6, config)[0][1]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm.model(torch.tensor([ids[0] + sample.token_ids])).logits[0].float(), -1)
    expected = [float(logp[len(ids[0]) - 1 + j, t]) for j, t in enumerate(sample.token_ids)]
    assert sample.token_logprobs == pytest.approx(expected, abs=1e-4)


def test_the_gumbel_draw_follows_the_tempered_top_p_distribution():
    """10,000 draws from a 5-token distribution: frequencies within 4 standard errors of the named
    probabilities (temperature 2, then top-p 0.7 keeps the three most probable tokens)."""
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03]]))
    config = SamplingConfig(k=2, temperature=2.0, top_p=0.7)
    tempered = torch.softmax(logp / 2, -1)[0].numpy()
    nucleus = np.argsort(-tempered)[:int(np.searchsorted(np.cumsum(np.sort(tempered)[::-1]), 0.7) + 1)]
    target = np.zeros(5)
    target[nucleus] = tempered[nucleus] / tempered[nucleus].sum()
    assert set(nucleus) == {0, 1, 2}
    sampler = GumbelSampler(config, [7])
    draws = np.array([int(sampler(logp, [0])[0]) for _ in range(10_000)])
    freq = np.bincount(draws, minlength=5) / len(draws)
    se = np.sqrt(target * (1 - target) / len(draws)) + 1e-12
    assert np.all(np.abs(freq - target) <= 4 * se + 1e-9), (freq, target)
    # transformers' own warpers remove the same tokens
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    theirs = TopPLogitsWarper(0.7)(None, TemperatureLogitsWarper(2.0)(None, logp.clone()))
    assert torch.equal(torch.isinf(theirs), torch.isinf(warp(logp, 2.0, 0.7)))


@pytest.mark.parametrize("kwargs,param", [({"k": 1}, "samples"), ({"temperature": 0}, "temperature"),
                                          ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_bad_sampling_options_name_the_parameter(kwargs, param):
    with pytest.raises(QuantconfError) as e:
        SamplingConfig(**kwargs)
    assert e.value.param == param
    assert math.isfinite(SamplingConfig().temperature)


# ---------------------------------------------------------------------------------------------
# Which samples are the same answer (inference/equivalence.py)

from quantconf.inference import equivalence  # noqa: E402


def test_clusters_form_as_lm_polygraph_forms_them():
    """Each sample joins the first cluster whose *first* member it is equivalent to (not transitive closure)."""
    near = {(0, 1), (1, 2)}  # 0~1, 1~2, but 0 and 2 not: 2 starts its own cluster
    eq = lambda i, j: i == j or (min(i, j), max(i, j)) in near  # noqa: E731
    assert equivalence.clusters_of(eq, 3) == [0, 0, 1]
    assert equivalence.clusters_of(lambda i, j: True, 4) == [0, 0, 0, 0]
    assert equivalence.clusters_of(lambda i, j: i == j, 3) == [0, 1, 2]


def test_rouge_equivalence_and_the_share_agreeing_with_the_greedy_answer():
    g = equivalence.group("rouge", "0.5", "the cat sat", ["the cat sat", "a cat sat down", "dogs bark", "the cat"])
    # ROUGE-L F1: "a cat sat down" vs "the cat sat": lcs 2, P 2/4, R 2/3 -> 0.571 >= .5; "the cat": 0.8
    assert g.clusters == [0, 0, 1, 0]
    assert g.greedy_agreement == pytest.approx(3 / 4)
    sim = np.asarray(g.similarity).reshape(4, 4)
    assert sim[0, 1] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)) and np.allclose(np.diag(sim), 1)


def test_answer_keys_of_an_lm_eval_exact_match_task_follow_its_filter(tmp_path):
    """tiny_gen's first filter extracts the first number: " 1", "it is 1" and "1 apple" are one answer."""
    from quantconf.tasks import load_task
    from test_generation_tasks import tiny_gen_yaml

    loaded = load_task("tiny_gen", include_path=str(tiny_gen_yaml(tmp_path)))
    p = loaded.questions[0]
    keys = loaded.answer_key([p] * 4, [" 1", "it is 1", "1 apple", "2"])
    assert keys[0] == keys[1] == keys[2] != keys[3]
    g = equivalence.group("answer", "", " 1", [" 1", "it is 1", "2"], keys[:2] + keys[3:], keys[0])
    assert g.clusters == [0, 0, 1] and g.greedy_agreement == pytest.approx(2 / 3)
    assert equivalence.parse("auto", True) == ("answer", "")
    assert equivalence.parse("auto", False) == ("rouge", str(equivalence.ROUGE_THRESHOLD))
    with pytest.raises(QuantconfError, match="no normalised answer"):
        equivalence.parse("answer", False)
    for bad in ("rouge:2", "rouge:x", "nli", "bleu"):
        with pytest.raises(QuantconfError):
            equivalence.parse(bad, True)


def tiny_nli_model(folder, labels=("entailment", "neutral", "contradiction")):
    """A 2-layer BERT sequence classifier with random weights and a word-level vocabulary: an NLI model in form."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "a", "dog", "4", "four", "5", "is"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={name: i for i, name in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_nli_equivalence_is_bidirectional_entailment_under_the_named_model(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_nli_model(tmp_path / "nli")
    texts = ["the cat sat", "a cat sat", "4", "four", "the dog is 5"]
    judge = equivalence.NLIJudge(str(folder))
    g = equivalence.group("nli", str(folder), "4", texts, judge=judge)
    # the reference: the model called on one ordered pair at a time
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
    all_texts = texts + ["4"]
    probs = np.zeros((6, 6, 3))
    with torch.no_grad():
        for i, a in enumerate(all_texts):
            for j, b in enumerate(all_texts):
                probs[i, j] = torch.softmax(model(**tok(a, b, return_tensors="pt")).logits[0], -1).numpy()
    entails = probs.argmax(-1) == 0
    both = entails & entails.T
    assert g.clusters == equivalence.clusters_of(lambda i, j: bool(both[i, j]), 5)
    np.testing.assert_allclose(np.asarray(g.similarity).reshape(5, 5), probs[:5, :5, 0], atol=1e-5)
    assert g.greedy_agreement == pytest.approx(both[5, :5].mean())
    with pytest.raises(QuantconfError, match="entailment"):
        equivalence.NLIJudge(str(tiny_nli_model(tmp_path / "no-entail", ("yes", "no"))))
    with pytest.raises(QuantconfError, match="cannot load"):
        equivalence.NLIJudge(str(tmp_path / "absent"))


# ---------------------------------------------------------------------------------------------
# A run with --samples: predictions, reuse, shards, comparison


def test_an_evaluation_with_samples_keeps_them_and_shards_equal_the_whole(tiny_model_dir, tmp_path):
    from conftest import evaluate_into
    from quantconf.analysis.generation import compare_generations, generation_metrics
    from quantconf.inference.sampling import SamplingConfig
    from quantconf.predictions import read_manifest, read_prediction_file

    sampling = SamplingConfig(k=3, seed=5)
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / "a", limit=6, sampling=sampling, batch_size=2)
    df = read_prediction_file(tmp_path / "a" / "arithmetic_gen.parquet")
    assert all(len(s) == 3 for s in df["samples"]) and all(len(c) == 3 for c in df["sample_clusters"])
    assert all(len(w) == 9 for w in df["sample_similarity"]) and set(df["equivalence"]) == {"answer"}
    for texts, ids, lps in zip(df["samples"], df["sample_token_ids"], df["sample_token_logprobs"]):
        assert [len(i) for i in ids] == [len(lp) for lp in lps] and all(isinstance(t, str) for t in texts)
    entry = read_manifest(tmp_path / "a")["tasks"]["arithmetic_gen"]
    assert entry["sampling"]["k"] == 3 and entry["sampling"]["seed"] == 5
    # two shards merged: the same samples (each sample's stream is its own)
    for i in range(2):
        evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / "s", limit=6, sampling=sampling,
                      batch_size=2, shard=(i, 2))
    merged = read_prediction_file(tmp_path / "s" / "arithmetic_gen.parquet")
    assert list(merged["samples"]) == list(df["samples"])
    # another sample seed is another run (not reused); without samples the frame has no sample columns
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / "a", limit=6, batch_size=2,
                  sampling=SamplingConfig(k=3, seed=6))
    other = read_prediction_file(tmp_path / "a" / "arithmetic_gen.parquet")
    assert list(other["samples"]) != list(df["samples"]) and list(other["generation"]) == list(df["generation"])
    m = generation_metrics(df, n_boot=20)
    assert {"neg_semantic_entropy", "neg_eigv", "greedy_agreement", "lexical_similarity"} <= set(m["measures"])
    # full vs "quantized" (here: the other seed's run): each estimator's AUROC and PRR deltas with intervals
    df.loc[df.index[:3], "correct"] = 1.0  # both outcomes, so ranking metrics are defined
    other.loc[other.index[1:4], "correct"] = 1.0
    c = compare_generations(df, other, n_boot=50)
    for name in ("neg_semantic_entropy", "neg_eigv", "lexical_similarity"):
        assert f"delta_auroc_{name}" in c and f"delta_prr_{name}" in c["ci"]
        assert c[f"delta_auroc_{name}"] == pytest.approx(c[f"quant_auroc_{name}"] - c[f"full_auroc_{name}"])


def test_a_study_with_samples_reports_every_estimator_and_its_change(tiny_model_dir, tmp_path):
    """`samples: 3` in a study: the eval steps keep samples, summary.json's confidence_measures hold each
    estimator's AUROC / PRR with intervals equal to a direct compare of the two prediction dirs, and the report
    has the section and its risk-coverage plot; a study without samples keeps its eval step keys."""
    import json

    from quantconf.kinds import compare_task
    from quantconf.predictions import read_prediction_dir
    from quantconf.study import load_study, run_study
    from quantconf.study.plan import plan
    from quantconf.study.steps import EvalStep

    config = {"models": [str(tiny_model_dir)], "tasks": ["arithmetic_gen"], "limit": 10, "bootstrap": 30,
              "threads": 1, "max_gen_toks": 3, "samples": 3, "variants": [{"method": "rtn", "bits": 2, "group_size": 32}]}
    study = load_study(data=config)
    out = tmp_path / "s"
    report = run_study(study, out, log=lambda m: None).read_text()
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["variant"], r["measure"]): r for r in summary["confidence_measures"]}
    evals = [s for s in plan(study, out) if isinstance(s, EvalStep)]
    full, quant = (read_prediction_dir(s.path)["arithmetic_gen"] for s in evals)
    assert "samples" in full.columns and "samples" in quant.columns
    direct = compare_task(full, quant, n_bins=15, n_boot=30, task="arithmetic_gen")
    (variant,) = {v for v, _ in rows if v != "full"}
    for name in ("neg_semantic_entropy", "neg_eigv", "greedy_agreement"):
        r = rows[(variant, name)]
        assert r["delta_prr"] == direct.get(f"delta_prr_{name}") or (np.isnan(r["delta_prr"]) and
                                                                   np.isnan(direct.get(f"delta_prr_{name}", np.nan)))
        assert ("full", name) in rows
    assert "Which confidence measures detect wrong answers" in report and "risk-coverage" in report
    # adding `samples` changed only the eval steps' keys that sample; without it the keys are those of before
    plain = plan(load_study(data={**config, "samples": None}), out)
    assert all(s.inputs.sampling is None for s in plain if isinstance(s, EvalStep))
    assert {s.path for s in plain if isinstance(s, EvalStep)}.isdisjoint({s.path for s in evals})
    import dataclasses

    from quantconf.io import stable_hash

    for s in (s for s in plain if isinstance(s, EvalStep)):  # the key as it was hashed before `sampling` existed
        fields = {f.name: getattr(s.inputs, f.name) for f in dataclasses.fields(s.inputs) if f.name != "sampling"}
        assert s.inputs.key() == stable_hash(["EvalInputs", fields])[:16]


def test_the_cli_evaluates_with_samples_and_prints_each_estimator(tiny_model_dir, tmp_path, capsys):
    from quantconf.cli import main

    out = tmp_path / "e"
    assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic_gen", "--limit", "4", "--samples", "2",
                 "--temperature", "0.8", "--top-p", "0.9", "--sample-seed", "3", "--equivalence", "rouge:0.6",
                 "--max-gen-toks", "3", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["metrics", str(out), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    for name in ("neg_semantic_entropy", "neg_eigv", "greedy_agreement", "lexical_similarity", "prr"):
        assert name in printed
    from quantconf.predictions import read_manifest, read_prediction_file

    assert read_manifest(out)["tasks"]["arithmetic_gen"]["sampling"] == {
        "k": 2, "temperature": 0.8, "top_p": 0.9, "seed": 3, "equivalence": "rouge:0.6", "sampler_version": "1"}
    assert set(read_prediction_file(out / "arithmetic_gen.parquet")["equivalence"]) == {"rouge:0.6"}
    assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic_gen", "--limit", "4", "--samples", "1",
                 "--out", str(tmp_path / "bad"), "--quiet"]) != 0
    assert "samples must be an integer >= 2" in capsys.readouterr().err
