"""Studies: models x quantization variants x tasks, content-addressed and resumable.

Config (YAML):
    name: demo
    models: [default]                 # several sizes of one family give a scale trend
    variants:                         # each field may be a list: the cross product is run
      - {method: gptq, bits: 4, group_size: 128, calib: [pydoc, random], n_samples: 16, seed: 0}
      - {method: rtn, bits: 4, group_size: 64}
    tasks: [piqa, arc_easy]
    limit: 100                        # questions per task (null: all)
    data_dir: ../shared/data          # null: $QUANTCONF_DATA_DIR, else the hub
    batch_size: 16
    threads: null
    seed: 1234                        # data seed (generated tasks)
    ppl_text: null                    # e.g. pydoc or file:PATH: held-out perplexity of every model/variant
    ppl_tokens: 4096                  #   tokens of that text (windows of 512, stride 256)
    outliers: false                   # true: activation-outlier stats of each calibration set (full model)
    outlier_samples: 8

Layout of STUDY_DIR: `steps/quant-<key>/` (checkpoints), `steps/eval-<key>/` (predictions), and
the report files. A step's key hashes everything that determines its output (model weights hash,
quantization config, calibration set, tasks' data, code version), so re-running a killed study
recomputes only missing steps, and editing the config reuses what still applies.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from quantconf import QuantconfError, __version__
from quantconf.quantize import QuantConfig

STUDY_KEYS = {"name", "models", "variants", "tasks", "limit", "data_dir", "batch_size", "threads", "seed", "dtype",
              "bootstrap", "bins", "ppl_text", "ppl_tokens", "outliers", "outlier_samples"}


@dataclass
class Study:
    name: str
    models: list[str]
    variants: list[QuantConfig]
    tasks: list[str]
    limit: int | None = 100
    data_dir: str | None = None
    batch_size: int = 16
    threads: int | None = None
    seed: int = 1234
    dtype: str = "float32"
    bootstrap: int = 1000
    bins: int = 15
    ppl_text: str | None = None
    ppl_tokens: int = 4096
    outliers: bool = False
    outlier_samples: int = 8


def expand_variant(spec: dict) -> list[QuantConfig]:
    allowed = {f.name for f in fields(QuantConfig)}
    unknown = set(spec) - allowed
    if unknown:
        raise QuantconfError(f"unknown variant field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    keys = list(spec)
    values = [v if isinstance(v, list) else [v] for v in spec.values()]
    out = []
    for combo in itertools.product(*values):
        cfg = QuantConfig(**dict(zip(keys, combo)))
        cfg.validate()
        out.append(cfg)
    return out


def load_study(path: Path | None = None, data: dict | None = None) -> Study:
    if data is None:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise QuantconfError(f"study config {path} not found") from None
        except yaml.YAMLError as e:
            raise QuantconfError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise QuantconfError("study config must be a mapping with models, variants and tasks")
    unknown = set(data) - STUDY_KEYS
    if unknown:
        raise QuantconfError(f"unknown study field(s) {sorted(unknown)}; allowed: {sorted(STUDY_KEYS)}")
    for key in ("models", "variants", "tasks"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise QuantconfError(f"study config needs a non-empty list `{key}`")
    from quantconf.tasks import get_task

    for t in data["tasks"]:
        get_task(t)
    variants = [v for spec in data["variants"] for v in expand_variant(spec)]
    limit = data.get("limit", 100)
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise QuantconfError(f"study limit must be a positive integer or null, got {limit!r}")
    return Study(name=str(data.get("name", "study")), models=[str(m) for m in data["models"]], variants=variants,
                 tasks=list(data["tasks"]), limit=limit, data_dir=data.get("data_dir"),
                 batch_size=int(data.get("batch_size", 16)), threads=data.get("threads"),
                 seed=int(data.get("seed", 1234)), dtype=data.get("dtype", "float32"),
                 bootstrap=int(data.get("bootstrap", 1000)), bins=int(data.get("bins", 15)),
                 ppl_text=data.get("ppl_text"), ppl_tokens=int(data.get("ppl_tokens", 4096)),
                 outliers=bool(data.get("outliers", False)), outlier_samples=int(data.get("outlier_samples", 8)))


@dataclass
class Step:
    kind: str  # "quantize" | "eval" | "ppl" | "outliers"
    model: str  # base model spec
    variant: QuantConfig | None
    path: Path

    def done(self) -> bool:
        if self.kind == "quantize":
            return (self.path / "quantize.json").is_file()
        if self.kind == "ppl":
            return self.path.is_file()
        if self.kind == "outliers":
            return (self.path / "outliers.json").is_file()
        from quantconf.predictions import read_manifest

        return bool(self.path.is_dir() and read_manifest(self.path).get("tasks"))

    def describe(self) -> str:
        what = self.variant.label() if self.variant else "full"
        return f"{self.kind:<8} {self.model} {what} -> {self.path}"


def outlier_sets(study: Study) -> list[str]:
    """The calibration sets whose activation statistics a study compares (RTN uses none)."""
    return sorted({v.calib for v in study.variants if v.method != "rtn"})


def plan(study: Study, study_dir: Path) -> list[Step]:
    from quantconf.models import model_fingerprint
    from quantconf.predictions import stable_hash

    steps = []
    for model in study.models:
        fp = model_fingerprint(model)
        eval_common = [study.tasks, study.limit, study.data_dir, study.seed, study.dtype, __version__]
        steps.append(Step("eval", model, None, study_dir / "steps" / f"eval-{stable_hash([fp, eval_common])[:16]}"))
        for v in study.variants:
            qkey = stable_hash([fp, asdict(v), study.data_dir, __version__])[:16]
            qpath = study_dir / "steps" / f"quant-{qkey}"
            steps.append(Step("quantize", model, v, qpath))
            steps.append(Step("eval", model, v, study_dir / "steps" / f"eval-{stable_hash([qkey, eval_common])[:16]}"))
            if study.ppl_text:
                pkey = stable_hash([qkey, study.ppl_text, study.ppl_tokens, __version__])[:16]
                steps.append(Step("ppl", model, v, study_dir / "steps" / f"ppl-{pkey}.json"))
        if study.ppl_text:
            pkey = stable_hash([fp, study.ppl_text, study.ppl_tokens, __version__])[:16]
            steps.append(Step("ppl", model, None, study_dir / "steps" / f"ppl-{pkey}.json"))
        if study.outliers:
            okey = stable_hash([fp, outlier_sets(study), study.outlier_samples, study.data_dir, __version__])[:16]
            steps.append(Step("outliers", model, None, study_dir / "steps" / f"outliers-{okey}"))
    return steps


def perplexity_step(target: str, study: Study, path: Path) -> None:
    from quantconf.models import load_model, set_threads
    from quantconf.outliers import perplexity
    from quantconf.predictions import atomic_write_json
    from quantconf.quantize.calibration import calibration_text

    set_threads(study.threads)
    lm = load_model(target, dtype=study.dtype)
    text, source = calibration_text(study.ppl_text, study.seed, study.data_dir)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][: study.ppl_tokens]
    ppl = perplexity(lm.model, ids, window=512, stride=256)
    atomic_write_json(path, {"text": study.ppl_text, "source": source, "tokens": len(ids), "window": 512,
                             "stride": 256, "perplexity": ppl})


def run_study(study: Study, study_dir: Path, dry_run: bool = False, log=print) -> Path | None:
    from quantconf.quantize import run_quantize
    from quantconf.run_eval import ensure_writable_dir, run_eval

    study_dir = ensure_writable_dir(Path(study_dir))
    steps = plan(study, study_dir)
    if not dry_run:
        from quantconf.predictions import atomic_write_bytes

        data = {**asdict(study), "variants": [asdict(v) for v in study.variants]}
        atomic_write_bytes(study_dir / "study.yaml", yaml.safe_dump(data, sort_keys=False).encode())
    if dry_run:
        for s in steps:
            log(f"[{'done' if s.done() else 'todo'}] {s.describe()}")
        return None
    quant_paths = {}
    for i, s in enumerate(steps, 1):
        label = s.variant.label() if s.variant else "full"
        if s.kind == "quantize":
            quant_paths[(s.model, label)] = s.path
        # eval steps always run: run_eval itself reuses every finished task whose inputs are unchanged
        if s.kind != "eval" and s.done():
            log(f"[{i}/{len(steps)}] {s.kind} {s.model} {label}: done, reusing")
            continue
        log(f"[{i}/{len(steps)}] {s.kind} {s.model} {label}")
        target = str(quant_paths[(s.model, label)]) if s.variant else s.model
        sub_log = lambda m: log(f"    {m}")  # noqa: E731
        if s.kind == "quantize":
            run_quantize(s.model, s.variant, s.path, overwrite=True, threads=study.threads, data_dir=study.data_dir,
                         quiet=True, log=sub_log)
        elif s.kind == "ppl":
            perplexity_step(target, study, s.path)
        elif s.kind == "outliers":
            from quantconf.outliers import run_outliers

            run_outliers(s.model, outlier_sets(study), s.path, n_samples=study.outlier_samples,
                         threads=study.threads, data_dir=study.data_dir, log=sub_log)
        else:
            run_eval(target, study.tasks, s.path, data_dir=study.data_dir, limit=study.limit,
                     batch_size=study.batch_size, dtype=study.dtype, threads=study.threads, seed=study.seed,
                     progress=False, log=sub_log)
    from quantconf.report import write_report

    return write_report(study, study_dir, steps, log=log)


DEMO_TASKS = ["piqa", "arc_easy", "hellaswag", "openbookqa"]
# a source checkout sits beside ../shared/data (the project's layout); an installed package does not
SHARED_DATA_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"


def demo_study(data_dir: str | None = None) -> Study:
    """The built-in study: the default model, GPTQ 4-bit g128 and RTN 4-bit, 4 tasks from local data
    (--data-dir, $QUANTCONF_DATA_DIR, or ../shared/data beside the checkout), else the hub, else the
    generated `arithmetic` task."""
    import os

    from quantconf.tasks import resolve_data_dir

    found = resolve_data_dir(data_dir) if (data_dir or os.environ.get("QUANTCONF_DATA_DIR")) else None
    if found is None:
        found = SHARED_DATA_BESIDE_CHECKOUT if SHARED_DATA_BESIDE_CHECKOUT.is_dir() else None
    tasks = DEMO_TASKS
    if found is None:  # no local data: the hub if it answers, else the generated offline task
        from quantconf.tasks import load_task

        try:
            load_task(DEMO_TASKS[0], limit=1)
        except QuantconfError:
            tasks = ["arithmetic"]
    return load_study(data={
        "name": "demo: SmolLM2-135M-Instruct, GPTQ vs RTN 4-bit",
        "models": ["default"],
        "variants": [
            {"method": "gptq", "bits": 4, "group_size": 128, "calib": "pydoc", "n_samples": 16, "seq_len": 512},
            {"method": "rtn", "bits": 4, "group_size": 64},
        ],
        "tasks": tasks, "limit": 100, "data_dir": str(found) if found else None,
        "batch_size": 16, "bootstrap": 1000,
    })
