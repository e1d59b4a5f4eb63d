"""The package's shape, checked from the source alone (``ast``, nothing imported): no import
cycle between seqbench's modules, counting imports inside functions (a lazy import hides a cycle
from Python but not from a reader), and no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "seqbench"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every seqbench module that ``module`` imports, at any depth of its code:
    ``import seqbench.x``, ``from seqbench.x import y`` (``y`` itself when it is a module,
    e.g. ``from seqbench.report import registry``) and relative imports."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in known else base)
        for target in targets:
            resolved = _resolve(target, known)
            if resolved and resolved != module:
                found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_module_imports():
    graph = import_graph()
    # ``from seqbench.report import registry`` is the module, not the package
    assert "seqbench.report.registry" in graph["seqbench.report.cli"]
    # a function-level import counts (register_resolvers imports cluster inside the function)
    assert "seqbench.launch.cluster" in graph["seqbench.config.paths"]


def test_find_cycle_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_over_400_lines():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_seqbench_train_lends_exactly_the_jobs_public_names():
    """``seqbench.train`` loads the job's names lazily from a list of its own: it must name
    every public name of ``seqbench.job`` (and nothing else), or ``from seqbench.train import
    X`` breaks for one of them."""
    import seqbench.job
    import seqbench.train

    assert set(seqbench.job.__all__) == seqbench.train._FROM_JOB
    for name in seqbench.job.__all__:
        assert getattr(seqbench.train, name) is getattr(seqbench.job, name)


def test_the_report_reads_runs_without_importing_lightning_or_torch():
    """``seqbench-report`` reads the store and heartbeats only: the Lightning side of the
    heartbeat lives apart (``run.heartbeat_callback``), so the report pays no Lightning or torch
    import (several CPU-seconds per call)."""
    import subprocess
    import sys

    probe = (
        "import sys, seqbench.report.cli; print(sorted({'lightning', 'torch'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_seqbench_predict_refuses_a_closed_store_before_importing_torch():
    """A wrong password or a server that is down is refused in about the time MLflow takes to
    ask, not after torch's import (about 6 s on 2 cores; ``seqbench.serving.schema`` says why the
    scoring columns live apart from ``inference``)."""
    import subprocess
    import sys

    from helpers import free_port

    probe = (
        "import sys\n"
        "from seqbench.serving import predict\n"
        f"rc = predict.main(['--model', 'models:/x@champion', '--tracking-uri', "
        f"'http://127.0.0.1:{free_port()}', 'a film'])\n"
        "print(rc, sorted({'lightning', 'torch'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2 []"
    assert "cannot reach the MLflow tracking server" in done.stderr
