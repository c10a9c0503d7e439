"""The package's shape: no import cycles (imports inside functions included), every module says its job,
and modules of the package import each other at the top."""

import ast
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "quantconf"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The package module an imported name refers to (a module, or the module defining an attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(mod: str) -> tuple[set[str], list[str]]:
    """(quantconf modules `mod` imports anywhere in its file, those imported inside functions)."""
    tree = ast.parse(MODULES[mod].read_text())
    found, nested = set(), []
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            target = resolve(n) if n.startswith("quantconf") else None
            if target and target != mod:
                found.add(target)
                if id(node) in in_function:
                    nested.append(target)
    # registries import every module of their package by name (pkgutil): count those edges too
    if "pkgutil.iter_modules" in MODULES[mod].read_text():
        found |= {m for m in MODULES if m.rpartition(".")[0] == mod and not m.endswith((".base", ".registry"))}
    return found, nested


def test_no_import_cycles():
    graph = {m: imports_of(m)[0] for m in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_package_modules_are_imported_at_the_top():
    nested = {m: imports_of(m)[1] for m in MODULES}
    assert {m: n for m, n in nested.items() if n} == {}


def test_every_module_has_a_docstring_saying_its_job():
    for name, path in MODULES.items():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.split()) >= 5, f"{name} needs a docstring that says its one job"


def test_the_cycle_check_can_fail(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other inside functions are a cycle."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text('"""a."""\ndef f():\n    from quantconf.b import g\n')
    b.write_text('"""b."""\nfrom quantconf.a import f\n')
    monkeypatch.setitem(MODULES, "quantconf.a", a)
    monkeypatch.setitem(MODULES, "quantconf.b", b)
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
    assert imports_of("quantconf.a") == ({"quantconf.b"}, ["quantconf.b"])


def test_module_map_in_the_docs_names_every_module():
    """docs/architecture.md's module table cannot drift: every module of the package is in it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(root / "src" / "quantconf")) for p in sorted((root / "src" / "quantconf").rglob("*.py"))
               if p.name not in page and str(p.relative_to(root / "src" / "quantconf")) not in page]
    assert missing == []


def test_layers():
    """analysis/ is pure (quantconf.errors, the measures registry and itself; no torch, models or studies); only study/, the API
    and the CLI import study/; nobody imports the CLI; a study's results and report only read what its steps
    computed (they import nothing from analysis/)."""
    graph = {m: imports_of(m)[0] for m in MODULES}
    for mod, deps in graph.items():
        if mod.startswith("quantconf.analysis"):
            assert deps <= {"quantconf.errors", "quantconf.metric_registry"} | {m for m in MODULES if
                                                                   m.startswith("quantconf.analysis")}, mod
            tree = ast.parse(MODULES[mod].read_text())
            third_party = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            third_party |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not third_party & {"torch", "transformers"}, mod
        if not mod.startswith(("quantconf.study", "quantconf.api", "quantconf.cli")) and mod != "quantconf":
            assert not any(d.startswith("quantconf.study") for d in deps), mod
        assert "quantconf.cli" not in deps, mod
        if mod in ("quantconf.study.results", "quantconf.study.tables", "quantconf.study.report"):
            assert not any(d.startswith("quantconf.analysis") for d in deps), mod


def parameter_counts() -> dict[str, int]:
    """{module.function: number of parameters} of every function of the package (self/cls excluded)."""
    counts = {}
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs] + \
                    [p.arg for p in (a.vararg, a.kwarg) if p]
                counts[f"{mod}.{node.name}"] = len([p for p in params if p not in ("self", "cls")])
    return counts


def test_no_internal_function_takes_more_than_ten_parameters():
    """Options travel as objects inside (LoadOptions, TaskOptions, EvalOptions, a Study); only the
    public API (quantconf.api, flat keyword arguments as lm-eval's simple_evaluate) may take more."""
    too_many = {f: n for f, n in parameter_counts().items() if n > 10 and not f.startswith("quantconf.api.")}
    assert too_many == {}


def test_the_parameter_count_sees_every_kind_of_parameter(tmp_path, monkeypatch):
    f = tmp_path / "f.py"
    f.write_text('"""f."""\ndef g(a, /, b, *c, d, e=1, **f):\n    pass\nclass K:\n    def m(self, x):\n        pass\n')
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {"quantconf.f": f})
    assert parameter_counts() == {"quantconf.f.g": 6, "quantconf.f.m": 1}


def test_one_function_writes_the_predictions_manifest(tmp_path):
    """Three modules wrote the manifest, with two meanings of `file` (an imported task's was its source path, so
    `intact` checked the source file) and one without the lock: now `predictions.record_tasks` alone does."""
    writers = [mod for mod, path in MODULES.items()
               if "MANIFEST" in path.read_text() and "atomic_write_json(" in path.read_text()
               and mod != "quantconf.predictions"]
    assert writers == []
    from quantconf.importers.lm_eval_files import import_lm_eval
    from quantconf.predictions import intact, read_manifest

    fixture = Path(__file__).parent / "fixtures" / "lm_eval_03"
    import_lm_eval([fixture / "piqa_write_out_info.json"], tmp_path / "out", data_dir=fixture / "data")
    entry = read_manifest(tmp_path / "out")["tasks"]["piqa"]
    assert entry["file"] == "piqa.parquet" and entry["source"] == str(fixture / "piqa_write_out_info.json")
    assert intact(tmp_path / "out", entry) and len(entry["sha256"]) == 64


SOURCE_REF = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.py|(?:src|tests|docs|benchmarks|examples)/[\w./-]+\.\w+)\b")


def _build_output(root, ref):
    """True for a path git ignores (a build output such as docs/_build/html/index.html)."""
    import subprocess

    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", ref], cwd=root, capture_output=True)
    return done.returncode == 0


def test_every_source_path_named_in_the_docs_and_docstrings_exists():
    """Docs and docstrings named modules that had moved (docs/studies.md named the study package as one module). Every
    `.py` file, and every path under src/ tests/ docs/ benchmarks/ examples/, named in the README, docs/*.md,
    or a docstring or comment of the package, tests and benchmarks resolves (from the repository root, src/,
    src/quantconf/, or the naming file's folder); a bare module file name exists somewhere in the repository;
    lm_eval/... paths are lm-eval's own files."""
    root = SRC.parent
    texts = {p: p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]}
    for p in [*MODULES.values(), *sorted((root / "tests").glob("*.py")), *sorted((root / "benchmarks").glob("*.py"))]:
        tree = ast.parse(p.read_text())
        nodes = (n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                                                ast.AsyncFunctionDef)))
        comments = [line.split("#", 1)[1] for line in p.read_text().splitlines() if "#" in line]
        texts[p] = "\n".join([ast.get_docstring(n) or "" for n in nodes] + comments)
    import lm_eval

    names = {q.name for q in root.rglob("*.py") if ".venv" not in q.parts}
    missing = []
    for p, text in texts.items():
        for ref in {m.group(1) for m in SOURCE_REF.finditer(text)}:
            if ref.startswith("lm_eval/"):
                found = (Path(lm_eval.__file__).parents[1] / ref).exists()
            elif _build_output(root, ref):
                continue  # made by a make target (docs/_build/...): absent from a clean clone, by design
            elif "/" in ref:
                found = any((base / ref).exists() for base in (root, SRC, PACKAGE, p.parent))
            else:
                found = ref in names
            if not found:
                missing.append(f"{p.relative_to(root)}: {ref}")
    assert not missing, missing


KIND_WORDS = {"generation", "multiple_choice", "generate_until"}
KIND_CAPABILITIES = {"graded_after_run", "has_choice_distribution", "generates", "is_generation", "is_generation_frame",
                     "_is_generation_sample"}


def kind_branches(tree: ast.AST) -> list[int]:
    """Lines of the conditions (if, conditional expressions, comprehension filters) that decide by the task kind:
    a comparison with a kind's name, a `"generation" in ...` column test, or a kind capability flag."""
    tests = [n.test for n in ast.walk(tree) if isinstance(n, (ast.If, ast.IfExp, ast.While))]
    tests += [t for n in ast.walk(tree) if isinstance(n, ast.comprehension) for t in n.ifs]
    lines = []
    for test in tests:
        for n in ast.walk(test):
            word = n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None
            flag = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else None
            if word in KIND_WORDS or flag in KIND_CAPABILITIES:
                lines.append(test.lineno)
                break
    return lines


def test_only_the_kinds_package_branches_on_the_task_kind():
    """Multiple choice or generation is asked of a kind object (`kinds/`); outside it at most 6 conditions decide by
    the kind (issue 35's bar; there were 36 in 11 modules, five different ways, one of them a column that happened to
    be all empty)."""
    found = {f"{name}:{line}" for name, path in MODULES.items() if not name.startswith("quantconf.kinds")
             for line in kind_branches(ast.parse(path.read_text()))}
    assert len(found) <= 6, sorted(found)


def test_the_kind_branch_counter_can_fail():
    code = ('if "generation" in df.columns:\n    pass\nx = 1 if kind.graded_after_run else 2\n'
            'y = [a for a in b if a.name == "multiple_choice"]\nz = 1 if df.empty else 2\n')
    assert kind_branches(ast.parse(code)) == [1, 3, 4]
