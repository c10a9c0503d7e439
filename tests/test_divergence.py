"""corpus/divergence.py: per-token KL / top-1 / p(correct) against a direct scipy computation on tiny in-test
models, the window rule shared with perplexity, and the statistics against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy

from conftest import CORPUS, build_tiny_model
from quantconf.corpus.divergence import (TokenDivergence, compare_logits, divergence_statistics, token_divergence,
                                  window_mean_interval)
from quantconf.errors import QuantconfError
from quantconf.corpus.perplexity import window_spans


@pytest.mark.parametrize("n, window, stride", [(10, 4, 2), (10, 4, 4), (11, 5, 3), (3, 8, 4), (512, 128, 100),
                                               (7, 2, 1), (9, 9, 9)])
def test_windows_score_every_token_once_with_at_most_a_window_of_context(n, window, stride):
    spans = window_spans(n, window, stride)
    scored = [t for _, end, first in spans for t in range(first, end)]
    if stride < window or n <= window:  # every token but the first (no context), once, in order
        assert scored == list(range(1, n))
    else:  # disjoint chunks (as Hugging Face's recipe): a chunk's first token has no context in it
        assert scored == [t for t in range(n) if t % window]
    for begin, end, first in spans:
        assert end - begin <= window and begin < first <= end


def test_bad_windows_are_refused():
    for window, stride in ((1, 1), (4, 0), (4, 5)):
        with pytest.raises(QuantconfError, match="need window >= 2 and 1 <= stride <= window"):
            window_spans(10, window, stride)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from quantconf.models.loading import load_model

    root = tmp_path_factory.mktemp("divergence")
    return (load_model(str(build_tiny_model(root / "a", seed=0))), load_model(str(build_tiny_model(root / "b", seed=1))))


def _reference(full, quant, ids, window, stride):
    """Each window run on its own, every value from scipy in float64: entropy(p, q) is KL(p || q)."""
    import torch

    rows = []
    for begin, end, first in window_spans(len(ids), window, stride):
        x = torch.tensor([ids[begin:end]])
        with torch.no_grad():
            lf, lq = (m(input_ids=x).logits[0].double().numpy() for m in (full, quant))
        for t in range(first, end):
            p, q = softmax(lf[t - begin - 1]), softmax(lq[t - begin - 1])
            rows.append((entropy(p, q), entropy(q, p), p.argmax() == q.argmax(), p[ids[t]], q[ids[t]], entropy(p),
                         entropy(q), p.max()))
    return np.array(rows, dtype=float).T


@pytest.mark.parametrize("window, stride", [(64, 32), (48, 48), (10_000, 10_000)])
def test_token_values_equal_a_direct_scipy_computation(two_models, window, stride):
    full, quant = two_models
    ids = full.tokenizer(" ".join(CORPUS[:12]))["input_ids"][:200]
    td = token_divergence(full.model, quant.model, ids, window=window, stride=stride)
    assert len(td) == (len(ids) - len(window_spans(len(ids), window, stride)) if stride == window else len(ids) - 1)
    ref = _reference(full.model, quant.model, ids, window, stride)
    for name, expected in zip(("kld", "kld_reverse", "same_top", "p_full", "p_quant", "entropy_full", "entropy_quant",
                               "top_p_full"), ref):
        np.testing.assert_allclose(getattr(td, name).astype(float), expected, rtol=0, atol=1e-6, err_msg=name)
    assert (td.kld > 0).all() and (td.kld_reverse > 0).all()
    assert len(np.unique(td.window)) == len(window_spans(len(ids), window, stride))


def test_a_model_against_itself_has_zero_divergence_and_the_same_top_token(two_models):
    full, _ = two_models
    ids = full.tokenizer(" ".join(CORPUS[:8]))["input_ids"][:120]
    td = token_divergence(full.model, full.model, ids, window=50, stride=25)
    assert (td.kld == 0).all() and (td.kld_reverse == 0).all() and td.same_top.all()
    stats = divergence_statistics(td, n_boot=50)
    assert stats["kld_mean"]["estimate"] == 0 and stats["same_top"]["estimate"] == 100.0
    assert stats["ppl_ratio"]["estimate"] == 1.0 and stats["delta_p_rms"]["estimate"] == 0


def test_compare_logits_on_a_hand_example():
    full = np.log(np.array([[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]]))
    quant = np.log(np.array([[0.25, 0.5, 0.25], [0.6, 0.3, 0.1]]))
    out = compare_logits(full, quant, [0, 1])
    kl0 = 0.5 * np.log(2) + 0.25 * np.log(0.5)  # sum p log(p/q), the last terms 0
    np.testing.assert_allclose(out["kld"][0], kl0, atol=1e-15)
    np.testing.assert_allclose(out["kld_reverse"][0], 0.25 * np.log(0.5) + 0.5 * np.log(2), atol=1e-15)
    assert out["same_top"].tolist() == [False, True]
    np.testing.assert_allclose(out["p_full"], [0.5, 0.2]) and np.testing.assert_allclose(out["p_quant"], [0.25, 0.3])


def _td(kld, p_full, p_quant, window):
    n = len(kld)
    return TokenDivergence(kld=np.array(kld, float), kld_reverse=np.array(kld, float) * 2,
                           same_top=np.array([True] * (n - 1) + [False]), p_full=np.array(p_full, float),
                           p_quant=np.array(p_quant, float), entropy_full=np.zeros(n), entropy_quant=np.zeros(n),
                           window=np.array(window), top_p_full=np.array(p_full, float))


def test_statistics_against_hand_computation_and_intervals_over_windows():
    td = _td([0.1, 0.3, 0.2, 0.4], [0.5, 0.4, 0.8, 0.2], [0.4, 0.4, 0.6, 0.3], [0, 0, 1, 1])
    s = divergence_statistics(td, n_boot=400, seed=3)
    assert s["tokens"] == 4 and s["windows"] == 2
    assert s["kld_mean"]["estimate"] == pytest.approx(0.25) and s["kld_max"]["estimate"] == 0.4
    assert s["kld_median"]["estimate"] == pytest.approx(0.25)  # numpy's linear quantile of 0.1..0.4
    assert s["kld_reverse_mean"]["estimate"] == pytest.approx(0.5) and s["same_top"]["estimate"] == 75.0
    dp = np.array([-0.1, 0.0, -0.2, 0.1])
    assert s["delta_p_mean"]["estimate"] == pytest.approx(dp.mean())
    assert s["delta_p_rms"]["estimate"] == pytest.approx(np.sqrt((dp ** 2).mean()))
    ppl_full, ppl_quant = np.exp(-np.log([0.5, 0.4, 0.8, 0.2]).mean()), np.exp(-np.log([0.4, 0.4, 0.6, 0.3]).mean())
    assert s["ppl_ratio"]["estimate"] == pytest.approx(ppl_quant / ppl_full)
    # two windows: a resample is {w0, w0}, {w1, w1} (no spread: no t) or both (t = 0), so the studentized
    # interval of a mean is the point; the median's percentile interval lies within the windows' medians
    assert s["kld_mean"]["ci"] == pytest.approx([0.25, 0.25]) and s["same_top"]["ci"] == pytest.approx([75, 75])
    lo, hi = s["kld_median"]["ci"]
    assert 0.2 - 1e-12 <= lo <= hi <= 0.3 + 1e-12
    assert divergence_statistics(td, n_boot=400, seed=3) == s  # seeded
    one = divergence_statistics(_td([0.1, 0.3], [0.5, 0.4], [0.4, 0.4], [0, 0]), n_boot=400)
    assert one["kld_mean"]["ci"] is None  # one window: no interval from a bootstrap over windows


def test_window_mean_interval_equals_a_direct_bootstrap_t():
    """The studentized interval against a replicate-by-replicate computation from its definition."""
    rng = np.random.default_rng(5)
    counts = rng.integers(20, 60, 7).astype(float)
    sums = counts * rng.lognormal(-1, 1, 7)
    draws = rng.integers(0, 7, (300, 7))

    def mean_se(idx):
        s, c = sums[idx], counts[idx]
        m = s.sum() / c.sum()
        return m, np.sqrt(sum((si - m * ci) ** 2 for si, ci in zip(s, c)) * 7 / 6) / c.sum()

    m, se = mean_se(np.arange(7))
    t = [(mb - m) / sb for mb, sb in (mean_se(row) for row in draws) if sb > 0]
    expected = [m - np.quantile(t, 0.975) * se, m - np.quantile(t, 0.025) * se]
    assert window_mean_interval(sums, counts, draws) == pytest.approx(expected, rel=1e-12)


def _skewed_windows(rng, n_windows, tokens=64):
    """Tokens of one window share a drift level (lognormal, strongly skewed), as a text's windows differ."""
    level = rng.lognormal(-1.5, 0.8, n_windows)
    kld = (level[:, None] * rng.exponential(1.0, (n_windows, tokens))).ravel()
    p = np.full(kld.size, 0.5)
    same = rng.random(kld.size) < np.repeat(np.clip(1 - 2 * level, 0.05, 0.99), tokens)
    return TokenDivergence(kld=kld, kld_reverse=kld, same_top=same, p_full=p, p_quant=p, entropy_full=p,
                           entropy_quant=p, window=np.repeat(np.arange(n_windows), tokens), top_p_full=p)


@pytest.mark.parametrize("n_windows", [16, 32])
def test_window_bootstrap_covers_the_mean_kl_of_skewed_dependent_tokens(n_windows):
    """Coverage simulation: 300 texts of 16 or 32 windows whose tokens share a lognormal drift level; the
    true mean KL is exp(-1.5 + .8^2 / 2) and the true same-top share is the level's expectation. Measured
    (2,000 texts): studentized .91 (16 windows) and .93 (32) where the percentile interval over windows gave
    .86 and .89 and a token-by-token bootstrap (ignoring windows) .26 and .27."""
    rng = np.random.default_rng(n_windows)
    true_kld = np.exp(-1.5 + 0.8 ** 2 / 2)
    true_same = 100 * np.clip(1 - 2 * np.random.default_rng(0).lognormal(-1.5, 0.8, 2_000_000), 0.05, 0.99).mean()
    hits_kld = hits_same = 0
    for i in range(300):
        td = _skewed_windows(rng, n_windows)
        draws = np.random.default_rng(i).integers(0, n_windows, (400, n_windows))
        counts = np.full(n_windows, 64.0)
        lo, hi = window_mean_interval(td.kld.reshape(n_windows, -1).sum(1), counts, draws)
        hits_kld += lo <= true_kld <= hi
        lo, hi = window_mean_interval(100.0 * td.same_top.reshape(n_windows, -1).sum(1), counts, draws)
        hits_same += lo <= true_same <= hi
    print(f"coverage over {n_windows} windows: kld_mean {hits_kld / 300:.3f}, same_top {hits_same / 300:.3f}")
    assert 0.86 <= hits_kld / 300 <= 0.99 and 0.88 <= hits_same / 300 <= 0.99, (hits_kld, hits_same)
    # divergence_statistics gives these intervals
    td = _skewed_windows(rng, n_windows)
    stats = divergence_statistics(td, n_boot=400, seed=1)
    draws = np.random.default_rng(1).integers(0, n_windows, (400, n_windows))
    assert stats["kld_mean"]["ci"] == pytest.approx(
        window_mean_interval(td.kld.reshape(n_windows, -1).sum(1), np.full(n_windows, 64.0), draws), rel=1e-12)


def test_cli_json_is_the_api_and_a_short_text_is_one_window(two_models, tmp_path, capsys):
    import dataclasses
    import json

    import quantconf as qc
    from quantconf.cli import main

    full, quant = (m.info["spec"] for m in two_models)
    text = tmp_path / "t.txt"
    text.write_text(" ".join(CORPUS[:12]))
    api = qc.divergence(full, quant, f"file:{text}", window=64, stride=32, tokens=150, n_boot=50)
    assert main(["divergence", full, quant, "--text", f"file:{text}", "--window", "64", "--stride", "32",
                 "--tokens", "150", "--bootstrap", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(api))
    # --cache-dir: the full model's pass is kept; a second call reads it (same statistics to float rounding)
    assert main(["divergence", full, quant, "--text", f"file:{text}", "--window", "64", "--stride", "32",
                 "--tokens", "150", "--bootstrap", "50", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert len(list((tmp_path / "cache").glob("full-pass-*.safetensors"))) == 1
    assert cached["kld_mean"]["estimate"] == pytest.approx(api["kld_mean"]["estimate"], rel=1e-5)
    again = qc.divergence(full, quant, f"file:{text}", window=64, stride=32, tokens=150, n_boot=50,
                          cache_dir=tmp_path / "cache")
    assert json.loads(json.dumps(again)) == cached
    assert api["tokens"] == 149 and api["windows"] == 4 and 0 < api["kld_mean"]["estimate"]
    lo, hi = api["kld_mean"]["ci"]
    assert lo <= api["kld_mean"]["estimate"] <= hi
    short = qc.divergence(*two_models, f"file:{text}", window=64, tokens=40, n_boot=0)
    assert short["windows"] == 1 and short["tokens"] == 39 and short["kld_mean"]["ci"] is None
    assert main(["divergence", full, quant, "--text", f"file:{text}", "--tokens", "40", "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert "kld_mean" in printed and "by the full model's confidence" in printed
    assert sum(b["tokens"] for b in api["by_full_confidence"]) == api["tokens"]
    # another vocabulary: the same token ids would mean other tokens
    other = dataclasses.replace(two_models[1], tokenizer=type(two_models[1].tokenizer)(
        tokenizer_object=__import__("tokenizers").Tokenizer.from_str(two_models[1].tokenizer.backend_tokenizer.to_str()
                                                                        .replace('"<s>"', '"<S>"'))))
    with pytest.raises(QuantconfError, match="different vocabularies"):
        qc.divergence(two_models[0], other, f"file:{text}", tokens=40)
    with pytest.raises(QuantconfError, match="n_boot must be >= 0"):
        qc.divergence(*two_models, f"file:{text}", tokens=40, n_boot=-1)


def test_statistics_by_the_full_models_confidence_are_those_of_each_bins_tokens():
    from quantconf.corpus.divergence import divergence_by_confidence

    # top_p_full = p_full here: .5 and .4 fall in [.4, .6), .8 in [.8, 1.0] (closed), .2 in [.2, .4)
    td = _td([0.1, 0.3, 0.2, 0.4], [0.5, 0.4, 0.8, 0.2], [0.4, 0.4, 0.6, 0.3], [0, 0, 1, 1])
    bins = divergence_by_confidence(td, edges=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), n_boot=0)
    assert [(b["lo"], b["hi"], b["tokens"]) for b in bins] == [(0.2, 0.4, 1), (0.4, 0.6, 2), (0.8, 1.0, 1)]
    assert bins[1]["kld_mean"]["estimate"] == pytest.approx(0.2) and bins[2]["kld_max"]["estimate"] == 0.2
    assert bins[1] == {"lo": 0.4, "hi": 0.6, **divergence_statistics(td.subset([0, 1]), n_boot=0)}
    assert sum(b["tokens"] for b in divergence_by_confidence(td, n_boot=0)) == len(td)
    with pytest.raises(QuantconfError, match="confidence edges must increase"):
        divergence_by_confidence(td, edges=(0.5, 0.2))


def test_study_divergence_steps_equal_the_api_and_reach_the_report(tiny_model_dir, tmp_path, capsys):
    """`divergence: true` in a study: one step per quantized variant on ppl_text, keyed by what it reads; its
    numbers are qc.divergence's on the same checkpoint (estimates and intervals, same seed); they reach
    divergence.csv, summary.json and a report section; a changed token budget re-runs only those steps."""
    import json

    import pandas as pd

    import quantconf as qc
    from quantconf.cli import main
    from quantconf.study import load_study, plan

    config = {"models": [str(tiny_model_dir)], "tasks": ["arithmetic", "arithmetic_gen"], "limit": 10, "bootstrap": 50,
              "ppl_text": "pydoc", "ppl_tokens": 1100, "divergence": True, "divergence_questions": True,
              "max_gen_toks": 3, "variants": [{"method": "rtn", "bits": [2, 8], "group_size": 32}]}
    out = tmp_path / "study"
    qc.run_study(config, out, log=lambda m: None)
    table = pd.read_csv(out / "divergence.csv")
    assert list(table["variant"]) == ["rtn-w2g32", "rtn-w8g32"]
    assert table["kld_mean"].iloc[0] > table["kld_mean"].iloc[1] > 0
    assert (table["tokens"] == 1099).all() and (table["windows"] == 4).all()
    # the two variants' divergence steps ran the full model once: its pass is one cached file
    assert len(list((out / "steps" / "cache").glob("full-pass-*.safetensors"))) == 1
    steps = {s.label(): s for s in plan(load_study(data=config), out) if s.kind == "divergence"}
    for row in table.to_dict("records"):
        api = qc.divergence(str(tiny_model_dir), steps[row["variant"]].source.path, "pydoc", tokens=1100, n_boot=50,
                            seed=1234)
        for k in ("kld_mean", "kld_p99", "kld_max", "kld_reverse_mean", "same_top", "delta_p_rms", "ppl_ratio"):
            assert row[k] == pytest.approx(api[k]["estimate"], rel=1e-12), k
            assert [row[f"{k}_lo"], row[f"{k}_hi"]] == pytest.approx(api[k]["ci"], rel=1e-12), k
    summary = json.loads((out / "summary.json").read_text())
    assert [d["variant"] for d in summary["divergence"]] == list(table["variant"])
    # per question (divergence_questions): the study's numbers are qc.task_divergence's on the same checkpoint,
    # for the choice task and the generation task alike
    per_question = {s.label(): s for s in plan(load_study(data=config), out) if s.kind == "divergence_questions"}
    assert sorted((r["variant"], r["task"]) for r in summary["question_divergence"]) == [
        ("rtn-w2g32", "arithmetic"), ("rtn-w2g32", "arithmetic_gen"), ("rtn-w8g32", "arithmetic"),
        ("rtn-w8g32", "arithmetic_gen")]
    for r in summary["question_divergence"]:
        step = per_question[r["variant"]]
        api = qc.task_divergence(str(tiny_model_dir), step.source.path, r["task"], limit=10, n_boot=50, seed=1234)
        assert step.result()["left_out"] == {}
        assert (r["n"], r["flipped"]) == (api["n"], api["flipped"])
        assert r["kld_mean"] == pytest.approx(api["kld_mean"], rel=1e-9)
        assert r["auroc_kld_flip"] == pytest.approx(api["auroc_kld_flip"]["estimate"], nan_ok=True)
    page = (out / "report.html").read_text()
    assert "How far did each variant drift, token by token?" in page and "kld_mean CI" in page
    assert "quant) mean per token" in page and "each variant&#39;s mean token-level KL" in page  # the frontier too
    assert "Do questions whose answer tokens drifted flip?" in page
    # the token budget is part of the divergence (and ppl) steps' keys: only those re-run
    cfg = tmp_path / "study.yaml"
    cfg.write_text(json.dumps({**config, "ppl_tokens": 1000}))
    capsys.readouterr()
    assert main(["study", str(cfg), "--out", str(out), "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert planned.count("[todo] divergence ") == 2 and planned.count("[todo]") == 2 + 3  # + the three ppl steps
    with pytest.raises(QuantconfError, match="`divergence`.*set ppl_text"):
        load_study(data={**config, "ppl_text": None})


def test_question_divergence_equals_scipy_and_the_evaluation_pipeline(two_models, tmp_path, capsys):
    """Per question of a multiple-choice task: the answer tokens' KL equals scipy's on each choice run on its own;
    each model's answer and the JS distance equal what evaluate + per_sample_frame give (the packed scorer, an
    independent path); the CLI's --task --json is the API's dictionary."""
    import json

    import torch

    import quantconf as qc
    from quantconf.analysis.paired import per_sample_frame
    from quantconf.cli import main
    from quantconf.corpus.divergence import question_divergence
    from quantconf.evaluation import evaluate_task
    from quantconf.kinds.choice import task_requests
    from quantconf.tasks import load_task

    full, quant = two_models
    loaded = load_task("arithmetic", limit=12)
    df = question_divergence(full, quant, loaded)
    assert len(df) == 12 and df["flipped"].any() and (~df["flipped"]).any()
    requests = task_requests(full.tokenizer, loaded, False)
    per_choice = []  # scipy's KL per answer token, each choice of the first question run on its own
    for ctx, cont in requests[:len(loaded.questions[0].choices)]:
        x = torch.tensor([(ctx + cont)[:-1]])
        with torch.no_grad():
            a, b = (m.model(input_ids=x).logits[0, -len(cont):].double().numpy() for m in (full, quant))
        per_choice.append([entropy(softmax(u), softmax(v)) for u, v in zip(a, b)])
    klds = [v for choice in per_choice for v in choice]
    assert df["kld"].iloc[0] == pytest.approx(np.mean(klds), rel=1e-5)
    assert df["kld_gold"].iloc[0] == pytest.approx(np.mean(per_choice[loaded.questions[0].gold]), rel=1e-5)
    assert df["answer_tokens"].iloc[0] == len(klds)
    frames = [evaluate_task(m, loaded) for m in (full, quant)]
    pairs = per_sample_frame(*frames, "arithmetic")
    assert list(df["choice_full"]) == [int(np.argmax(ll)) for ll in frames[0]["loglik"]]
    assert list(df["choice_quant"]) == [int(np.argmax(ll)) for ll in frames[1]["loglik"]]
    np.testing.assert_allclose(df["js"], pairs["js"], atol=1e-5)
    assert list(df["correct_to_wrong"]) == list(pairs["full_correct"] & ~pairs["quant_correct"])
    r = qc.task_divergence(full, quant, "arithmetic", limit=12, n_boot=200)
    assert r["n"] == 12 and r["flipped"] == int(df["flipped"].sum())
    assert r["auroc_kld_flip"]["ci"][0] <= r["auroc_kld_flip"]["estimate"] <= r["auroc_kld_flip"]["ci"][1]
    capsys.readouterr()
    assert main(["divergence", str(full.info["spec"]), str(quant.info["spec"]), "--task", "arithmetic", "--limit", "12",
                 "--bootstrap", "200", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(
        {**r, "full": full.info["spec"], "quant": quant.info["spec"]}))


def test_a_generation_tasks_per_question_kl_is_that_of_the_full_models_answer_tokens(two_models):
    """Generation: both models answer greedily; the KL is over the full model's answer tokens after the prompt,
    each model run once on prompt + answer without padding (scipy), and a flip is the answer changing."""
    import torch

    from quantconf.analysis.generation import normalise_answer
    from quantconf.corpus.divergence import question_divergence, question_summary
    from quantconf.inference.generation import greedy_generate
    from quantconf.tasks import load_task

    full, quant = two_models
    loaded = load_task("arithmetic_gen", limit=6)
    df = question_divergence(full, quant, loaded)
    p0 = loaded.questions[0]
    gens = [greedy_generate(m, [p.context for p in loaded.questions], list(p0.until), p0.max_gen_toks)
            for m in (full, quant)]
    for p, row, gf, gq in zip(loaded.questions, df.itertuples(), *gens):
        assert row.flipped == (normalise_answer(gf.text) != normalise_answer(gq.text))
        assert row.answer_tokens == len(gf.token_ids)
        if not gf.token_ids:
            assert np.isnan(row.kld)
            continue
        ctx = full.tokenizer(p.context, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ctx + gf.token_ids])
        with torch.no_grad():
            lf, lq = (m.model(input_ids=x).logits[0].double().numpy() for m in (full, quant))
        rows = range(len(ctx) - 1, len(ctx) + len(gf.token_ids) - 1)
        expected = np.mean([entropy(softmax(lf[t]), softmax(lq[t])) for t in rows])
        assert row.kld == pytest.approx(expected, abs=1e-6)
    assert df["js"].isna().all() and (df["choice_full"] == -1).all()
    summary = question_summary(df, n_boot=50)
    assert np.isnan(summary["auroc_js_flip"]["estimate"]) and summary["n"] == 6


def test_flip_auroc_equals_a_pairwise_count_with_ties():
    from quantconf.corpus.divergence import flip_auroc

    rng = np.random.default_rng(3)
    score = rng.integers(0, 5, 60).astype(float)  # many ties
    flipped = rng.random(60) < 0.3
    pos, neg = score[flipped], score[~flipped]
    expected = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    r = flip_auroc(score, flipped, n_boot=300, seed=1)
    assert r["estimate"] == pytest.approx(expected, rel=1e-12) and r["flipped"] == int(flipped.sum()) and r["n"] == 60
    assert r["ci"][0] <= r["estimate"] <= r["ci"][1]
    none = flip_auroc(score, np.zeros(60, bool))
    assert np.isnan(none["estimate"]) and none["ci"] is None


def test_flip_auroc_delong_variance_equals_the_pairwise_definition_and_its_interval_covers():
    """DeLong's structural components by hand (pairwise), and the interval's coverage in 4,000 simulated studies
    like the measured PIQA run (200 questions, ~27 flips; true AUROC .7 and .5 from shifted normal scores): within
    Monte-Carlo error of 95% (the percentile bootstrap used before covered 92.3% and 93.7% here)."""
    from scipy.stats import norm

    from quantconf.corpus.divergence import flip_auroc

    rng = np.random.default_rng(0)
    score, flipped = rng.normal(size=50), rng.random(50) < 0.3
    pos, neg = score[flipped], score[~flipped]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    a = psi.mean()
    r = flip_auroc(score, flipped)
    half = norm.ppf(0.975) * np.sqrt(var) / (a * (1 - a))
    assert r["ci"] == pytest.approx([1 / (1 + np.exp(-(np.log(a / (1 - a)) + s * half))) for s in (-1, 1)], rel=1e-12)
    for auc in (0.7, 0.5):
        mu = np.sqrt(2) * norm.ppf(auc)  # AUROC of N(mu, 1) against N(0, 1)
        rng = np.random.default_rng(1)
        hits = 0
        for _ in range(4000):
            f = rng.random(200) < 0.135
            ci = flip_auroc(rng.normal(size=200) + mu * f, f)["ci"]
            hits += ci[0] <= auc <= ci[1]
        assert abs(hits / 4000 - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / 4000), (auc, hits / 4000)


def test_per_question_divergence_refuses_several_true_answers_before_any_model_runs(tmp_path):
    """A file task whose gold is a list (truthfulqa_mc2-style) is refused with one line naming the reason, and the
    study step leaves such a task out saying why (the kind's why_no_question_divergence, the one rule both use)."""
    from conftest import write_jsonl

    from quantconf.corpus.divergence import question_divergence
    from quantconf.kinds import kind_of_task
    from quantconf.tasks import load_task

    rows = [{"query": f"q{i}", "choices": ["a", "b", "c"], "gold": [0, 2]} for i in range(3)]
    loaded = load_task(f"file:{write_jsonl(tmp_path / 'multi.jsonl', rows)}")
    assert kind_of_task(loaded.task).why_no_question_divergence(loaded) == "several true answers"
    with pytest.raises(QuantconfError, match=r"several true answers; the per-question divergence reads"):
        question_divergence(None, None, loaded)  # refused before either model is touched


def test_the_full_models_pass_is_cached_once_and_read_by_the_next_variant(two_models, tmp_path):
    """Two variants of one model: the first divergence run writes the full model's pass (LM-head inputs of the
    scored rows), the second reads it and runs the full model zero times; both give the numbers of an
    uncached run to float rounding, and the cached ones bit for bit alike."""
    from quantconf.corpus.divergence import full_pass_file, token_divergence

    from quantconf.models.loading import load_model

    full, quant = (m.model for m in two_models)
    quant2 = load_model(str(build_tiny_model(tmp_path / "c", seed=2))).model
    ids = two_models[0].tokenizer(" ".join(CORPUS[:20]))["input_ids"][:300]
    info = {"fingerprint": "fp", "dtype": "float32", "device": "cpu", "transformers": "5"}
    cache = full_pass_file(tmp_path, info, ids, 128, 64)
    plain = token_divergence(full, quant, ids, window=128, stride=64)
    first = token_divergence(full, quant, ids, window=128, stride=64, full_cache=cache)
    assert cache.is_file()
    calls = []
    handle = full.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    try:
        again = token_divergence(full, quant, ids, window=128, stride=64, full_cache=cache)
        other = token_divergence(full, quant2, ids, window=128, stride=64, full_cache=cache)
    finally:
        handle.remove()
    assert calls == []  # the second (and third) run did one model pass per window: the quantized one
    for f in ("kld", "kld_reverse", "p_full", "entropy_full", "top_p_full"):
        np.testing.assert_array_equal(getattr(first, f), getattr(again, f))
        np.testing.assert_allclose(getattr(first, f), getattr(plain, f), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first.p_full, other.p_full)
    assert not np.array_equal(first.kld, other.kld)
    # another window, text or model is another file; a torn file is recomputed, not trusted
    assert full_pass_file(tmp_path, info, ids, 64, 64) != cache
    assert full_pass_file(tmp_path, info, ids[:-1], 128, 64) != cache
    for k, v in (("fingerprint", "fp2"), ("dtype", "bfloat16"), ("device", "cuda"), ("transformers", "6")):
        assert full_pass_file(tmp_path, {**info, k: v}, ids, 128, 64) != cache, k
    cache.write_bytes(cache.read_bytes()[:100])
    torn = token_divergence(full, quant, ids, window=128, stride=64, full_cache=cache)
    np.testing.assert_array_equal(torn.kld, first.kld)
