"""quantconf vs lm-evaluation-harness (HF backend) on the same model, items and threads.

Each tool runs in its own child process of this script (same process tree), float32, 2 threads,
on the first N items of each task from ../shared/data, --repeat times after loading the model, in
--rounds alternating processes; the fastest run of each counts (timings on this shared 2-core VM
vary by up to 1.5x run to run), and the ratio of median runs is printed too.
Prints items/s of each, the speed ratio, peak RSS, and the largest per-choice log-likelihood
difference between the two.
Usage: .venv/bin/python benchmarks/vs_lm_eval.py [--limit 100] [--tasks hellaswag,piqa] [--batch-size 16]
       [--lm-eval-batch-size 1]   (lm-eval's default batch size)
       [--fewshot 5]              (few-shot: arc_easy K-shot, both through lm-eval's sampler)
       [--generate]               (generation: truthfulqa_gen, greedy, both graded by lm-eval's process_results)

Generation case (--generate): truthfulqa_gen from ../shared/data, the same batch size for both tools.
quantconf's time includes what lm-eval's does not do: P(True) (one more forward pass per answer) and the
per-token log-probabilities. Prints items/s and generated tokens/s (each tool's answers tokenized with the
model's tokenizer), the ratio, peak RSS, and how many generated strings are identical (a float near-tie
can turn a greedy path: those items are listed). lm-eval's time includes its grading (truthfulqa_gen's
ROUGE bootstrap, ~1.6 s a question here), quantconf's its checked equal of that grading. Then decoding
alone: steps/s after the prefill at batch 1 and 16, against the memory-bandwidth limit (weight bytes per step).

Few-shot case: ../shared/data has no ARC train split, so the benchmark cuts a hub-layout dir from the
ARC-Easy test file into a temporary folder: `test` = the first --limit items, `train` (the few-shot
pool lm-eval's arc_easy draws from) = items 1000-1999. Both tools read those same two files; every
choice of a question repeats the long K-shot context, which quantconf's prefix tree scores once.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import SHARED_DATA, run_child

LM_EVAL = """
import json, sys, time, torch

torch.set_num_threads({threads})
from quantconf.importers.lm_eval_files import write_offline_task_yamls
from pathlib import Path
import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from quantconf.models.loading import load_model
lm = load_model("default")
folder = Path("{tmp}")
if {fewshot}:
    root = Path(lm_eval.__file__).parent / "tasks"
    hub = Path("{data}") / "allenai/ai2_arc/ARC-Easy"
    (folder / "qc_{task}.yaml").write_text(json.dumps({{
        "include": str(root / "arc/arc_easy.yaml"), "task": "qc_{task}", "tag": [], "dataset_path": "json",
        "dataset_name": None, "validation_split": None,
        "dataset_kwargs": {{"data_files": {{"test": str(hub / "test.jsonl"), "train": str(hub / "train.jsonl")}}}}}}))
else:
    write_offline_task_yamls(folder, Path("{data}"))
hflm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size={lm_eval_batch}, device="cpu")
times = []
for _ in range({repeat}):
    t = time.perf_counter()
    res = lm_eval.simple_evaluate(model=hflm, tasks=["qc_{task}"], limit={limit}, log_samples=True,
                                  task_manager=TaskManager(include_path=str(folder)), bootstrap_iters=0,
                                  num_fewshot={fewshot} or None)
    times.append(time.perf_counter() - t)
ll = [[float(r[0]) for r in x["filtered_resps"]] for x in sorted(res["samples"]["qc_{task}"], key=lambda x: x["doc_id"])]
emit({{"seconds": times, "loglik": ll}})
"""

LM_EVAL_GENERATE = """
import json, time, torch

torch.set_num_threads({threads})
from pathlib import Path
import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from quantconf.models.loading import load_model
lm = load_model("default")
folder = Path("{tmp}")
root = Path(lm_eval.__file__).parent / "tasks"
(folder / "qc_truthfulqa_gen.yaml").write_text(json.dumps({{
    "include": str(root / "truthfulqa/truthfulqa_gen.yaml"), "task": "qc_truthfulqa_gen", "tag": [],
    "dataset_path": "json", "dataset_name": None, "validation_split": "validation",
    "dataset_kwargs": {{"data_files": {{"validation": "{data}/truthfulqa/truthful_qa/generation/validation.jsonl"}}}}}}))
hflm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size={lm_eval_batch}, device="cpu")
times = []
for _ in range({repeat}):
    t = time.perf_counter()
    res = lm_eval.simple_evaluate(model=hflm, tasks=["qc_truthfulqa_gen"], limit={limit}, log_samples=True,
                                  task_manager=TaskManager(include_path=str(folder)), bootstrap_iters=0)
    times.append(time.perf_counter() - t)
samples = sorted(res["samples"]["qc_truthfulqa_gen"], key=lambda x: x["doc_id"])
texts = [x["resps"][0][0] for x in samples]
emit({{"seconds": times, "texts": texts, "bleu_acc": [x["bleu_acc"] for x in samples],
       "tokens": sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)}})
"""

QUANTCONF_GENERATE = """
import time
from quantconf.models.loading import load_model
from quantconf.models.runtime import set_threads
from quantconf.tasks import load_task
from quantconf.evaluation import evaluate_task
set_threads({threads})
lm = load_model("default")
times = []
for _ in range({repeat}):
    t = time.perf_counter()
    df = evaluate_task(lm, load_task("truthfulqa_gen", data_dir="{data}", limit={limit}), batch_size={batch})
    times.append(time.perf_counter() - t)
texts = list(df["generation"])
emit({{"seconds": times, "texts": texts, "bleu_acc": [float(x) for x in df["bleu_acc"]],
       "tokens": sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)}})
"""

QUANTCONF = """
import json, time
from quantconf.models.loading import load_model
from quantconf.models.runtime import set_threads
from quantconf.tasks import load_task
from quantconf.evaluation import evaluate_task
set_threads({threads})
lm = load_model("default")
times = []
for _ in range({repeat}):
    t = time.perf_counter()
    df = evaluate_task(lm, load_task("{task}", data_dir="{data}", limit={limit}, num_fewshot={fewshot} or None),
                       batch_size={batch})
    times.append(time.perf_counter() - t)
emit({{"seconds": times, "loglik": [list(map(float, x)) for x in df["loglik"]]}})
"""


DECODE_ALONE = """
import time, numpy as np, torch
from quantconf.models.loading import load_model
from quantconf.models.runtime import set_threads
from quantconf.inference.generation import greedy_generate
set_threads({threads})
lm = load_model("default")
weight_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
# memory bandwidth: the best of 5 copies of a 512 MiB array (bytes read + written per second)
a = np.ones(64 * 2 ** 20); b = np.empty_like(a); best = 1e9
for _ in range(5):
    t = time.perf_counter(); np.copyto(b, a); best = min(best, time.perf_counter() - t)
bandwidth = 2 * a.nbytes / best
rates = {{}}
for batch in (1, 16):
    prompts = ["The history of the city begins"] * batch
    short = greedy_generate(lm, prompts, until=[], max_gen_toks=4, batch_size=batch)  # prefill + 4 steps
    t = time.perf_counter(); greedy_generate(lm, prompts, until=[], max_gen_toks=4, batch_size=batch)
    t4 = time.perf_counter() - t
    t = time.perf_counter(); gens = greedy_generate(lm, prompts, until=[], max_gen_toks=68, batch_size=batch)
    steps = min(len(g.token_ids) for g in gens) - 4
    rates[batch] = steps / max(time.perf_counter() - t - t4, 1e-9)  # decoding steps per second, prefill removed
emit({{"weight_bytes": weight_bytes, "bandwidth": bandwidth, "steps_per_s": rates}})
"""


def decode_alone(args) -> None:
    """Decoding alone: steps/s after the prefill, against the memory-bandwidth limit (each step reads every
    weight once: bandwidth / weight bytes steps per second at most, whatever the batch)."""
    res = run_child(DECODE_ALONE.format(threads=args.threads))
    limit = res["bandwidth"] / res["weight_bytes"]
    print(f"decoding alone (default model, float32 weights {res['weight_bytes'] / 2 ** 20:.0f} MiB read per step; "
          f"memory bandwidth {res['bandwidth'] / 1e9:.1f} GB/s by a numpy copy -> at most {limit:.1f} steps/s):")
    for batch, rate in res["steps_per_s"].items():
        print(f"  batch {batch:>2}: {rate:.1f} steps/s = {rate * int(batch):.1f} tokens/s, {rate / limit:.0%} of the "
              "bandwidth limit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--tasks", default="hellaswag,piqa")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each tool per process")
    ap.add_argument("--rounds", type=int, default=2,
                    help="processes of each tool, alternating; the fastest run counts (this machine is noisy)")
    ap.add_argument("--lm-eval-batch-size", type=int, default=None,
                    help="lm-eval's batch size (default: the same as --batch-size; lm-eval's own default is 1)")
    ap.add_argument("--fewshot", type=int, default=0, help="K > 0: arc_easy K-shot (see the docstring)")
    ap.add_argument("--generate", action="store_true", help="truthfulqa_gen generation (see the docstring)")
    args = ap.parse_args()
    if args.generate:
        return generate(args)
    data = SHARED_DATA
    if args.fewshot:
        args.tasks = "arc_easy"
        data = Path(tempfile.mkdtemp()) / "hub"
        rows = (Path(SHARED_DATA) / "arc_easy/test.jsonl").read_text().splitlines()
        (data / "allenai/ai2_arc/ARC-Easy").mkdir(parents=True)
        (data / "allenai/ai2_arc/ARC-Easy/test.jsonl").write_text("\n".join(rows[:args.limit]) + "\n")
        (data / "allenai/ai2_arc/ARC-Easy/train.jsonl").write_text("\n".join(rows[1000:2000]) + "\n")
        print(f"arc_easy {args.fewshot}-shot; few-shot pool: ARC-Easy test items 1000-1999 ({data})")
    print(f"{'task':<10} {'lm-eval items/s':>16} {'quantconf items/s':>18} {'ratio':>6} {'max |dLL|':>10} "
          f"{'RSS lm-eval':>12} {'RSS quantconf':>14}")
    for task in args.tasks.split(","):
        kw = dict(task=task, data=data, fewshot=args.fewshot, limit=args.limit, batch=args.batch_size, threads=args.threads,
                  lm_eval_batch=args.lm_eval_batch_size or args.batch_size, repeat=args.repeat)
        their_runs, our_runs = [], []
        for _ in range(args.rounds):  # alternate the tools so slow spells of the machine hit both
            with tempfile.TemporaryDirectory() as tmp:
                theirs = run_child(LM_EVAL.format(tmp=tmp, **kw))
            ours = run_child(QUANTCONF.format(**kw))
            their_runs += theirs["seconds"]
            our_runs += ours["seconds"]
        diff = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(theirs["loglik"], ours["loglik"]))
        a, b = args.limit / min(their_runs), args.limit / min(our_runs)
        print(f"{task:<10} {a:>16.2f} {b:>18.2f} {b / a:>6.2f} {diff:>10.2e} {theirs['peak_rss_mib']:>12} "
              f"{ours['peak_rss_mib']:>14}", flush=True)
        print(f"{'':<10} runs (s): lm-eval {[round(x, 2) for x in their_runs]}, "
              f"quantconf {[round(x, 2) for x in our_runs]}; ratio of medians "
              f"{np.median(their_runs) / np.median(our_runs):.2f}", flush=True)

def generate(args) -> None:
    kw = dict(data=SHARED_DATA, limit=args.limit, batch=args.batch_size, threads=args.threads,
              lm_eval_batch=args.lm_eval_batch_size or args.batch_size, repeat=args.repeat)
    their_runs, our_runs = [], []
    for _ in range(args.rounds):  # alternate the tools so slow spells of the machine hit both
        with tempfile.TemporaryDirectory() as tmp:
            theirs = run_child(LM_EVAL_GENERATE.format(tmp=tmp, **kw))
        ours = run_child(QUANTCONF_GENERATE.format(**kw))
        their_runs += theirs["seconds"]
        our_runs += ours["seconds"]
    same = [a == b for a, b in zip(theirs["texts"], ours["texts"])]
    metric_same = [a == b for a, b, s in zip(theirs["bleu_acc"], ours["bleu_acc"], same) if s]
    print(f"truthfulqa_gen, {args.limit} questions, batch {args.batch_size}, {args.threads} threads")
    print(f"{'':<10} {'items/s':>9} {'gen tokens/s':>13} {'peak RSS MiB':>13}")
    for name, res, runs in (("lm-eval", theirs, their_runs), ("quantconf", ours, our_runs)):
        print(f"{name:<10} {args.limit / min(runs):>9.3f} {res['tokens'] / min(runs):>13.2f} {res['peak_rss_mib']:>13}")
    print(f"speed ratio quantconf / lm-eval: fastest runs {min(their_runs) / min(our_runs):.2f}, medians "
          f"{np.median(their_runs) / np.median(our_runs):.2f}; runs (s) lm-eval {[round(x, 1) for x in their_runs]}, "
          f"quantconf {[round(x, 1) for x in our_runs]}")
    print(f"identical generated strings: {sum(same)}/{len(same)} ({np.mean(same):.1%}); bleu_acc equal on "
          f"{sum(metric_same)}/{len(metric_same)} of those")
    for i, s in enumerate(same):
        if not s:
            print(f"  differs, doc {i}: lm-eval {theirs['texts'][i]!r} / quantconf {ours['texts'][i]!r}")
    decode_alone(args)


if __name__ == "__main__":
    main()
