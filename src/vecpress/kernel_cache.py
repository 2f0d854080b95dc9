"""When numba's cached machine code of a vecpress kernel is still valid.

numba's ``cache=True`` keeps each compiled function in a cache file and reuses it
while a *stamp* of the function's own source file is unchanged (its contents'
hash in numba >= 0.62, its modification time and size before). A compiled
function also holds what it compiled in from other modules: the kernels it
calls, the intrinsics and ``inline="always"`` helpers it inlines, the module
constants it reads (frozen into the code). When one of those modules changes
and the calling module does not, numba serves the old machine code. Measured
with numba 0.68: a package whose ``a.f`` inlines ``b.g``, upgraded with pip to a
version whose ``b.g`` differs (``a.py`` unchanged), kept returning the old
version's results, because pip leaves numba's cache files beside the modules
and ``a.py``'s hash is the same. An editable install or a ``git pull`` of a
source checkout meets the same case with every edit of a helper module.

:func:`install` gives numba a cache locator for the functions defined in
vecpress's files (:class:`Locator`): the cache files stay where numba's own
locators put them (``NUMBA_CACHE_DIR``, the ``__pycache__`` folder beside the
module, or the user-wide cache), and the stamp is that of the function's module
*and of every vecpress module it imports*, directly or through others
(:func:`source_stamp`; ``from . import x`` counts the package's ``__init__.py``
and the submodule ``x`` where one exists). An edit of ``kernels/bytepairs.py``
thus invalidates the cached code of ``kernels/grid_search.py``, which imports
it, and of nothing that does not. Functions of other packages keep numba's own
locators.

Examples
--------
>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "a.py").write_text("from .b import g\\n")
>>> _ = (root / "b.py").write_text("g = 1\\n")
>>> before = source_stamp(root / "a.py", root)
>>> _ = (root / "b.py").write_text("g = 2\\n")
>>> source_stamp(root / "a.py", root) != before
True
"""

from __future__ import annotations

import functools
import hashlib
import os
import re

from numba.core import caching, config

__all__ = ["Locator", "install", "modules_imported", "source_stamp"]

#: vecpress's package folder (the functions :class:`Locator` takes)
ROOT = os.path.dirname(os.path.abspath(__file__))

# ``from <dots><module> import <names>`` (names possibly in parentheses over lines) and
# ``import <modules>`` at the start of a line; a match inside a docstring only adds a
# module to the stamp, never drops one
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]*(\([^)]*\)|[^\n]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]*)", re.M)


def _module_file(path: str) -> list[str]:
    """The source files a dotted path's folder ``path`` (without suffix) names: the module
    ``path.py``, or the package ``path/__init__.py``."""
    if os.path.isfile(path + ".py"):
        return [path + ".py"]
    init = os.path.join(path, "__init__.py")
    return [init] if os.path.isfile(init) else []


def _names(text: str) -> list[str]:
    """The imported names of ``a, b as c`` or ``(a,\\n b)`` (comments dropped)."""
    text = re.sub(r"#[^\n]*", "", text).strip().strip("()")
    return [part.split()[0] for part in text.split(",") if part.split()]


def _scan(path: str, root: str) -> tuple[bytes, tuple[str, ...]]:
    """The hash of the file at ``path`` and the files under ``root`` it imports
    directly (:func:`modules_imported`)."""
    root = os.path.abspath(root)
    package = os.path.basename(root)
    with open(path, "rb") as f:
        data = f.read()
    source = data.decode("utf-8")
    found: set[str] = set()
    for dots, module, names in _FROM.findall(source):
        if dots:
            base = os.path.dirname(path)
            for _ in range(len(dots) - 1):
                base = os.path.dirname(base)
        elif module == package or module.startswith(package + "."):
            base = os.path.dirname(root)
        else:
            continue
        target = os.path.join(base, *module.split(".")) if module else base
        found.update(_module_file(target))
        if os.path.isdir(target):  # ``from package import name``: name may be a module
            for name in _names(names):
                found.update(_module_file(os.path.join(target, name)))
    for modules in _IMPORT.findall(source):
        for module in _names(modules):
            if module == package or module.startswith(package + "."):
                found.update(_module_file(os.path.join(os.path.dirname(root), *module.split("."))))
    inside = sorted(f for f in found if f.startswith(root + os.sep) and f != path)
    return hashlib.sha256(data).digest(), tuple(inside)


#: :func:`_scan` once per file and process, for :class:`Locator` (numba computes a
#: function's stamp when the function is defined: ~140 times as vecpress is imported)
_scan_once = functools.cache(_scan)


def modules_imported(path, root=ROOT) -> tuple[str, ...]:
    """The source files under ``root`` that the module at ``path`` imports directly
    (relative imports, and absolute ones of the package ``root`` is), sorted.

    Examples
    --------
    >>> import os
    >>> from vecpress import kernel_cache
    >>> here = os.path.join(kernel_cache.ROOT, "kernels", "hadamard.py")
    >>> [os.path.basename(p) for p in kernel_cache.modules_imported(here)]
    ['__init__.py', 'block_rows.py']
    """
    return _scan(os.path.abspath(path), os.path.abspath(root))[1]


def source_stamp(path, root=ROOT, *, scan=_scan) -> str:
    """A hash of the module at ``path`` and of every module under ``root`` it imports,
    directly or through others (:func:`modules_imported`): what a compiled function
    defined in ``path`` may hold. It changes when any of those files' contents do.

    Examples
    --------
    >>> from vecpress import kernel_cache
    >>> len(kernel_cache.source_stamp(kernel_cache.__file__))
    64
    """
    root = os.path.abspath(root)
    start = os.path.abspath(path)
    digests = {}
    todo = [start]
    while todo:
        file = todo.pop()
        if file not in digests:
            digests[file], deps = scan(file, root)
            todo.extend(deps)
    h = hashlib.sha256()
    for file in sorted(digests):
        h.update(os.path.relpath(file, root).encode() + b"\0" + digests[file])
    return h.hexdigest()


@functools.cache
def _stamp_once(path: str, root: str) -> str:
    """:func:`source_stamp` once per file and process, for :class:`Locator` (a module
    defines many compiled functions; they share its stamp)."""
    return source_stamp(path, root, scan=_scan_once)


class Locator:
    """numba's cache locator for the functions defined under :data:`ROOT`: the cache
    folder and names of the locator numba would have chosen (``inner``), the stamp of
    :func:`source_stamp` (module docstring)."""

    def __init__(self, inner, py_file: str, root: str) -> None:
        self._inner = inner
        self._py_file = os.path.abspath(py_file)  # numba names it in a warning
        self._root = root

    @classmethod
    def from_function(cls, py_func, py_file):
        """The locator of ``py_func`` defined in ``py_file``, or None (numba then asks
        its own locators) for a function defined elsewhere."""
        path = os.path.abspath(py_file)
        root = ROOT
        if not (path.startswith(root + os.sep) and os.path.isfile(path)):
            return None
        for other in _impl()._locator_classes:
            if other is cls:
                continue
            inner = other.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner, py_file, root)
        return None

    def ensure_cache_path(self) -> None:
        self._inner.ensure_cache_path()

    def get_cache_path(self) -> str:
        return self._inner.get_cache_path()

    def get_disambiguator(self) -> str:
        return self._inner.get_disambiguator()

    def get_source_stamp(self) -> str:
        return _stamp_once(self._py_file, self._root)


def _impl():
    """numba's cache implementation class (named ``CacheImpl`` from numba 0.62,
    ``_CacheImpl`` before)."""
    return getattr(caching, "CacheImpl", None) or caching._CacheImpl


def install() -> None:
    """Put :class:`Locator` first among numba's cache locators (once; it declines the
    functions of other packages). It must run before vecpress's kernels are defined:
    importing this module runs it, and ``vecpress/__init__.py`` imports it first.
    Where ``NUMBA_CACHE_LOCATOR_CLASSES`` names the locators (numba >= 0.62), it is put
    first in that list too."""
    classes = _impl()._locator_classes
    if Locator not in classes:
        classes.insert(0, Locator)
    names = getattr(config, "CACHE_LOCATOR_CLASSES", "")
    ours = f"{__name__}.Locator"
    if names and ours not in names.split(","):
        config.CACHE_LOCATOR_CLASSES = f"{ours},{names}"


install()
