"""K sampled answers per prompt: quantconf's shared-prefix batch against K separate transformers `generate` calls.

quantconf (inference/generation.py `_samples`): the prompt is read once, its KV cache repeated K times, the K
continuations decoded together (up to SAMPLE_ROWS rows). The naive way: for each prompt, K calls of
`model.generate(prompt, max_new_tokens=budget)` cut at the stop strings after (--naive-stop-strings: passed to
generate, which is slower here), each drawing from the same per-sample
stream (`GumbelSampler.processor`: the same seeds give the same answers), so the two are compared at equal
outputs; the script counts the samples whose text differs (0 expected; float rounding of a padded batch can in
principle tip a near-tie). Prints, for each K, min and median seconds of each way over --rounds and the
ratio naive / batched (issue 38's target: >= 2x).
Usage: .venv/bin/python benchmarks/sampling.py [--task arithmetic_gen] [--prompts 24] [--ks 5,10] [--rounds 2]
       [--data-dir ../shared/data]   (truthfulqa_gen needs it offline)
"""

import argparse
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="arithmetic_gen")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--ks", default="5,10")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-gen-toks", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--naive-stop-strings", action="store_true",
                    help="the naive way passes stop_strings to generate (slower here) instead of cutting after")
    args = ap.parse_args()

    import torch

    from quantconf.inference.generation import _samples, cut_at_stop, encode_prompts, stop_token_ids
    from quantconf.inference.sampling import GumbelSampler, SamplingConfig, sample_stream_seed
    from quantconf.inference.scoring import wants_bos
    from quantconf.models.loading import load_model
    from quantconf.models.runtime import set_threads
    from quantconf.tasks import load_task

    threads = set_threads(args.threads)
    lm = load_model("default")
    loaded = load_task(args.task, data_dir=args.data_dir, limit=args.prompts)
    prompts = loaded.questions
    budget = args.max_gen_toks or prompts[0].max_gen_toks
    until = list(prompts[0].until)
    encoded = encode_prompts(lm, [p.context for p in prompts], budget, wants_bos(lm.model))
    stops = sorted(stop_token_ids(lm))
    print(f"task {args.task}: {len(prompts)} prompts, mean {statistics.mean(map(len, encoded)):.0f} prompt tokens, "
          f"budget {budget} tokens, stop {until!r}; torch threads {threads}")

    def batched(config):
        return [[s.text for s in row] for row in _samples(lm, loaded, prompts, encoded, until, budget, config)]

    # transformers' stop_strings criterion rebuilds tables over the vocabulary on every call (0.4 s per call
    # here): by default the naive way decodes to the budget and cuts after, which is faster for short budgets
    stop_kwargs = {"stop_strings": until, "tokenizer": lm.tokenizer} if args.naive_stop_strings and until else {}

    def naive(config):
        out = []
        for p, ids in zip(prompts, encoded):
            row = []
            for k in range(config.k):
                sampler = GumbelSampler(config, [sample_stream_seed(config.seed, loaded.task.name, p.doc_id, k)])
                with torch.no_grad():
                    result = lm.model.generate(
                        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        do_sample=False, max_new_tokens=budget, logits_processor=[sampler.processor(0)],
                        eos_token_id=stops, pad_token_id=stops[0], **stop_kwargs)
                new = [int(t) for t in result[0, len(ids):]]
                new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
                row.append(cut_at_stop(lm.tokenizer.decode(new, skip_special_tokens=True), until))
            out.append(row)
        return out

    for k in [int(x) for x in args.ks.split(",")]:
        config = SamplingConfig(k=k, seed=0)
        times = {"batched": [], "naive": []}
        outputs = {}
        for _ in range(args.rounds):
            for name, fn in (("batched", batched), ("naive", naive)):
                t0 = time.perf_counter()
                outputs[name] = fn(config)
                times[name].append(time.perf_counter() - t0)
        differ = sum(a != b for ra, rb in zip(outputs["batched"], outputs["naive"]) for a, b in zip(ra, rb))
        b_min, n_min = min(times["batched"]), min(times["naive"])
        b_med, n_med = statistics.median(times["batched"]), statistics.median(times["naive"])
        print(f"K={k:>2}: batched min {b_min:.2f} s median {b_med:.2f} s | naive generate min {n_min:.2f} s median "
              f"{n_med:.2f} s | naive / batched: min {n_min / b_min:.2f}x median {n_med / b_med:.2f}x | "
              f"samples whose text differs: {differ} of {len(prompts) * k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
