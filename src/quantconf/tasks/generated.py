"""Tasks the project generates itself, deterministic from a seed: they need no files.

`arithmetic`: "What is a + b?" / "a - b" / "a * b" with four numeric choices, graded in difficulty
by operand size (1-3 digits). Distractors are near misses (off by one, off by ten, digit swap), so
a small model finds the easy items easy and the hard ones hard — a spread of confidence, which is
what calibration metrics need. It is the offline fallback data of the embedded default model.

`arithmetic_gen`: the model *writes* the answer (greedy, stops at the newline) after a fixed
three-example prompt; graded by exact match of the digits. Grades: one-digit a+b, a-b, a*b;
two-digit plus or minus one-digit; two-digit plus two-digit. The embedded default model
(SmolLM2-135M) gets about 45% / 20% / 5% of them right: a spread of confidence and correctness that
gsm8k or triviaqa (near 0% for a 135M model) would not give.
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


ARITHMETIC_GEN_SHOTS = ("Question: What is 2 + 3?\nAnswer: 5\n\n"
                        "Question: What is 14 - 6?\nAnswer: 8\n\n"
                        "Question: What is 7 * 8?\nAnswer: 56\n\n")


def generate_arithmetic_gen(seed: int, n: int = N_DOCS) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        grade = 1 + i % 3
        if grade == 1:
            a, b, op = rng.randint(0, 9), rng.randint(0, 9), rng.choice("+-*")
        elif grade == 2:
            a, b, op = rng.randint(10, 99), rng.randint(0, 9), rng.choice("+-")
        else:
            a, b, op = rng.randint(10, 99), rng.randint(10, 99), "+"
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        docs.append({"question": f"What is {a} {op} {b}?", "answer": str(answer), "difficulty": grade})
    return docs


def exact_match_answer(doc: dict, generation: str) -> dict:
    """1.0 when the generation, stripped of surrounding whitespace, is exactly the answer's digits."""
    return {"exact_match": float(generation.strip() == doc["answer"])}


register_task(Task(
    name="arithmetic_gen", version="1.0", output_type="generate_until",
    doc_to_text=lambda d: f"{ARITHMETIC_GEN_SHOTS}Question: {d['question']}\nAnswer:",
    doc_to_reference=lambda d: d["answer"],
    process_results=exact_match_answer, primary_metric="exact_match", answer_key=lambda doc, text: text.strip(),
    until=("\n",), max_gen_toks=8,
    generate=generate_arithmetic_gen,
    description="generated arithmetic, the model writes the answer (exact match; 3 grades, offline)",
))
