"""Greedy generation speed of the default model: `generation.greedy_generate` (batched, KV cache, prompt
computed once) against a naive loop that re-runs the whole sequence for every token (batch of one),
on the same prompts, in one process, alternating, several rounds. Prints generated tokens/s of each,
and the ratio (min and median over rounds), plus whether both produced the same tokens.

The goal in issue 25 is >= 1.5x over lm-eval's HF backend; this benchmark is the first half of that
comparison (our decoder vs recomputing the prompt per token), not that comparison itself.
Usage: .venv/bin/python benchmarks/generation_speed.py [--prompts 16] [--max-gen-toks 24] [--rounds 3]
"""

import argparse
import statistics
import time

import torch

from quantconf.inference.generation import greedy_generate
from quantconf.models.loading import load_model
from quantconf.models.runtime import set_threads
from quantconf.tasks.generated import generate_arithmetic


def naive(lm, prompt: str, max_gen_toks: int) -> list[int]:
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(max_gen_toks):
            t = int(lm.model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if t == lm.tokenizer.eos_token_id:
                break
            out.append(t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-gen-toks", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    set_threads(None)
    lm = load_model("default")
    # few-shot prompts of the generated arithmetic task (two solved examples, then the question)
    docs = generate_arithmetic(seed=0, n=args.prompts + 2)
    shots = "".join(f"Question: {d['question']}\nAnswer: {d['choices'][d['label']]}\n\n" for d in docs[:2])
    prompts = [f"{shots}Question: {d['question']}\nAnswer:" for d in docs[2:]]
    ours, theirs, same = [], [], True
    for _ in range(args.rounds):
        t = time.perf_counter()
        gens = greedy_generate(lm, prompts, until=[], max_gen_toks=args.max_gen_toks, batch_size=args.batch_size)
        ours.append(sum(len(g.token_ids) for g in gens) / (time.perf_counter() - t))
        t = time.perf_counter()
        ref = [naive(lm, p, args.max_gen_toks) for p in prompts]
        theirs.append(sum(map(len, ref)) / (time.perf_counter() - t))
        same &= [g.token_ids for g in gens] == ref
    ratios = [a / b for a, b in zip(ours, theirs)]
    print(f"{len(prompts)} prompts, max_gen_toks {args.max_gen_toks}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"greedy_generate: {statistics.median(ours):.1f} tokens/s (median); naive loop: "
          f"{statistics.median(theirs):.1f} tokens/s")
    print(f"ratio: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x; same tokens: {same}")


if __name__ == "__main__":
    main()
