"""The paper's benchmarks, with lm-evaluation-harness's prompts, choices and gold labels.

Each definition mirrors the task YAML of lm-evaluation-harness (0.4.x): `doc_to_text`,
`doc_to_choice`, `doc_to_target`; the continuation scored is `" " + choice`.
`local_folder`/`split` give the offline layout of ../shared/data.
"""

import re

from quantconf.tasks.registry import Task, register_task


def _hellaswag_preprocess(text: str) -> str:
    # lm_eval/tasks/hellaswag/utils.py: brackets are WikiHow artifacts
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _hellaswag_text(doc: dict) -> str:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return _hellaswag_preprocess(doc["activity_label"] + ": " + ctx)


register_task(Task(
    name="hellaswag", version="1.0",
    hub_path="Rowan/hellaswag", split="validation", local_folder="hellaswag",
    doc_to_text=_hellaswag_text,
    doc_to_choices=lambda d: [_hellaswag_preprocess(e) for e in d["endings"]],
    doc_to_gold=lambda d: int(d["label"]),
    description="HellaSwag sentence completion (4 endings)",
))

register_task(Task(
    name="piqa", version="1.0",
    hub_path="baber/piqa", split="validation", local_folder="piqa",
    doc_to_text=lambda d: f"Question: {d['goal']}\nAnswer:",
    doc_to_choices=lambda d: [d["sol1"], d["sol2"]],
    doc_to_gold=lambda d: int(d["label"]),
    description="PIQA physical commonsense (2 solutions)",
))

register_task(Task(
    name="boolq", version="2.0",
    hub_path="aps/super_glue", hub_name="boolq", split="validation", local_folder="boolq",
    doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
    doc_to_choices=lambda d: ["no", "yes"],
    doc_to_gold=lambda d: int(d["label"]),
    description="BoolQ yes/no reading comprehension",
))


def _arc_gold(doc: dict) -> int:
    return doc["choices"]["label"].index(doc["answerKey"])


for _name, _config, _folder in [("arc_easy", "ARC-Easy", "arc_easy"), ("arc_challenge", "ARC-Challenge", "arc_challenge")]:
    register_task(Task(
        name=_name, version="1.0",
        hub_path="allenai/ai2_arc", hub_name=_config, split="test", local_folder=_folder,
        doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
        doc_to_choices=lambda d: list(d["choices"]["text"]),
        doc_to_gold=_arc_gold,
        description=f"AI2 Reasoning Challenge ({_config})",
    ))

register_task(Task(
    name="openbookqa", version="1.0",
    hub_path="allenai/openbookqa", hub_name="main", split="test", local_folder="openbookqa",
    doc_to_text=lambda d: d["question_stem"],
    doc_to_choices=lambda d: list(d["choices"]["text"]),
    doc_to_gold=lambda d: d["choices"]["label"].index(d["answerKey"].lstrip()),
    description="OpenBookQA elementary science (4 choices)",
))

register_task(Task(
    name="xstory_cloze_en", version="1.0",
    hub_path="juletxara/xstory_cloze", hub_name="en", split="eval", local_folder="xstory_cloze_en",
    doc_to_text=lambda d: " ".join(d[f"input_sentence_{i}"] for i in range(1, 5)),
    doc_to_choices=lambda d: [d["sentence_quiz1"], d["sentence_quiz2"]],
    doc_to_gold=lambda d: int(d["answer_right_ending"]) - 1,
    description="Story Cloze (English): pick the right story ending",
))

# lm-eval's truthfulqa_mc1.yaml prompt: six fixed QA pairs, then the question.
TRUTHFULQA_PROMPT = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)


def _truthfulqa_text(doc: dict) -> str:
    return TRUTHFULQA_PROMPT + "\n\nQ: " + doc["question"] + "\nA:"


register_task(Task(
    name="truthfulqa_mc1", version="2.0",
    hub_path="truthfulqa/truthful_qa", hub_name="multiple_choice", split="validation", local_folder="truthful_qa",
    doc_to_text=_truthfulqa_text,
    doc_to_choices=lambda d: list(d["mc1_targets"]["choices"]),
    doc_to_gold=lambda d: 0,  # lm-eval: doc_to_target: 0 (the one true answer comes first)
    description="TruthfulQA MC1 (one true answer)",
))

register_task(Task(
    name="truthfulqa_mc2", version="2.0",
    hub_path="truthfulqa/truthful_qa", hub_name="multiple_choice", split="validation", local_folder="truthful_qa",
    doc_to_text=_truthfulqa_text,
    doc_to_choices=lambda d: list(d["mc2_targets"]["choices"]),
    doc_to_gold=lambda d: [i for i, label in enumerate(d["mc2_targets"]["labels"]) if label == 1],
    description="TruthfulQA MC2 (several true answers; score = normalized mass on true answers)",
))
