"""Tasks the project generates itself, deterministic from a seed: they need no files.

`arithmetic`: "What is a + b?" / "a - b" / "a * b" with four numeric choices, graded in difficulty
by operand size (1-3 digits). Distractors are near misses (off by one, off by ten, digit swap), so
a small model finds the easy items easy and the hard ones hard — a spread of confidence, which is
what calibration metrics need. It is the offline fallback data of the embedded default model.
"""

import random

from quantconf.tasks.registry import Task, register_task

N_DOCS = 600


def generate_arithmetic(seed: int, n: int = N_DOCS) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        digits = 1 + i % 3  # difficulty grade 1, 2, 3 in rotation
        lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        op = rng.choice("+-*" if digits < 3 else "+-")
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        wrong: list[int] = []
        for delta in rng.sample([1, -1, 2, -2, 10, -10, 100, -100], 8):
            if len(wrong) == 3:
                break
            if answer + delta not in wrong:
                wrong.append(answer + delta)
        choices = [str(x) for x in wrong]
        gold = rng.randrange(4)
        choices.insert(gold, str(answer))
        docs.append({"question": f"What is {a} {op} {b}?", "choices": choices, "label": gold, "difficulty": digits})
    return docs


register_task(Task(
    name="arithmetic", version="1.0",
    doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
    doc_to_choices=lambda d: d["choices"],
    doc_to_gold=lambda d: int(d["label"]),
    generate=generate_arithmetic,
    description="generated arithmetic, 3 difficulty grades, 4 choices (offline)",
))
