"""The package's import structure: no cycle and no upward arrow between its layers.

Every ``import`` and ``from … import`` of ``open_magvit2`` in ``src/`` counts, at module level or inside a function
(a lazy import is an arrow all the same), except under ``if TYPE_CHECKING:``. Importing ``a.b.c`` also runs the
``__init__`` of the package ``a.b``, so that counts as an arrow to ``a.b`` too, unless the importer sits inside
``a.b`` (siblings re-entering their own package is how Python packages work) or ``a.b`` is the root facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "open_magvit2"
ROOT = "open_magvit2"

# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    ("device", "fileio", "progress", "precision", "errors", "weight_files", "cpu_memory"),
    ("imaging", "distributed", "lpips_net"),  # lpips_net: the LPIPS network of the loss and of the metrics
    ("quantize",),
    ("checkpoints",),
    ("tokenizer",),
    ("generator",),
    ("registry", "drawing"),  # model_type → class and load_pretrained; pictures of what a tokenizer does
    ("export_onnx",),  # the tokenizers as ONNX graphs (the onnx extra)
    ("data",),
    ("losses",),
    ("eval",),
    ("train",),
    ("demo",),  # the demo models' data, recipes and the `demo` command: above the trainers
    ("web",),  # the local web app of `serve` (the web extra): over the library and the demo helpers
    ("",),  # the package root: the public facade
    ("cli", "__main__"),  # entry points
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (directly, in any scope)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            targets.update(r for n in names if n.startswith(ROOT) and (r := resolve(n)) and r != m)
        graph[m] = targets
    return graph


def _with_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    def packages(t: str) -> list[str]:
        parts = t.split(".")
        return [".".join(parts[:i]) for i in range(2, len(parts))]

    def own(m: str) -> set[str]:
        parts = m.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}

    return {m: e | {p for t in e for p in packages(t) if p in graph and p not in own(m)} for m, e in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def layer(module: str) -> int | None:
    rel = module[len(ROOT) :].lstrip(".")
    best: tuple[int, int] | None = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (rel == n or (n and rel.startswith(n + "."))) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    assert [m for m in _modules() if layer(m) is None] == []


def test_no_import_points_up():
    graph = import_graph()
    up = [f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer(t) > layer(m)]
    assert up == []


def test_no_cycles():
    assert [sorted(c) for c in _cycles(_with_packages(import_graph()))] == []


def test_every_package_lies_in_one_layer():
    """No exceptions: a package's modules share its layer (a lower sub-module would be a hidden layer)."""
    split = [n for names in LAYERS for n in names if "." in n]
    assert split == []


def test_the_checker_finds_a_cycle_and_an_upward_arrow():
    graph = {"open_magvit2.a": {"open_magvit2.b"}, "open_magvit2.b": {"open_magvit2.c"},
             "open_magvit2.c": {"open_magvit2.a"}, "open_magvit2.d": set()}
    assert _cycles(graph) == [{"open_magvit2.a", "open_magvit2.b", "open_magvit2.c"}]
    assert layer("open_magvit2.imaging") < layer("open_magvit2") < layer("open_magvit2.cli.tokenizer")
    assert layer("open_magvit2.lpips_net") < layer("open_magvit2.losses.gan") < layer("open_magvit2.eval.backbones")
