"""Tasks served by lm-evaluation-harness itself: any `multiple_choice` or `generate_until` task it defines.

quantconf scores them with its own (packed) scorer, but every prompt comes from lm-eval: the task
object is built by lm-eval's `TaskManager` and `build_all_requests` makes the (context,
continuation) pairs, so contexts, choices, few-shot examples (lm-eval's sampler, seeded as
`simple_evaluate` seeds it), descriptions and delimiters are lm-eval's, byte for byte.

A `generate_until` task becomes `Prompt`s from the same requests (context and lm-eval's generation
kwargs: `until`, `max_gen_toks`; greedy only), and its grading is lm-eval's: the task's filters
(e.g. gsm8k's answer extraction) then its `process_results`, per sample. Metrics of the first
filter keep lm-eval's names (`exact_match`, `bleu_acc`, ...); those of further filters are named
`<metric>,<filter>` as lm-eval's results name them.

Name resolution (`resolve_lm_eval`): a task name, a tag (expands to its tasks) or a group (expands
to its leaf tasks, recursively; the group's `aggregate_metric_list` is kept so `metrics` can show
the group's aggregate as lm-eval does). Only YAML is read to expand names and check output types,
so a generative task or a missing local file fails before any dataset or model is loaded.

Offline (`data_dir`): lm-eval reads `DIR/<dataset_path>/<dataset_name>/<split>.jsonl` (no
`<dataset_name>` level when the task has none) through the `json` dataset builder, for the splits
the run uses: the eval split, and the few-shot split when num_fewshot > 0. For names that are also
quantconf built-ins, the built-in layout `DIR/<local_folder>/<split>.jsonl` (../shared/data) is
accepted too.

lm_eval is imported inside functions: it takes seconds to import and its task index ~10 s to build
(cached per include path for the life of the process).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import hashlib
import importlib.util
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from quantconf.errors import QuantconfError
from quantconf.models.builtin import cache_dir
from quantconf.io import atomic_write_bytes, captured_library_output, read_jsonl  # read_jsonl: the built-ins' file:line errors
from quantconf.kinds import KINDS, kind_of_output_type, kind_of_task
from quantconf.kinds.items import Prompt, Question, check_gold
from quantconf.tasks.registry import Task
from quantconf.tasks.lm_eval_graders import fast_process_results

OUTPUT_TYPES = tuple(t for kind in KINDS.values() for t in kind.output_types)  # what some task kind evaluates

_MANAGERS: dict[str | None, object] = {}


def _tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def _builtin_index_key(root: Path) -> str:
    """What lm-eval's built-in index is built from: lm-eval's version, where its tasks folder is (the
    entries hold absolute paths) and every YAML file in it (relative path, size, modification time)."""
    from importlib import metadata

    digest = hashlib.sha256(f"lm_eval {metadata.version('lm_eval')}\n{root}\n".encode())
    for path in sorted(root.rglob("*.yaml")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def builtin_index_cache_path() -> Path:
    """Where the built-in index is kept between processes: under the cache dir, named by `_builtin_index_key`."""
    return cache_dir() / "lm_eval_task_index" / f"{_builtin_index_key(_tasks_root())}.json"


def read_cached_index(path: Path) -> dict | None:
    """The index `builtin_task_index` wrote to `path` (lm-eval's `Entry` objects, equal to the ones
    `TaskIndex.build` makes: its YAML configs are plain JSON values), or None when the file is absent or
    unreadable (then the index is built again and the file replaced)."""
    from lm_eval.tasks._index import Entry, Kind

    try:
        rows = json.loads(path.read_text())
        return {name: Entry(name=name, kind=Kind[kind], yaml_path=Path(yaml_path) if yaml_path else None, cfg=cfg,
                            tags=set(tags)) for name, kind, yaml_path, cfg, tags in rows}
    except (OSError, ValueError, TypeError, KeyError):
        return None


@functools.lru_cache(maxsize=1)
def builtin_task_index() -> dict:
    """lm-eval's index of its own ~15k task, group and tag names. Building it reads every YAML file under
    lm_eval/tasks (~10 s), so it is built once per installation and kept under the cache dir as JSON
    (0.5 s to read; its name is the hash of lm-eval's version and the YAML files' sizes and times), and
    within a process shared by the task managers of every include path."""
    from lm_eval.tasks._index import TaskIndex

    path = builtin_index_cache_path()
    index = read_cached_index(path)
    if index is None:
        index = TaskIndex.build([_tasks_root()])
        rows = [[e.name, e.kind.name, str(e.yaml_path) if e.yaml_path else None, e.cfg, sorted(e.tags)]
                for e in index.values()]
        try:
            data = json.dumps(rows, allow_nan=False).encode()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except (OSError, TypeError, ValueError):
            # a read-only cache dir, or a config JSON cannot hold as it is (a later lm-eval's YAML with dates or
            # NaN): the index is still right, only the next process builds it again
            pass
    return index


def composed_task_manager(include_path: str | None):
    """`TaskManager(include_path=...)` with the built-in part of its index reused (`builtin_task_index`): the
    same index lm-eval builds, whose rule is "each path's names in turn, a later path's name replacing an
    earlier one", so only the user's folder is read. Uses TaskManager's private index (lm-eval is pinned
    to 0.4.13); `test_lm_eval_tasks` checks the result equals lm-eval's own manager."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    manager = TaskManager(include_path=include_path, include_defaults=False)  # reads only the user's folder
    index = {**builtin_task_index(), **manager._index}
    manager._index = index
    manager._all_tasks = sorted(index)
    manager._all_subtasks = sorted(k for k, e in index.items() if e.kind in (Kind.TASK, Kind.PY_TASK))
    manager._all_groups = sorted(k for k, e in index.items() if e.kind == Kind.GROUP)
    manager._all_tags = sorted(k for k, e in index.items() if e.kind == Kind.TAG)
    return manager


def task_manager(include_path: str | None = None):
    """lm-eval's TaskManager for the built-in tasks and those of `include_path`, cached per path."""
    key = str(include_path) if include_path else None
    if key not in _MANAGERS:
        if key is not None and not Path(key).is_dir():
            raise QuantconfError(f"include path {key} is not a directory of lm-eval task YAML files",
                                 param="include_path")
        if importlib.util.find_spec("lm_eval") is None:
            raise QuantconfError("lm-evaluation-harness is needed for lm-eval tasks; pip install 'lm_eval==0.4.13'")
        if key is not None:
            check_task_yamls(Path(key))
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        _MANAGERS[key] = composed_task_manager(key)
    return _MANAGERS[key]


@functools.lru_cache(maxsize=1)
def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE say so, or when the hub's host does not take a
    connection within 2 s; asked once per process, so an offline run fails at once instead of
    retrying every dataset for half a minute. Online, hub loading is unchanged."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def hub_offline_mode():
    """datasets and huggingface_hub in offline mode for the block: cached datasets load, anything else
    fails at once (both libraries read their flags at import, so the flags are set on the modules)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def check_task_yamls(folder: Path) -> None:
    """Every YAML file under a user's include path parses, or one error naming the file and the parser's
    message (lm-eval itself skips a broken file with a log line, and the user sees only "unknown task")."""
    import yaml

    class AnyTagLoader(yaml.SafeLoader):  # lm-eval's `!function module.name` tags: parsed, not resolved
        pass

    AnyTagLoader.add_multi_constructor("", lambda loader, suffix, node: None)
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        try:
            yaml.load(path.read_bytes().decode("utf-8"), Loader=AnyTagLoader)
        except UnicodeDecodeError:
            raise QuantconfError(f"{path}: not UTF-8 text; save the task YAML as UTF-8", param="include_path") from None
        except yaml.YAMLError as e:
            message = " ".join(str(e).split())[:200]
            raise QuantconfError(f"{path}: invalid YAML ({message}); fix it or move it out of the include path",
                                 param="include_path") from None


def list_lm_eval_tasks(pattern: str = "*", include_path: str | None = None) -> list[tuple[str, str]]:
    """(name, kind) of lm-eval's tasks, groups and tags matching a glob pattern (or a substring)."""
    tm = task_manager(include_path)
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return [(n, tm.task_index[n].kind.name.lower()) for n in tm.all_tasks if fnmatch.fnmatch(n, pattern)]


def close_matches(name: str, include_path: str | None = None) -> list[str]:
    try:
        names = task_manager(include_path).all_tasks
    except QuantconfError:
        return []
    return difflib.get_close_matches(name, names, n=5, cutoff=0.75)


def raw_config(tm, name: str, overrides: dict | None = None) -> dict:
    # lm-eval's own YAML loader (includes and !function resolved); no dataset is touched
    return tm._factory._load_full_config(tm.task_index[name], overrides)


@dataclass
class Resolved:
    """What one requested name stands for: leaf tasks (with the overrides their groups apply) and
    the groups met on the way, each with its direct children and lm-eval's aggregation rule."""

    leaves: list[tuple[str, dict]] = field(default_factory=list)
    groups: dict[str, dict] = field(default_factory=dict)


def knows(name: str, include_path: str | None = None) -> bool:
    """Whether lm-eval (with the user's include path) has a task, tag or group of this name."""
    return name in task_manager(include_path).task_index


def resolve_lm_eval(name: str, include_path: str | None = None) -> Resolved:
    """The leaf tasks and groups an lm-eval name stands for (the caller checked `knows(name)`)."""
    from lm_eval.tasks._factory import GROUP_FIELD_NAMES

    tm = task_manager(include_path)
    out = Resolved()

    def walk(item: str, overrides: dict) -> list[str]:
        """Record `item`'s leaf tasks and groups; return what it stands for as a member of a group."""
        entry = tm.task_index[item]
        if entry.kind.name == "TAG":  # a shorthand for its tasks, not a container
            return [member for t in sorted(entry.tags) for member in walk(t, overrides)]
        if entry.kind.name == "GROUP":
            cfg = raw_config(tm, item)
            inherited = {**{k: v for k, v in cfg.items() if k not in GROUP_FIELD_NAMES and k != "metadata"},
                         **overrides}
            members = []
            for child in cfg.get("task") or []:
                if isinstance(child, str):
                    child_name, child_over = child, inherited
                elif isinstance(child, dict) and ("task" in child or "group" in child):
                    child_name = child.get("task", child.get("group"))
                    child_over = {**inherited, **{k: v for k, v in child.items() if k not in ("task", "group")}}
                else:
                    raise QuantconfError(f"lm-eval group {item}: cannot read member {child!r}")
                if child_name not in tm.task_index:
                    raise QuantconfError(f"lm-eval group {item}: inline task {child_name!r} is not supported; "
                                         "define it in its own YAML (--include-path)")
                members += walk(child_name, child_over)
            out.groups[item] = {"tasks": members, "aggregate_metric_list": cfg.get("aggregate_metric_list") or []}
            return [item]
        out.leaves.append((item, overrides))
        return [item]

    walk(name, {})
    return out


def _split_files(cfg: dict, name: str, data_dir: Path, num_fewshot: int, local_folder: str | None) -> dict:
    """Config overrides that point lm-eval at DIR's jsonl files for the splits this run reads."""
    eval_split = cfg.get("test_split") or cfg.get("validation_split")
    fewshot_split = (cfg.get("fewshot_split") or (cfg.get("fewshot_config") or {}).get("split")
                     or cfg.get("training_split") or cfg.get("validation_split") or cfg.get("test_split"))
    needed = [eval_split] + ([fewshot_split] if num_fewshot > 0 and fewshot_split != eval_split else [])
    base = data_dir / str(cfg.get("dataset_path"))
    if cfg.get("dataset_name"):
        base = base / str(cfg["dataset_name"])
    files = {}
    for split in needed:
        path = base / f"{split}.jsonl"
        if not path.is_file() and local_folder and (data_dir / local_folder / f"{split}.jsonl").is_file():
            path = data_dir / local_folder / f"{split}.jsonl"
        if not path.is_file():
            what = "few-shot split" if split != eval_split else "eval split"
            alt = f" or {data_dir / local_folder / f'{split}.jsonl'}" if local_folder else ""
            raise QuantconfError(f"task {name}: {path}{alt} not found (its {what} {split!r}, hub schema of "
                                 f"{cfg.get('dataset_path')}{'/' + cfg['dataset_name'] if cfg.get('dataset_name') else ''})",
                                 param="data_dir")
        files[split] = str(path)
    overrides = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
                 "custom_dataset": None}
    # splits this run does not read are switched off, so lm-eval does not look for their files
    for key in ("test_split", "validation_split", "training_split", "fewshot_split"):
        if cfg.get(key) is not None and cfg[key] not in files:
            overrides[key] = None
    if num_fewshot > 0 and fewshot_split not in (cfg.get("test_split"), cfg.get("validation_split"),
                                                   cfg.get("training_split")):
        overrides["fewshot_split"] = fewshot_split
    return overrides


def lm_eval_task(name: str, overrides: dict, num_fewshot: int | None, fewshot_seed: int,
                 include_path: str | None) -> Task:
    """A quantconf Task for one lm-eval leaf task (checked to be multiple choice or generate_until;
    nothing loaded)."""
    tm = task_manager(include_path)
    cfg = raw_config(tm, name, {**overrides, "task": name})
    output_type = cfg.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise QuantconfError(f"task {name} is an lm-eval {output_type!r} task; quantconf evaluates "
                             "multiple_choice and generate_until tasks", param="tasks")
    kind = kind_of_output_type(output_type)
    per_sample, corpus = split_metrics(cfg)
    graded = {}  # a kind whose answers the task's metrics grade: the primary metric, named in the description
    if kind.graded_after_run:  # answers graded per sample by the task's metrics, decoded greedily
        if not per_sample:
            # a corpus-level metric (lm-eval's bleu, chrf, ter, f1, ...) has no value per answer: it failed with a
            # TypeError after every prompt was generated
            raise QuantconfError(f"task {name}'s metrics {corpus} are corpus-level (lm-eval aggregates the "
                                 "whole corpus, not each answer), and quantconf needs a per-answer correctness; add "
                                 "a per-sample metric such as exact_match to its metric_list", param="tasks")
        if (cfg.get("generation_kwargs") or {}).get("do_sample"):
            raise QuantconfError(f"task {name} samples its generations (do_sample: true); quantconf decodes "
                                 "greedily, so its confidence measures would describe another decoder", param="tasks")
        graded = {"primary_metric": primary_of(per_sample), "suffix": f", {kind.name}"}
    if num_fewshot is None:
        num_fewshot = int(cfg.get("num_fewshot") or 0)  # the task's own default, as lm-eval uses
    version = (cfg.get("metadata") or {}).get("version", "?")
    import lm_eval

    return Task(
        name=name, version=f"lm-eval-{lm_eval.__version__}/{version}", lm_eval=name,
        hub_path=cfg.get("dataset_path"), hub_name=cfg.get("dataset_name"),
        split=cfg.get("test_split") or cfg.get("validation_split"),
        target_delimiter=cfg.get("target_delimiter") if cfg.get("target_delimiter") is not None else " ",
        num_fewshot=num_fewshot, fewshot_seed=fewshot_seed, include_path=include_path,
        description=f"lm-eval task {name}" + (f", {num_fewshot}-shot" if num_fewshot else "")
        + graded.get("suffix", ""), lm_eval_overrides=overrides or None,
        output_type=output_type, primary_metric=graded.get("primary_metric"),
    )


PER_SAMPLE_AGGREGATIONS = ("mean", "nanmean")  # a mean of per-answer values: quantconf's acc equals lm-eval's


def _aggregation(entry: dict) -> str:
    """The name of a metric_list entry's aggregation: its own, else lm-eval's default for the metric."""
    agg = entry.get("aggregation")
    if agg is None:
        import lm_eval.api.metrics  # noqa: F401 - registers the metrics and their default aggregations
        from lm_eval.api.registry import get_metric_aggregation

        try:
            agg = get_metric_aggregation(entry.get("metric"))
        except Exception:  # noqa: BLE001 - an unregistered metric: lm-eval's own default is the mean
            agg = None
        if agg is None:
            return "mean"
    return agg if isinstance(agg, str) else getattr(agg, "__name__", str(agg))


def split_metrics(cfg: dict) -> tuple[list[str], list[str]]:
    """A generate_until task's metric names: (per-sample ones, aggregated by a mean; corpus-level ones)."""
    per_sample, corpus = [], []
    for m in cfg.get("metric_list") or [{"metric": "exact_match"}]:
        if isinstance(m.get("metric"), str):
            (per_sample if _aggregation(m) in PER_SAMPLE_AGGREGATIONS else corpus).append(m["metric"])
    return per_sample, corpus


def primary_of(names: list[str]) -> str:
    """The metric that says whether a generation is correct: exact_match when the task has it, else
    its first accuracy-like (0/1) metric (truthfulqa_gen: bleu_acc), else its first metric. Used on a task's
    per-sample metrics and on the `metrics` of a logged sample."""
    for rule in (lambda m: m == "exact_match", lambda m: m == "acc" or m.endswith("_acc")):
        found = [m for m in names if rule(m)]
        if found:
            return found[0]
    return names[0] if names else "exact_match"


def _group_overrides(task: Task) -> dict:
    return dict(task.lm_eval_overrides or {})


def load_lm_eval_questions(task: Task, data_dir: Path | None, limit: int | None,
                           builtin_folder: str | None = None) -> tuple[list, str, str, object, object]:
    """Questions (or generation prompts) of an lm-eval task through lm-eval's own request builder:
    (questions, source, sha256, grade, answer_key); `grade(prompts, generations)` and
    `answer_key(prompts, generations)` (`_answer_keyer`) are None for multiple choice."""
    tm = task_manager(task.include_path)
    overrides = {**_group_overrides(task), "task": task.lm_eval}
    cfg = raw_config(tm, task.lm_eval, overrides)
    kind = kind_of_task(task)
    offline = False
    own_files = _own_data_files(cfg)
    if own_files is not None:  # a YAML task reading its own local files: --data-dir is for hub datasets
        loader = "rows in a field" if (cfg.get("dataset_kwargs") or {}).get("field") else cfg.get("dataset_path")
        for path in own_files:
            _check_data_file(task.name, Path(path), loader)
        source = "lm_eval:" + ",".join(sorted(own_files))
    elif data_dir is not None:
        overrides.update(_split_files(cfg, task.name, data_dir, task.num_fewshot, builtin_folder))
        for path in overrides["dataset_kwargs"]["data_files"].values():
            _check_data_file(task.name, Path(path), "json")
        source = "lm_eval:" + ",".join(sorted(overrides["dataset_kwargs"]["data_files"].values()))
    else:
        source = f"lm_eval:hub:{cfg.get('dataset_path')}/{cfg.get('dataset_name') or ''}"
        offline = cfg.get("dataset_path") not in LOCAL_LOADERS and hub_offline()
    with captured_library_output():  # datasets' and lm-eval's progress bars and INFO lines
        with hub_offline_mode() if offline else contextlib.nullcontext():
            lm_task = _build(tm, task, overrides, local=data_dir is not None or cfg.get("dataset_path") in LOCAL_LOADERS)
        lm_task.set_config(key="num_fewshot", value=task.num_fewshot)
        lm_task.set_fewshot_seed(seed=task.fewshot_seed)  # as simple_evaluate does, once per task
        if task.num_fewshot > 0:
            # lm-eval draws K + 1 when the question itself may be among them (then drops it)
            needed = task.num_fewshot + (lm_task.fewshot_cfg.split == lm_task.config.test_split)
            pool = len(lm_task.sampler.df)
            if pool < needed:
                raise QuantconfError(f"task {task.name}: num_fewshot {task.num_fewshot} needs {needed} examples in "
                                     f"its few-shot split, which has {pool}", param="num_fewshot")
        lm_task.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for inst in lm_task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    questions, record = [], []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda i: i.idx)
        doc = insts[0].doc
        questions.append(ITEM_FROM_INSTANCES[kind.name](lm_task, task, doc_id, doc, [i.arguments for i in insts]))
        record.append([doc, [list(i.arguments) for i in insts]])
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    firsts = {d: insts[0] for d, insts in by_doc.items()}
    grade = _grader(lm_task, firsts, set(split_metrics(cfg)[1])) if kind.graded_after_run else None
    answer_key = _answer_keyer(lm_task, firsts) if kind.graded_after_run else None
    return questions, source, digest, grade, answer_key


def _answer_keyer(lm_task, instances: dict):
    """For a task graded by exact match: (prompts, generations) -> each answer as its exact_match compares it
    (the first filter's response, then the metric's own regexes_to_ignore / ignore_case / ignore_punctuation /
    ignore_numbers, as lm-eval's exact_match_hf_evaluate applies them): two answers with the same key are
    the same answer to the task. None for a task graded otherwise."""
    import copy
    import re
    import string

    entries = [m for m in (lm_task.config.metric_list or []) if isinstance(m, dict) and m.get("metric") == "exact_match"]
    if not entries:
        return None
    options = entries[0]
    filters = list(getattr(lm_task, "_filters", []))[:1]

    def normalise(text: str) -> str:
        for pattern in options.get("regexes_to_ignore") or []:
            text = re.sub(pattern, "", text)
        if options.get("ignore_case"):
            text = text.lower()
        if options.get("ignore_punctuation"):
            text = text.translate(str.maketrans("", "", string.punctuation))
        if options.get("ignore_numbers"):
            text = text.translate(str.maketrans("", "", string.digits))
        return text

    def keys(prompts: list[Prompt], generations: list[str]) -> list[str]:
        insts = []
        for p, text in zip(prompts, generations):
            inst = copy.copy(instances[p.doc_id])
            inst.resps, inst.filtered_resps = [text], {}
            insts.append(inst)
        with captured_library_output():
            for ensemble in filters:
                ensemble.apply(insts)
        out = []
        for inst, text in zip(insts, generations):
            response = next(iter(inst.filtered_resps.values()), text)
            response = response[0] if isinstance(response, (list, tuple)) else response
            out.append(normalise(str(response)))
        return out

    return keys


def _own_data_files(cfg: dict) -> list[str] | None:
    """The local files a YAML task reads itself (dataset_path json/csv/parquet/text with data_files), else None."""
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if cfg.get("dataset_path") not in LOCAL_LOADERS or not files:
        return None
    values = files.values() if isinstance(files, dict) else [files]
    return [str(f) for v in values for f in ([v] if isinstance(v, (str, os.PathLike)) else v)]


def _check_data_file(task_name: str, path: Path, loader: str) -> None:
    """A local data file is there, not empty, and (json) parses: its own error names the file and line,
    where lm-eval's loader would fail as "could not load its documents"."""
    if any(ch in str(path) for ch in "*?[") or "://" in str(path):  # a glob or a remote path: the loader's
        return
    if not path.is_file():
        raise QuantconfError(f"task {task_name}: its data file {path} not found", param="tasks")
    data = path.read_bytes() if loader == "json" else b""  # read once: a task's file can be large
    if path.stat().st_size == 0 or (loader == "json" and not data.strip()):
        raise QuantconfError(f"task {task_name}: its data file {path} is empty", param="tasks")
    if loader != "json":
        return
    if data.lstrip()[:1] == b"[":  # one JSON document (a list of rows), which the json builder reads too
        try:
            json.loads(data)
        except (ValueError, RecursionError) as e:
            raise QuantconfError(f"task {task_name}: {path} is not valid JSON ({str(e)[:120]})", param="tasks") from None
    else:
        read_jsonl(path)  # raises naming file:line


def _prompt(lm_task, task: Task, doc_id: int, doc: dict, arguments: list) -> Prompt:
    """A Prompt from lm-eval's generate_until request for one doc: its context and generation kwargs
    (until as lm-eval's HF backend reads it; the EOS token stops decoding anyway)."""
    where = f"{task.name} doc {doc_id}"
    context, gen_kwargs = arguments[0]
    gen_kwargs = dict(gen_kwargs or {})
    if gen_kwargs.get("do_sample"):
        raise QuantconfError(f"{where}: the task samples (do_sample: true); quantconf decodes greedily")
    until = gen_kwargs.get("until")
    until = [until] if isinstance(until, str) else list(until or [])
    max_gen_toks = int(gen_kwargs.get("max_gen_toks", 256))
    if not isinstance(context, str) or not context:
        raise QuantconfError(f"{where}: empty prompt")
    target = lm_task.doc_to_target(doc)
    if isinstance(target, list):
        target = " | ".join(map(str, target))
    target = str(target)
    if not target.strip() and isinstance(doc.get("best_answer"), str):  # truthfulqa_gen's target is " "
        target = doc["best_answer"]
    question = doc.get("question") if isinstance(doc.get("question"), str) else context
    return Prompt(doc_id, context, tuple(until), max_gen_toks, target, question, doc)


def _grader(lm_task, instances: dict, corpus: set[str]):
    """lm-eval's grading of generations: its filters on the responses, then process_results per filter
    (the `corpus`-level metrics' per-answer items are not scores, and are left out). A task scored by a
    function with a checked faster equal (lm_eval_graders: truthfulqa_gen's ROUGE without its
    1,000-fold bootstrap of one value) is scored by that equal."""
    fast = fast_process_results(getattr(lm_task.config, "process_results", None))
    process_results = fast or lm_task.process_results

    def grade(prompts: list[Prompt], generations: list[str]) -> list[dict]:
        insts = [instances[p.doc_id] for p in prompts]
        for inst, text in zip(insts, generations):
            inst.resps = [text]
            inst.filtered_resps = {}
        with captured_library_output():
            for ensemble in getattr(lm_task, "_filters", []):
                ensemble.apply(insts)
            rows = []
            for inst in insts:
                row: dict = {}
                for j, (key, response) in enumerate(inst.filtered_resps.items() or [("none", inst.resps[0])]):
                    for metric, value in process_results(inst.doc, [response]).items():
                        if metric not in corpus:
                            row[metric if j == 0 else f"{metric},{key}"] = value
                rows.append(row)
        return rows

    return grade


LOCAL_LOADERS = ("json", "csv", "parquet", "text")  # a YAML task's dataset_path that reads local files


def _build(tm, task: Task, overrides: dict, local: bool = False):
    entry = tm.task_index[task.lm_eval]
    try:
        return tm._factory.build(entry, overrides=overrides, registry=tm.task_index)
    except Exception as e:  # offline hub access, a malformed file, ...: one line naming the fix
        first = str(e).splitlines()[0][:200] if str(e) else ""
        fix = ("its data files were read, so check the task's doc_to_text / doc_to_choice / doc_to_target "
               "against their fields" if local else
               "offline, pass --data-dir DIR with DIR/<dataset_path>/<dataset_name>/<split>.jsonl")
        raise QuantconfError(f"task {task.name}: lm-eval could not load its documents ({type(e).__name__}: {first}); "
                             f"{fix}") from None


def _scored_subset(lm_task, task_name: str, doc: dict, n_choices: int, where: str) -> list[int]:
    """The true answers of a multiple-choice task scored by its own `process_results`, found by that function.

    quantconf scores a several-true-answers question as lm-eval's truthfulqa_mc2 does: the probability mass
    on the true choices. A task's own scorer is accepted when, on this doc, it *is* that mass on some set of
    choices: each choice is probed alone (log-likelihood 0, the others -50: a true one scores 1, a false one
    0), then a random log-likelihood vector must score the mass on the set found. Anything else (likelihood
    differences, several metrics, a corpus score) is refused by name: reading its `doc_to_target` as a gold
    index gave wrong numbers with exit 0 (lm_eval:truthfulqa_mc2's gold was 0 for every question)."""
    import numpy as np

    scorer = lm_task.config.process_results
    own = getattr(scorer, "__name__", str(scorer))

    def refuse(why: str) -> QuantconfError:
        return QuantconfError(f"task {task_name} is scored by its own process_results ({own}), which is not the "
                              f"probability mass on a set of its choices ({where}: {why}); quantconf cannot score "
                              "it as lm-eval does", param="tasks")

    def score(loglik) -> float:
        try:
            out = lm_task.process_results(doc, [(float(v), False) for v in loglik])
        except Exception as e:  # noqa: BLE001 - any failure of the user's scorer means "not a mass"
            raise refuse(f"it raised {type(e).__name__} on probe log-likelihoods") from None
        if not isinstance(out, dict) or len(out) != 1:
            raise refuse(f"it returns {sorted(out) if isinstance(out, dict) else type(out).__name__}, not one score")
        value = next(iter(out.values()))
        try:
            return float(value)
        except (TypeError, ValueError):
            raise refuse(f"its score {value!r} is not a number") from None

    true = []
    for j in range(n_choices):
        alone = np.full(n_choices, -50.0)
        alone[j] = 0.0
        value = score(alone)
        if abs(value - 1.0) > 1e-9 and abs(value) > 1e-9:
            raise refuse(f"choice {j} alone scores {value:.6g}, neither 0 nor 1")
        if value > 0.5:
            true.append(j)
    if not true:
        raise refuse("no choice is true")
    probe = np.random.default_rng(n_choices).uniform(-6.0, 0.0, n_choices)
    p = np.exp(probe - probe.max())
    expected = float(p[true].sum() / p.sum())
    if abs(score(probe) - expected) > 1e-9:
        raise refuse(f"on random log-likelihoods it scores {score(probe):.6g}, not the mass {expected:.6g} on "
                     f"choices {true}")
    return true


def _question(lm_task, task: Task, doc_id: int, doc: dict, pairs: list[tuple[str, str]]) -> Question:
    """A Question from lm-eval's requests for one doc, with the gold label as its process_results finds it."""
    where = f"{task.name} doc {doc_id}"
    choices = list(lm_task.doc_to_choice(doc))
    pairs = pairs[:len(choices)]  # acc_mutual_info appends unconditional requests after the choices
    if len(pairs) != len(choices):
        raise QuantconfError(f"{where}: {len(pairs)} requests for {len(choices)} choices")
    delim = task.target_delimiter
    gold = lm_task.doc_to_text(doc) if lm_task.multiple_input else lm_task.doc_to_target(doc)
    if callable(getattr(lm_task.config, "process_results", None)):
        gold = _scored_subset(lm_task, task.name, doc, len(choices), where)
    elif isinstance(gold, str):
        if gold not in choices:
            raise QuantconfError(f"{where}: target {gold!r} is not one of the choices")
        gold = choices.index(gold)
    try:
        gold = [int(g) for g in gold] if isinstance(gold, list) else int(gold)
    except (TypeError, ValueError):
        raise QuantconfError(f"{where}: target {gold!r} is neither a choice nor an index") from None
    check_gold(gold, len(choices), where)
    contexts = [ctx for ctx, _ in pairs]
    if lm_task.multiple_input:
        continuation = pairs[0][1]
        if any(cont != continuation for _, cont in pairs) or not continuation.startswith(delim):
            raise QuantconfError(f"{where}: multiple-input requests do not share one continuation")
        return Question(doc_id, os.path.commonprefix(contexts), choices, gold, contexts=tuple(contexts),
                        continuation=continuation[len(delim):])
    if any(ctx != contexts[0] for ctx in contexts) or any(cont != delim + c for (_, cont), c in zip(pairs, choices)):
        raise QuantconfError(f"{where}: lm-eval's requests are not (context, delimiter + choice) pairs")
    return Question(doc_id, contexts[0], choices, gold)


# how lm-eval's request instances of one document become an item, per task kind
ITEM_FROM_INSTANCES = {"multiple_choice": _question, "generation": _prompt}
