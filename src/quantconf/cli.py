"""Command line: `quantconf <command> ...` (see `quantconf --help`).

A thin layer over the Python API (`quantconf.api`): parse flags, call, print, exit codes.
Library errors name parameters (`limit must be ...`); `main` prints them as flags (`--limit ...`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import quantconf as qc
from quantconf.metric_registry import markdown_table, metric_names
from quantconf.analysis.metrics import CI_NOTE, COMPAT_MODES, NORMALIZATIONS
from quantconf.errors import QuantconfError
from quantconf.evaluation import SCORERS
from quantconf.kinds import kind_of, kind_of_result
from quantconf.io import LIBRARY_LOG_NAME, library_output_log
from quantconf.models.files import read_quantize_record
from quantconf.quantizers.base import QuantConfig
from quantconf.study import demo_study


# parameters of the API whose flag is not `--<param-with-dashes>`
FLAG_FOR_PARAM = {"n_boot": "--bootstrap", "n_bins": "--bins", "n_conf_bins": "--conf-bins", "n_folds": "--folds"}
METRICS_TABLE = metric_names("cli")[:12]  # the registry's (metric_registry.py), in two rows
METRICS_TABLE_2 = metric_names("cli")[12:]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _shard(value: str) -> tuple[int, int]:
    i, _, n = value.partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 2/4, got {value!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"shard I/N needs 1 <= I <= N, got {value!r}")
    return i - 1, n


def _nonnegative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {n}")
    return n


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickle (.bin) weights")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model repo's own code")


def add_correctness_arg(p) -> None:
    p.add_argument("--correctness", default=None, metavar="METRIC",
                   help="generation tasks: the 0/1 column that counts as correct (default: the task's primary "
                        "metric: exact_match, bleu_acc for truthfulqa_gen; e.g. rouge1_acc, judge_acc)")


def cmd_eval(args) -> int:
    preds = qc.evaluate(
        args.model, _csv(args.tasks), out=Path(args.out), data_dir=args.data_dir, limit=args.limit,
        batch_size=args.batch_size, dtype=args.dtype, device=args.device, threads=args.threads,
        seed=args.seed, overwrite=args.overwrite, allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code, progress=not args.quiet, scorer=args.scorer,
        log=lambda m: print(m, file=sys.stderr), num_fewshot=args.num_fewshot, fewshot_seed=args.fewshot_seed,
        include_path=args.include_path, shard=args.shard, max_gen_toks=args.max_gen_toks,
        samples=args.samples, temperature=args.temperature, top_p=args.top_p, sample_seed=args.sample_seed,
        equivalence=args.equivalence,
    )
    if args.shard and not preds:
        print(f"shard {args.shard[0] + 1}/{args.shard[1]} written; the last shard to finish merges them into {args.out}")
        return 0
    print(f"{'task':<18} {'n':>6} {'acc':>8} {'acc_norm':>9}")
    for task, df in preds.items():
        kind = kind_of(df)
        acc = kind.accuracy(df)
        print(f"{task:<18} {len(df):>6} {acc['acc']:>8.4f} {kind.acc_norm_cell(df, acc):>9}")
    print(f"predictions: {args.out}")
    return 0


def cmd_metrics(args) -> int:
    results = qc.metrics(Path(args.pred_dir), n_bins=args.bins, n_boot=args.bootstrap, normalize=args.normalize,
                         seed=args.seed, compat=args.compat, correctness=args.correctness)
    if Path(args.pred_dir).is_file():  # one <task>.parquet: shown under its task's name
        results = {str(qc.read_predictions(Path(args.pred_dir))["task"].iloc[0]): results}
    if args.json:
        print(json.dumps(results, indent=2, default=float))
        return 0
    every = dict(results)
    own = {t: text for t, m in results.items() if (text := kind_of_result(m).format_metrics(t, m, args.bootstrap))}
    results = {t: m for t, m in results.items() if t not in own}  # the rest share one table
    for text in own.values():
        print(text)
    for cols in ((METRICS_TABLE, METRICS_TABLE_2) if results else ()):
        print(f"{'task':<16} {'n':>6} " + " ".join(f"{c[:9]:>9}" for c in cols))
        for task, m in results.items():
            vals = " ".join(f"{m.get(c, float('nan')):>9.4f}" for c in cols)
            print(f"{task:<16} {m['n']:>6} {vals}")
            if "ci" in m and args.bootstrap:
                ci = " ".join(f"{'[%.3f,%.3f]' % tuple(m['ci'][c]) if c in m['ci'] else '':>9}" for c in cols)
                print(f"{'  95% CI':<16} {'':>6} {ci}")
            if "note" in m and cols is METRICS_TABLE:
                print(f"{'':<16} note: {m['note']} (mc2 = {m['mc2']:.4f})")
        print()
    if results and any("ci_note" in m for m in results.values()) and args.bootstrap:
        print(f"CIs: {CI_NOTE}\n")
    if args.compat == "helm":
        keys = metric_names("helm")
        print("helm (HELM's calibration battery, as the uncertainty-calibration package computes it)")
        print(f"{'task':<16} {'n':>6} " + " ".join(f"{k[:11]:>11}" for k in keys))
        for task, m in every.items():
            if "helm" in m:
                print(f"{task:<16} {m['helm']['n']:>6} " + " ".join(f"{m['helm'][k]:>11.4f}" for k in keys))
    elif args.compat:
        keys = ["conf", "conf_true", "c_pos", "c_neg", "ace", "mce", "sce", "entropy"]
        print(f"{args.compat} (the paper's own definitions; see README)")
        print(f"{'task':<16} {'n used':>6} " + " ".join(f"{c:>9}" for c in keys))
        for task, m in results.items():
            if args.compat in m:
                c = m[args.compat]
                print(f"{task:<16} {c['n_used']:>6} " + " ".join(f"{c[k]:>9.4f}" for k in keys))
    return 0


def cmd_recalibrate(args) -> int:
    """The first dir's temperature scaling; every further dir's with its gap to the first (`qc.recalibrate(...,
    full=FIRST)`): --json prints exactly what the API returns."""
    options = dict(n_folds=args.folds, n_boot=args.bootstrap, seed=args.seed, n_bins=args.bins)
    first, *others = [str(d) for d in args.pred_dirs]
    full = qc.read_predictions(Path(first))  # read once: the first dir's fit and every gap
    results = {first: qc.recalibrate(full, **options)}
    for d in others:
        quant = qc.read_predictions(Path(d))
        scaled = lambda r: {t for t, v in r.items() if "skipped" not in v}  # noqa: E731
        results[d] = qc.recalibrate(quant, full=full, **options)
        if isinstance(full, dict) and not scaled(results[first]) & scaled(results[d]):
            raise QuantconfError(f"{first} and {d} share no temperature-scaled task, so there is no gap to "
                                 "judge; recalibrate predictions of the same multiple-choice --tasks")
    if args.json:
        print(json.dumps(results, indent=2, default=float))
        return 0
    print(f"{'predictions':<28} {'task':<14} {'T':>6} {'T 95% CI':>14}  "
          + "  ".join(f"{m + ' before>after':>21}" for m in ("ece", "smece", "nll")))
    for d, by_task in results.items():
        for task, r in (by_task.items() if isinstance(full, dict) else [("", by_task)]):
            if "skipped" in r:
                print(f"{d[-28:]:<28} {task:<14} skipped: {r['skipped']}")
                continue
            ci = "[%.2f, %.2f]" % tuple(r["temperature_ci"])
            cells = "  ".join(f"{r['before'][m]:>10.4f}>{r['after'][m]:<10.4f}" for m in ("ece", "smece", "nll"))
            print(f"{d[-28:]:<28} {task:<14} {r['temperature']:>6.2f} {ci:>14}  {cells}")
    for d in others:
        for task, r in (results[d].items() if isinstance(full, dict) else [("", results[d])]):
            if "verdict" in r:
                print(f"{d}: {r['verdict']}")
    return 0


def cmd_quantize(args) -> int:
    options = {f: getattr(args, f) for f in QuantConfig.__dataclass_fields__ if f != "method" and hasattr(args, f)}
    out = qc.quantize(args.model, Path(args.out), method=args.method, overwrite=args.overwrite,
                      threads=args.threads, data_dir=args.data_dir, log=print, **options)
    record = read_quantize_record(out)
    mb = lambda b: f"{b / 2**20:.1f} MiB" if b else "?"  # noqa: E731
    bits = f", {record['bits_per_weight']:.2f} bits/weight" if record.get("bits_per_weight") else ""
    print(f"{record['label']}: {record['seconds']}s, size {mb(record['size_before_bytes'])} -> "
          f"{mb(record['size_after_bytes'])} stored, {mb(record.get('deployed_bytes'))} deployed{bits}, "
          f"calibration {record['calibration']['name']} {record['calibration'].get('sha256', '')[:12]}")
    return 0


def add_quant_args(p: argparse.ArgumentParser) -> None:
    """Method options. Unset ones are left out (SUPPRESS): each method has its own defaults, and
    an option a method does not take is refused only when given (`quantconf methods` lists them)."""
    opt = {"default": argparse.SUPPRESS}
    p.add_argument("--method", default="gptq", help="gptq | rtn | awq | w8a8 | fp8 | bnb | gguf | hqq "
                   "(quantconf methods: what each takes)")
    p.add_argument("--bits", type=int, help="2, 3, 4 or 8 (per method; default 4, w8a8/fp8 8)", **opt)
    p.add_argument("--group-size", type=int, help="-1 (per channel), 32, 64 or 128 (default 128; awq/hqq 64)", **opt)
    p.add_argument("--sym", dest="sym", action="store_true", help="symmetric grid (gptq/rtn default)", **opt)
    p.add_argument("--asym", dest="sym", action="store_false", help="asymmetric, with zero points (awq default)",
                   **opt)
    p.add_argument("--desc-act", action="store_true", help="GPTQ act-order (off in the seed config)", **opt)
    p.add_argument("--damp", type=float, help="GPTQ dampening, fraction of mean diag(H) (default 0.01)", **opt)
    p.add_argument("--calib", help="c4[:PATH] | wikitext2[:PATH] | pydoc | punct | random | task:<name> | "
                   "file:PATH (default c4; methods that use data)", **opt)
    p.add_argument("--n-samples", type=_positive_int, help="calibration windows (default 128)", **opt)
    p.add_argument("--seq-len", type=_positive_int, help="tokens per window (default 512)", **opt)
    p.add_argument("--seed", type=int, help="draws the calibration windows (default 0)", **opt)
    p.add_argument("--scheme", help="bnb: nf4 | fp4 | int8; gguf: Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | k-quants", **opt)
    p.add_argument("--activations", choices=["static", "dynamic"],
                   help="w8a8: per-tensor scales from the calibration set (default) or per-token at inference",
                   **opt)
    p.add_argument("--smoothquant-alpha", type=float, help="w8a8: SmoothQuant strength, e.g. 0.5 or 0.8 (0 = off)",
                   **opt)
    p.add_argument("--double-quant", action="store_true", help="bnb nf4/fp4: quantize the block scales too", **opt)
    p.add_argument("--outlier-threshold", type=float, help="bnb int8: LLM.int8 outlier threshold (default 6.0)",
                   **opt)


def cmd_compare(args) -> int:
    res = qc.compare(Path(args.full_dir), Path(args.quant_dir), n_bins=args.bins, n_conf_bins=args.conf_bins,
                     n_boot=args.bootstrap, correctness=args.correctness, compat=args.compat)
    if args.json:
        print(json.dumps(res, indent=2, default=float))
        return 0
    for task, c in res.items():
        print(kind_of_result(c).format_comparison(task, c))
        for name in (metric_names("helm") if "helm" in c else ()):
            ci = c["helm"].get("ci", {}).get(name)
            print(f"  helm {name:<22} full {c['helm']['full'][name]:.4f}  quant {c['helm']['quant'][name]:.4f}  "
                  f"delta {c['helm']['delta'][name]:+.4f}" + (f"  95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
    print("CIs: paired bootstrap over the questions of this one quantized run; the quantizer's own run-to-run "
          "noise is not in them (quantize again with other seeds and use `quantconf noise-floor`)")
    return 0


def cmd_noise_floor(args) -> int:
    res = qc.noise_floor(Path(args.full_dir), [Path(d) for d in args.replicate_dirs], n_boot=args.bootstrap,
                         seed=args.seed, alpha=args.alpha, n_bins=args.bins)
    # Holm-adjusted by qc.noise_floor over these tasks: the family a study uses for one configuration
    if args.json:
        print(json.dumps(res, indent=2, default=float))
        return 0
    for task, f in res.items():
        print(f"== {task} (n={f['n']}, {f['replicates']} replicates)")
        print(f"  {'':<19} {'estimate':>9}  {'95% CI per comparison':<22}  {'Holm-adjusted CI':<22}  p (Holm)")
        for key in ("delta_acc", "delta_ece", "delta_l2_debiased", "delta_nll", "delta_smece", "systematic_share"):
            e = f.get(key)
            if not e:
                continue
            p = "undefined" if e.get("p_holm", e["p"]) is None else f"{e.get('p_holm', e['p']):.3g}"
            adj = e.get("ci_adjusted", e["ci"])
            print(f"  {key:<19} {e['estimate']:+9.4f}  [{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}]      "
                  f"[{adj[0]:+.4f}, {adj[1]:+.4f}]      {p}")
        print(f"  {f['verdict']}")
    return 0


def cmd_study(args) -> int:
    report = qc.run_study(Path(args.config), Path(args.out), dry_run=args.dry_run, executor=args.executor,
                          ray_address=args.ray_address)
    if report:
        print(f"report: {report}")
    return 0


def cmd_demo(args) -> int:
    report = qc.run_study(demo_study(args.data_dir), Path(args.out), dry_run=args.dry_run)
    if report:
        print(f"\nOpen the report: {report.resolve()}")
    return 0


def cmd_report(args) -> int:
    print(f"report: {qc.report(args.study_dir)}")
    return 0


def cmd_outliers(args) -> int:
    summary = qc.outliers(args.model, args.calib, args.out, n_samples=args.n_samples, seq_len=args.seq_len,
                          seed=args.seed, threshold=args.threshold, top_k=args.top_k, threads=args.threads,
                          data_dir=args.data_dir, overwrite=args.overwrite)
    for spec, s in summary["per_set"].items():
        print(f"{spec:<16} max|x| {s['max_abs']:9.2f}  mean kurtosis {s['mean_kurtosis']:9.2f}  "
              f"outlier channels {s['outlier_channels']}")
    for o in summary["overlap"]:
        print(f"top-channel Jaccard {o['set_a']} vs {o['set_b']}: {o['mean_jaccard_top_channels']:.3f}")
    print(f"tables and plots: {args.out}")
    return 0


def cmd_ppl(args) -> int:
    record = qc.perplexity(args.model, args.text, window=args.window, stride=args.stride, max_tokens=args.max_tokens,
                           seed=args.seed, data_dir=args.data_dir, dtype=args.dtype, device=args.device,
                           threads=args.threads, allow_pickle=args.allow_pickle,
                           trust_remote_code=args.trust_remote_code)
    record["model"] = args.model
    print(json.dumps(record))
    return 0


def cmd_divergence(args) -> int:
    if args.task:
        return _task_divergence(args)
    record = qc.divergence(args.full, args.quant, args.text, window=args.window, stride=args.stride,
                           tokens=args.tokens, n_boot=args.bootstrap, seed=args.seed or 0, data_dir=args.data_dir,
                           dtype=args.dtype, device=args.device, threads=args.threads,
                           allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code,
                           cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"{record['quant']} vs {record['full']} on {record['text']} ({record['source']}): {record['tokens']} tokens "
          f"scored in {record['windows']} windows of {record['window']} (stride {record['stride']}); 95% intervals "
          "from a bootstrap over windows")
    for name, value in record.items():
        if isinstance(value, dict) and "estimate" in value:
            ci = value["ci"]
            print(f"  {name:17s} {value['estimate']:.6g}" + (f"  [{ci[0]:.6g}, {ci[1]:.6g}]" if ci else ""))
    print("by the full model's confidence on the token (its top token's probability):")
    for b in record["by_full_confidence"]:
        print(f"  [{b['lo']:.1f}, {b['hi']:.1f}] {b['tokens']:6d} tokens: kld_mean {b['kld_mean']['estimate']:.4g}, "
              f"same_top {b['same_top']['estimate']:.1f}%, delta_p_mean {b['delta_p_mean']['estimate']:.4g}")
    return 0


def _task_divergence(args) -> int:
    r = qc.task_divergence(args.full, args.quant, args.task, limit=args.limit, n_boot=args.bootstrap,
                           seed=1234 if args.seed is None else args.seed, data_dir=args.data_dir, dtype=args.dtype,
                           device=args.device, threads=args.threads, allow_pickle=args.allow_pickle,
                           trust_remote_code=args.trust_remote_code)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['quant']} vs {r['full']} on {r['task']}: {r['n']} questions, {r['flipped']} answers flipped "
          f"({r['correct_to_wrong']} correct -> wrong)")
    print(f"  answer tokens' KL(full||quant) mean {r['kld_mean']:.4g} nats; choice-level JS mean {r['js_mean']:.4g}; "
          f"Spearman(KL, JS) {r['spearman_kld_js']:.3f}")
    for name in ("auroc_kld_flip", "auroc_js_flip"):
        a = r[name]
        ci = f" [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]" if a["ci"] else ""
        print(f"  {name:15s} {a['estimate']:.3f}{ci}  (P(a flipped question scores higher than an unflipped one))")
    return 0


def cmd_import_lm_eval(args) -> int:
    for task, n in qc.import_lm_eval(args.paths, args.out, data_dir=args.data_dir, overwrite=args.overwrite).items():
        print(f"{task}: {n} questions")
    print(f"predictions: {args.out}")
    return 0


def cmd_import_generations(args) -> int:
    qc.import_generations(args.path, args.out, overwrite=args.overwrite, log=lambda m: print(m, file=sys.stderr))
    print(f"predictions: {args.out}")
    return 0


def cmd_methods(args) -> int:
    rows = qc.methods()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'method':<7} {'calibration':<12} {'bits':<12} {'groups / schemes':<22} {'library':<22} "
          f"{'devices':<9} description")
    for r in rows:
        lib = f"{r['library']} {r['library_version'] or '(not installed)'}"
        shapes = ",".join(r["schemes"]) if r["schemes"] else ",".join(map(str, r["group_sizes"])) or "-"
        print(f"{r['name']:<7} {'needed' if r['needs_calibration'] else 'none':<12} "
              f"{','.join(map(str, r['bits'])):<12} {shapes[:22]:<22} {lib:<22} {','.join(r['devices']):<9} "
              f"{r['description']}")
        print(f"{'':<7} options: {', '.join('--' + o.replace('_', '-') for o in r['options']) or 'none'}")
    return 0


def cmd_plan(args) -> int:
    pilot = args.pilot[0] if len(args.pilot) == 1 else tuple(args.pilot)
    res = qc.plan(pilot, delta=args.delta, delta_ece=args.delta_ece, alpha=args.alpha, power=args.power,
                  max_replicates=args.max_replicates)
    if args.json:
        print(json.dumps(res, indent=2, default=float))
        return 0
    print(f"questions needed to detect each Δacc at {res['power']:.0%} power (two-sided level {res['alpha']}), "
          "from the pilot's discordance and replicate variance")
    for d in res["designs"]:
        var = ("replicate variance not measured (one replicate): taken as 0" if d["replicate_var"] is None
               else f"replicate variance {d['replicate_var']:.2e}")
        print(f"== {d['model']} / {d['variant']} / {d['task']}: pilot n={d['n_pilot']}, discordance "
              f"{d['discordance']:.3f}, {var}; the pilot could detect Δacc >= {d['mde_acc_pilot'] * 100:.1f} points")
        for delta, designs in d["acc"].items():
            feasible = [x for x in designs if x["questions"] is not None]
            first = (f"{feasible[0]['questions']} questions with {feasible[0]['replicates']} replicate(s)" if feasible
                     else f"not reachable with {len(designs)} replicates")
            more = ", ".join(f"R={x['replicates']}: {x['questions']}" for x in feasible[1:3]
                             if d["replicate_var"] is not None)  # unmeasured: replicates change nothing here
            print(f"  Δacc {float(delta) * 100:.1f} points: {first}" + (f" (or {more})" if more else ""))
        for delta, m in d.get("ece", {}).items():
            print(f"  ΔECE {float(delta):.3f}: {m} questions" if m else f"  ΔECE {float(delta):.3f}: no interval")
    return 0


def cmd_measures(args) -> int:
    if args.markdown:
        print(markdown_table(), end="")
        return 0
    reg = qc.measures()
    if args.json:
        print(json.dumps(reg, indent=2))
        return 0
    print(f"{'metric':<18} {'better':<7} {'range':<11} {'kinds':<26} used in")
    for m in reg["metrics"]:
        uses = [f"{kind}:{u}" if len(m["uses"]) > 1 else u for kind, us in m["uses"].items() for u in us]
        print(f"{m['name']:<18} {m['better'] or '-':<7} {m['range']:<11} {','.join(m['kinds']):<26} "
              f"{','.join(uses) or 'metrics output'}")
    print(f"\n{'confidence measure':<18} {'probability':<12} what")
    for c in reg["confidence_measures"]:
        print(f"{c['name']:<18} {'yes' if c['probability'] else 'no':<12} {c['what']}")
    return 0


def cmd_tasks(args) -> int:
    if args.lm_eval is not None:
        found = qc.tasks(args.lm_eval, include_path=args.include_path)
        for t in found:
            print(f"{t['name']:<40} {t['kind']}")
        print(f"{len(found)} lm-eval names match {args.lm_eval!r} (multiple_choice and generate_until tasks are "
              "evaluated)", file=sys.stderr)
        return 0
    for t in qc.tasks():
        print(f"{t['name']:<18} {t['description']}  ({t['source']})")
    print("\nAny lm-evaluation-harness multiple_choice or generate_until task, group or tag also works by name "
          "(winogrande, mmlu, truthfulqa_gen, gsm8k, ...; lm_eval:NAME for lm-eval's definition of a built-in): "
          "list them with "
          "`quantconf tasks --lm-eval PATTERN`.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantconf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="score multiple-choice tasks (per-choice log-likelihoods) and generation "
                                    "tasks (greedy answers, graded, with their confidence)")
    p.add_argument("model", help="`default`, a hub id[@revision], a local HF dir, or a .gguf file")
    p.add_argument("--tasks", required=True,
                   help="comma-separated names: built-ins, lm-eval tasks/groups (lm_eval:NAME forces lm-eval's), "
                        "or file:PATH.jsonl")
    p.add_argument("--out", required=True, help="output directory for <task>.parquet + manifest.json")
    p.add_argument("--data-dir", default=None,
                   help="offline data: DIR/<dataset>/<split>.jsonl for built-ins, "
                        "DIR/<dataset_path>/<dataset_name>/<split>.jsonl for lm-eval tasks (or $QUANTCONF_DATA_DIR)")
    p.add_argument("--num-fewshot", type=_nonnegative_int, default=None,
                   help="few-shot examples per question, drawn by lm-eval's sampler (default: the task's own, 0 "
                        "for built-ins)")
    p.add_argument("--fewshot-seed", type=int, default=1234, help="seed of lm-eval's few-shot sampler")
    p.add_argument("--include-path", default=None, help="a folder of your own lm-eval task YAML files")
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="score only shard I of N (1-based) of each task; the last shard to finish merges them")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N questions per task")
    p.add_argument("--batch-size", type=_positive_int, default=16,
                   help="packed: rows of up to 256 tokens per forward pass; naive: sequences per pass")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--overwrite", action="store_true", help="recompute even finished tasks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--scorer", default="packed", choices=list(SCORERS),
                   help="packed: each question once, as a prefix tree of its context and choices (default); "
                        "naive: one sequence per choice")
    p.add_argument("--max-gen-toks", type=_positive_int, default=None,
                   help="generation tasks: at most this many tokens per answer (default: each task's own; lm-eval: 256)")
    p.add_argument("--samples", type=_positive_int, default=None, metavar="K",
                   help="generation tasks: also K sampled answers per prompt (K >= 2; one prefill shared by the K) "
                        "for the sampling-based measures: semantic entropy, EigV, Deg, Ecc, ... (quantconf measures)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --samples)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --samples)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the samples' random streams (with --samples)")
    p.add_argument("--equivalence", default="auto", metavar="RULE",
                   help="which samples are the same answer: answer (the task's normalised answer), rouge[:T] "
                        "(ROUGE-L >= T, default 0.5), nli:MODEL (bidirectional entailment), auto (default: answer "
                        "where the task has one, else rouge)")
    add_model_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("metrics", help="calibration metrics with bootstrap CIs for a predictions dir")
    p.add_argument("pred_dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bins", type=_positive_int, default=15)
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for 95%% CIs (0: none)")
    p.add_argument("--normalize", default="none", choices=list(NORMALIZATIONS),
                   help="divide log-likelihoods by this length before the softmax (chars = lm-eval acc_norm)")
    p.add_argument("--compat", default=None, choices=list(COMPAT_MODES),
                   help="also report the seed paper's (non-standard) definitions")
    p.add_argument("--seed", type=int, default=0)
    add_correctness_arg(p)
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("recalibrate", help="temperature scaling per task: fitted T, calibration before/after")
    p.add_argument("pred_dirs", nargs="+", help="prediction dirs; with several, the first is the full model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--folds", type=_positive_int, default=5, help="cross-fitting folds")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the CI of T (0: none)")
    p.add_argument("--bins", type=_positive_int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_recalibrate)

    p = sub.add_parser("quantize", help="quantize a model (GPTQ, RTN, AWQ, W8A8, FP8, bitsandbytes, GGUF, HQQ)")
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--data-dir", default=None, help="for --calib task:<name> offline")
    add_quant_args(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("compare", help="per-sample comparison of full vs quantized predictions")
    p.add_argument("full_dir")
    p.add_argument("quant_dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bins", type=_positive_int, default=15)
    p.add_argument("--conf-bins", type=_positive_int, default=5, help="equal-mass bins of full-model confidence")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--compat", default=None, choices=["helm"],
                   help="helm: also HELM's calibration battery of both models and its deltas with paired CIs")
    add_correctness_arg(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("noise-floor", help="full vs replicate quantizations: effects over questions and "
                                          "calibration draws, systematic share, Holm across tasks")
    p.add_argument("full_dir")
    p.add_argument("replicate_dirs", nargs="+", help="two or more predictions dirs of one configuration, other seeds")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bins", type=_positive_int, default=15)
    p.add_argument("--bootstrap", type=_positive_int, default=1000)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_noise_floor)

    p = sub.add_parser("study", help="run a study from a YAML config (resumable), write the report")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="study directory")
    p.add_argument("--dry-run", action="store_true", help="list the steps and whether they are done")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="local: steps one after another here; ray: every step a Ray task (default: the config's)")
    p.add_argument("--ray-address", default=None,
                   help="a Ray cluster to join (auto, HOST:PORT); default: start Ray on this machine")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("demo", help="the built-in study on the embedded default model")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="re-write the HTML report of a study directory")
    p.add_argument("study_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("outliers", help="per-layer activation-outlier statistics over calibration sets")
    p.add_argument("model")
    p.add_argument("--calib", default="pydoc,random,punct", help="comma-separated calibration sets")
    p.add_argument("--out", default="runs/outliers")
    p.add_argument("--n-samples", type=_positive_int, default=16)
    p.add_argument("--seq-len", type=_positive_int, default=512)
    p.add_argument("--threshold", type=float, default=6.0, help="outlier channel: largest absolute activation above this")
    p.add_argument("--top-k", type=_positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace the outliers.json (and its files) in --out")
    p.set_defaults(func=cmd_outliers)

    p = sub.add_parser("ppl", help="held-out sliding-window perplexity on a text set")
    p.add_argument("model")
    p.add_argument("--text", default="pydoc", help="any calibration-set name (pydoc, file:PATH, c4:PATH, ...)")
    p.add_argument("--window", type=_positive_int, default=512)
    p.add_argument("--stride", type=_positive_int, default=256)
    p.add_argument("--max-tokens", type=_positive_int, default=16 * 512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    add_model_args(p)
    p.set_defaults(func=cmd_ppl)

    p = sub.add_parser("divergence", help="token-level divergence of a quantized model from the full one on text "
                                          "(KL over the vocabulary, same top token, delta p, perplexity ratio)")
    p.add_argument("full")
    p.add_argument("quant")
    p.add_argument("--text", default="pydoc", help="any calibration-set name (pydoc, file:PATH, wikitext2:PATH, ...)")
    p.add_argument("--task", default=None, help="instead of a text: per question of this multiple-choice (or "
                                                  "generation) task, the answer tokens' KL beside the choice-level JS "
                                                  "and the flips")
    p.add_argument("--limit", type=_positive_int, default=None, help="with --task: questions (default all)")
    p.add_argument("--window", type=_positive_int, default=512)
    p.add_argument("--stride", type=_positive_int, default=None, help="default: half the window")
    p.add_argument("--tokens", type=_positive_int, default=16 * 512, help="tokens of the text used (the first ones)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="resamples of whole windows (with --task: of questions) for the intervals")
    p.add_argument("--seed", type=int, default=None, help="text draw and bootstrap seed (default 0; with --task 1234)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="keep the full model's pass over the text in DIR: the next variant of the same model reads it "
                        "and runs only its own model (same numbers)")
    p.add_argument("--json", action="store_true")
    add_model_args(p)
    p.set_defaults(func=cmd_divergence)

    p = sub.add_parser("import-lm-eval", help="convert lm-eval --log_samples / --write_out files to predictions")
    p.add_argument("paths", nargs="+", help="files or directories")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default=None, help="task data, to match old write_out 'truth' texts to choices")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out dir (the imported tasks are replaced, the others kept)")
    p.set_defaults(func=cmd_import_lm_eval)

    p = sub.add_parser("import-generations", help="convert the seed's TruthfulQA prediction CSVs or lm-eval "
                                                  "generate_until --log_samples files to generation predictions")
    p.add_argument("path", help="a seed answ_<model>_pred.csv or an lm-eval samples_<task>_<date>.jsonl")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out dir")
    p.set_defaults(func=cmd_import_generations)

    p = sub.add_parser("methods", help="the quantization methods: calibration, bits, group sizes, library, devices")
    p.add_argument("--json", action="store_true", help="a list of objects (name, needs_calibration, ...)")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("plan", help="how many questions (and replicates) a study needs to detect a Δacc or ΔECE")
    p.add_argument("pilot", nargs="+", help="a finished study's output dir, or FULL_DIR QUANT_DIR predictions")
    p.add_argument("--delta", type=float, nargs="+", default=[0.01, 0.02], help="Δacc to detect (0.01 = 1 point)")
    p.add_argument("--delta-ece", type=float, default=None, help="also the questions to detect this ΔECE")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--max-replicates", type=_positive_int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("measures", help="the registered metrics and confidence measures: direction, range, where used")
    p.add_argument("--json", action="store_true", help="{metrics: [...], confidence_measures: [...]}")
    p.add_argument("--markdown", action="store_true", help="the tables of docs/metrics.md")
    p.set_defaults(func=cmd_measures)

    p = sub.add_parser("tasks", help="list the built-in tasks (--lm-eval PATTERN: lm-eval's)")
    p.add_argument("--lm-eval", metavar="PATTERN", default=None,
                   help="list lm-eval task/group/tag names matching a glob or substring")
    p.add_argument("--include-path", default=None, help="with --lm-eval: also your own lm-eval task YAML folder")
    p.set_defaults(func=cmd_tasks)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="show what libraries print (otherwise in OUT/quantconf.log where there is an --out)")
    return parser


# commands whose --out is a results directory of their own (a quantize --out holds only the checkpoint)
LOGGED_COMMANDS = {"eval", "study", "demo", "outliers"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # libraries' banners, warnings and load bars go to OUT/quantconf.log (--verbose: to the console)
    out = getattr(args, "out", None) if args.command in LOGGED_COMMANDS else None
    log = Path(out) / LIBRARY_LOG_NAME if out else None
    try:
        with library_output_log(log, verbose=args.verbose):
            return args.func(args)
    except QuantconfError as e:
        print(f"quantconf: error: {e.for_cli(FLAG_FOR_PARAM)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("quantconf: interrupted; finished steps are saved, re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
