"""The house's floors, read from the source: the organism is a leaf that imports nothing of the analysis side, and
no module of llavamech imports, at the top or inside a function, a module that imports it back (no circle)."""
import ast
import subprocess
import sys
from pathlib import Path

import llavamech

PACKAGE = Path(llavamech.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The llavamech modules `path` imports anywhere in its body: `from .x import y` names x, or x.y where y is a
    module itself (`from . import patches`)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if not target.startswith("llavamech"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() or \
                    (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                out.add(sub if is_module else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("llavamech")}
    return out - {module_name(path)}


GRAPH = {module_name(p): imported(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_graph_is_read_from_every_module():
    assert {"llavamech.patches", "llavamech.explain", "llavamech.organism.recipe"} <= GRAPH.keys()
    assert "llavamech.explain" in GRAPH["llavamech.patches"]
    assert "llavamech.organism.recipe" in GRAPH["llavamech.cli"]   # a function-local import counts too


def test_the_organism_imports_nothing_of_the_analysis_side():
    for name, targets in GRAPH.items():
        if name.startswith("llavamech.organism"):
            outside = {t for t in targets if not t.startswith("llavamech.organism")} - {"llavamech.paths"}
            assert not outside, f"{name} imports {outside}"


def test_no_module_imports_one_that_imports_it_back():
    # the package itself re-exports load(); modules reach each other directly, never through it
    graph = {name: {t for t in targets if t != "llavamech"} for name, targets in GRAPH.items() if name != "llavamech"}
    state: dict[str, int] = {}

    def visit(name, path):
        state[name] = 1
        for target in graph.get(name, ()):
            assert state.get(target) != 1, "import circle: " + " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_the_command_line_starts_without_torch():
    # `llavamech --help` and a refused argument answer at once: torch and transformers load inside a command
    code = "import sys, llavamech.cli; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
