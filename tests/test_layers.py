"""The package's folders are its layers: no module imports from a layer above its own."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import vecpress

SRC = Path(vecpress.__file__).parent
#: bottom to top; a module of layer i imports only from layers 0..i
LAYERS = (
    "base", "codecs", "files", "archive", "migrate", "search", "advisor", "collection",
    "distributed", "integrations", "service", "cli", "package",
)  # fmt: skip
BASE = {
    "_version",
    "errors",
    "_validation",
    "container",
    "checksum",
    "atomic",
    "threads",
    "rwlock",
    "kernels",
    "kernel_cache",
}


def layer_of(module: str) -> int:
    """The layer of a dotted module name of vecpress."""
    parts = module.split(".")
    if parts == ["vecpress"]:
        return LAYERS.index("package")
    top = parts[1]
    if top in BASE:
        return LAYERS.index("base")
    if top in LAYERS:
        return LAYERS.index(top)
    raise AssertionError(f"module {module} is in no layer: add it to one")


def modules() -> list[str]:
    return ["vecpress", *(m.name for m in pkgutil.walk_packages([str(SRC)], prefix="vecpress."))]


def source_of(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    path = SRC / rel
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(module: str, text: str | None = None) -> list[tuple[int, str]]:
    """``(line, imported vecpress module)`` of every import in the module (its source, or
    ``text``), function-level (deferred) imports included."""
    path = source_of(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    tree = ast.parse(path.read_text() if text is None else text)
    typing_only = {  # imports under "if TYPE_CHECKING:" never run
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("vecpress")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("vecpress"):
                target = node.module
            else:
                continue
            # "from . import x": x may be a module of the package
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if source_exists(sub) else target))
    return out


def source_exists(module: str) -> bool:
    path = SRC / Path(*module.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").exists()


def test_every_module_is_in_a_layer():
    for m in modules():
        layer_of(m)


@pytest.mark.parametrize("module", modules())
def test_no_module_imports_upwards(module):
    found = upward(module)
    assert not found, f"{module} ({LAYERS[layer_of(module)]}) imports from above: {found}"


def upward(module: str, text: str | None = None) -> list[str]:
    mine = layer_of(module)
    return [
        f"line {line}: {target} ({LAYERS[layer_of(target)]})"
        for line, target in imports_of(module, text)
        if layer_of(target) > mine
    ]


def test_the_checker_sees_an_upward_import():
    """The check is not vacuous: storage importing the index, at once or deferred, or the
    package itself, is caught; the index importing storage is not."""
    for text in (
        "from ..search.index import Index\n",
        "def f():\n    from ..search import index\n",
        "import vecpress.search.index\n",
        "from .. import __version__\n",
    ):
        assert upward("vecpress.files.storage", text), text
    assert not upward("vecpress.search.index", "from ..files import storage\n")


def test_public_names_stay_importable_from_the_package():
    for name in vecpress.__all__:
        assert hasattr(vecpress, name), name
    assert {"Codec", "Index", "open", "info", "FormatError", "set_num_threads"} <= set(
        vecpress.__all__
    )


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return [*stack[stack.index(v) :], v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    """No two modules import each other, directly or through others (deferred imports
    count; imports for type checking only do not)."""
    known = set(modules())

    def resolve(target: str) -> str:
        while target not in known:
            target = target.rsplit(".", 1)[0]
        return target

    graph = {m: {resolve(t) for _, t in imports_of(m)} - {m, "vecpress"} for m in known}
    assert _cycle(graph) is None, _cycle(graph)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
