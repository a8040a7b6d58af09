"""The package's shape, as the README's layout section states it: layers that import only
downwards, no import circle, every module importable on its own, small modules, and a
command line that starts without torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mpqsearch"
MAX_LINES = 400


def _layers() -> dict[str, int]:
    """Part (a top-level module or subpackage of mpqsearch) -> layer, from the README's table."""
    section = ROOT.joinpath("README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*(\d+)\s*\|(.*?)\|", line)
        if match:
            for part in re.findall(r"`([\w_]+)(?:\.py|/)`", match.group(2)):
                layers[part] = int(match.group(1))
    return layers


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path) -> set[str]:
    """The mpqsearch modules ``name`` imports, anywhere in it but under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mpqsearch")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("mpqsearch"):
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    modules = _modules()
    return {m for m in found if m in modules and m != name}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


LAYERS = _layers()
MODULES = _modules()


def test_the_readme_layout_names_every_part_of_the_package():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()}
    assert set(LAYERS) == parts


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [(name, imported) for name, path in MODULES.items() if _part(name) in LAYERS
              for imported in _imports(name, path)
              if _part(imported) in LAYERS and LAYERS[_part(imported)] > LAYERS[_part(name)]]
    assert upward == []


def test_no_import_circle():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return trail + [node, child]
            if child not in state and (circle := visit(child, trail + [node])):
                return circle
        state[node] = 2
        return None

    circles = [circle for name in sorted(graph) if name not in state and (circle := visit(name, []))]
    assert circles == []


_IMPORT_EACH = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "mpqsearch" or m.startswith("mpqsearch.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().splitlines()[-1])
print("\\n".join(failed))
"""


def test_every_module_imports_on_its_own():
    """Each module first in a fresh namespace (one process; torch stays loaded): an import circle
    that only a particular import order hides fails here."""
    names = [n for n in MODULES if not n.endswith("__main__")]
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.strip() == ""


def test_no_module_is_over_the_limit():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_command_line_starts_without_torch_onnx_or_nni():
    code = ("import sys; from mpqsearch.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'nni') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"
