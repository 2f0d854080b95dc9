"""numba's cached kernels are recompiled when a module they import changes
(:mod:`vecpress.kernel_cache`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from vecpress import kernel_cache
from vecpress.kernels import grid_search, hadamard


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_stamp_covers_the_imported_modules_and_nothing_else(tmp_path):
    root = tmp_path / "pkg"
    _write(root / "__init__.py", "")
    _write(root / "sub" / "__init__.py", "")
    _write(root / "a.py", "from .b import g\nimport os\n")
    _write(
        root / "b.py",
        "from . import c\nfrom pkg.sub import (\n    x,  # a comment\n    y as z,\n)\n",
    )
    _write(root / "c.py", "K = 1\n")
    _write(root / "sub" / "x.py", "X = 1\n")
    _write(root / "sub" / "y.py", "Y = 1\n")
    _write(root / "d.py", "D = 1\n")
    files = ("a.py", "b.py", "c.py", "sub/x.py", "sub/y.py", "sub/__init__.py", "__init__.py")
    direct = kernel_cache.modules_imported(root / "b.py", root)
    assert [os.path.relpath(p, root) for p in direct] == [
        "__init__.py", "c.py", "sub/__init__.py", "sub/x.py", "sub/y.py"
    ]  # fmt: skip
    stamp = kernel_cache.source_stamp(root / "a.py", root)
    for name in files:  # each module a.py reaches, directly or not, changes its stamp
        before = (root / name).read_text()
        (root / name).write_text(before + "# edited\n")
        assert kernel_cache.source_stamp(root / "a.py", root) != stamp, name
        (root / name).write_text(before)
    assert kernel_cache.source_stamp(root / "a.py", root) == stamp
    (root / "d.py").write_text("D = 2\n")  # a module a.py does not import
    assert kernel_cache.source_stamp(root / "a.py", root) == stamp
    assert kernel_cache.source_stamp(root / "d.py", root) != stamp


def test_vecpress_kernels_are_cached_under_the_import_stamp():
    for kernel, module in (
        (grid_search._scan_vnni, grid_search),
        (hadamard._rotate_into, hadamard),
    ):
        locator = kernel._cache._impl.locator  # numba's cache of the function
        assert isinstance(locator, kernel_cache.Locator)
        assert locator.get_source_stamp() == kernel_cache.source_stamp(module.__file__)


_RUN = """
import sys
from vecpress import kernel_cache
if sys.argv[1] == "vecpress":  # the toy package's functions get vecpress's locator
    kernel_cache.ROOT = sys.argv[2]
sys.path.insert(0, sys.argv[3])
from toynb.a import f
print(f(10))
"""


def _toy(tmp_path, factor: int) -> None:
    pkg = tmp_path / "site" / "toynb"
    _write(pkg / "__init__.py", "")
    _write(pkg / "a.py", """\
        import numba as nb
        from .b import g

        @nb.njit(cache=True)
        def f(x):
            return g(x) + 1
    """)  # fmt: skip
    # a different length each time: Python's own bytecode cache checks size and seconds
    _write(pkg / "b.py", f"""\
        import numba as nb

        @nb.njit(inline="always")
        def g(x):
            return x * {factor}{" " * factor}
    """)  # fmt: skip


def _f_of_10(tmp_path, locator: str) -> int:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    pkg = str(tmp_path / "site" / "toynb")
    out = subprocess.run(
        [sys.executable, "-c", _RUN, locator, pkg, str(tmp_path / "site")],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return int(out.stdout.split()[-1])


def test_a_changed_helper_module_recompiles_its_callers(tmp_path):
    """``a.f`` inlines ``b.g``; after ``b.py`` changes (``a.py`` unchanged), the cached
    ``a.f`` must not be served. With numba's own locators the second run prints 21
    (checked when this test was written, numba 0.68): the stamp is ``a.py``'s alone."""
    _toy(tmp_path, 2)
    assert _f_of_10(tmp_path, "vecpress") == 21
    assert any((tmp_path / "cache").rglob("*.nbi"))  # the first run filled the cache
    _toy(tmp_path, 3)
    assert _f_of_10(tmp_path, "vecpress") == 31


def test_a_locator_list_from_the_environment_gets_ours_first(tmp_path):
    chain = "UserProvidedCacheLocator,InTreeCacheLocator"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "NUMBA_CACHE_LOCATOR_CLASSES": chain}  # fmt: skip
    code = (
        "import vecpress\nfrom numba.core import config\n"
        "from vecpress.kernels import hadamard\n"
        "print(config.CACHE_LOCATOR_CLASSES)\n"
        "print(type(hadamard._rotate_into._cache._impl.locator).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()  # fmt: skip
    if not hasattr(kernel_cache.config, "CACHE_LOCATOR_CLASSES"):  # pragma: no cover
        pytest.skip("this numba has no NUMBA_CACHE_LOCATOR_CLASSES")
    assert out == [f"vecpress.kernel_cache.Locator,{chain}", "Locator"]
