"""The layers of the tree, read from the imports (``ast``, also imports inside functions) of every module.

    tools/*.py → pcseg.cli → pcseg.methods → pcseg.engine → pcseg.{data, models, vis, deploy} → pcseg.sparse

``pcseg.utils`` sits under everything but ``pcseg.sparse``, which imports nothing from pcseg (and
``pcseg/__init__.py`` imports nothing, so ``import pcseg.sparse`` loads only the sparse core).
Where the other packages sit today: ``pcseg.vis`` imports only ``pcseg.utils`` and only the tools
import it; ``pcseg.deploy`` imports only ``pcseg.sparse`` and nothing imports it; it may use
``pcseg.models`` (it wraps a model for export). Peers do not import each other (data ↮ models).
Also: no method imports another method (``pcseg.methods.common`` and ``.registry`` are shared by
all and import no method), no module imports a private ``_module`` or ``_name`` from outside the
package that owns it, and no tool reaches another tool (imports through ``sys.path``, ``runpy``).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Mapping

import pytest

REPO = Path(__file__).resolve().parents[1]

# what each top-level package may import from pcseg besides itself
ALLOWED: dict[str, set[str]] = {
    "sparse": set(),
    "utils": set(),
    "data": {"sparse", "utils"},
    "models": {"sparse", "utils"},
    "vis": {"sparse", "utils"},
    "deploy": {"sparse", "models", "utils"},
    "engine": {"data", "models", "vis", "deploy", "sparse", "utils"},
    "methods": {"engine", "data", "models", "vis", "deploy", "sparse", "utils"},
    "cli": {"methods", "engine", "data", "models", "vis", "deploy", "sparse", "utils"},  # the tools' main functions
}
SHARED_METHOD_MODULES = {"common", "registry"}  # pcseg.methods.<these>: for every method, import no method

# Known debt, each entry still true today (a fixed one must leave the list): (importer, what it reaches).
ALLOWED_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: str) -> str:
    """``pcseg/data/formats/__init__.py`` → ``pcseg.data.formats``; ``tools/train.py`` → ``tools.train``."""
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: str, source: str) -> Iterator[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import statement; relative ones resolved."""
    module = module_name(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            yield target, [alias.name for alias in node.names]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


def _tool_violations(importer: str, source: str, target: str, tools: set[str]) -> set[tuple[str, str]]:
    """A tool importing another tool (only possible through ``sys.path``) or running one with ``runpy``."""
    top = target.split(".")[0]
    if top in tools:
        return {(importer, f"tool {top} via sys.path")}
    if top == "runpy":
        scripts = sorted({Path(c.value).name for c in ast.walk(ast.parse(source)) if isinstance(c, ast.Constant)
                          and isinstance(c.value, str) and c.value.endswith(".py")})
        return {(importer, f"tool {', '.join(scripts) or '?'} via runpy")}
    return set()


def _private_violations(importer: str, target: str, names: list[str],
                        sources: Mapping[str, str]) -> set[tuple[str, str]]:
    """``_module`` / ``_name`` reached from outside the package owning it."""
    found = set()
    t = target.split(".")
    for depth, part in enumerate(t):
        if _private(part) and not _inside(importer, ".".join(t[:depth])):
            found.add((importer, f"private {target}"))
    is_package = target.replace(".", "/") + "/__init__.py" in sources
    owner = target if is_package else target.rpartition(".")[0]
    found |= {(importer, f"private {target}.{n}") for n in names if _private(n) and not _inside(importer, owner)}
    return found


def _layer_violations(importer: str, target: str) -> set[tuple[str, str]]:
    """Package rules of ALLOWED and the method rules; importer and target both in pcseg."""
    parts, t = importer.split("."), target.split(".")
    if len(parts) == 1:
        return {(importer, f"layer {target} (pcseg/__init__.py imports nothing)")}
    here, there = parts[1], t[1] if len(t) > 1 else ""
    if there != here and there not in ALLOWED[here]:
        return {(importer, f"layer {target}")}
    if here == there == "methods" and len(parts) > 2 and len(t) > 2 and parts[2] != t[2] \
            and (t[2] not in SHARED_METHOD_MODULES or parts[2] in SHARED_METHOD_MODULES):
        return {(importer, f"method {target}")}  # a method (or a shared module) reaching a method
    return set()


def violations(sources: Mapping[str, str], tools: set[str]) -> set[tuple[str, str]]:
    """Every broken rule as (importer, what it reaches). sources: repo-relative path → Python source."""
    found = set()
    for path, source in sources.items():
        importer = module_name(path)
        for target, names in imports(path, source):
            if importer.startswith("tools."):
                found |= _tool_violations(importer, source, target, tools)
            if target.split(".")[0] != "pcseg":
                continue
            found |= _private_violations(importer, target, names, sources)
            if importer.split(".")[0] == "pcseg":
                found |= _layer_violations(importer, target)
    return found


def _tree() -> dict[str, str]:
    files = sorted(REPO.glob("pcseg/**/*.py")) + sorted(REPO.glob("tools/*.py"))
    return {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8") for p in files}


def test_every_package_has_a_place_in_the_layers():
    packages = {p.name for p in (REPO / "pcseg").iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert packages == set(ALLOWED)


def test_the_tree_keeps_its_layers():
    tools = {p.stem for p in (REPO / "tools").glob("*.py")}
    found = violations(_tree(), tools)
    assert found - ALLOWED_VIOLATIONS == set(), "new layer violations"
    assert ALLOWED_VIOLATIONS - found == set(), "fixed: remove these entries from ALLOWED_VIOLATIONS"


@pytest.mark.parametrize("path, source, expected", [
    ("pcseg/sparse/a.py", "from pcseg.utils import x", "layer pcseg.utils"),
    ("pcseg/utils/a.py", "import pcseg.sparse", "layer pcseg.sparse"),
    ("pcseg/models/a.py", "from pcseg.data import x", "layer pcseg.data"),
    ("pcseg/data/a.py", "from ..engine.hooks import x", "layer pcseg.engine.hooks"),
    ("pcseg/engine/a.py", "def f():\n    from pcseg.methods import x", "layer pcseg.methods"),
    ("pcseg/__init__.py", "from .sparse import x", "layer pcseg.sparse (pcseg/__init__.py imports nothing)"),
    ("pcseg/methods/hpal/a.py", "from ..cpcm import labelled_cross_entropy", "method pcseg.methods.cpcm"),
    ("pcseg/methods/common/a.py", "from pcseg.methods.slidr import x", "method pcseg.methods.slidr"),
    ("pcseg/methods/ovs/a.py", "from pcseg.data.formats._common import x", "private pcseg.data.formats._common"),
    ("pcseg/engine/a.py", "from pcseg.data.formats import _helper", "private pcseg.data.formats._helper"),
    ("pcseg/engine/a.py", "from pcseg.data.views import _helper", "private pcseg.data.views._helper"),
    ("tools/a.py", "import sys\nsys.path.insert(0, 'tools')\nfrom b import main", "tool b via sys.path"),
    ("tools/a.py", "import runpy\nrunpy.run_path('tools/train.py')", "tool train.py via runpy"),
])
def test_the_checker_catches_each_kind_of_violation(path, source, expected):
    sources = {path: source, "pcseg/data/formats/__init__.py": ""}
    assert violations(sources, tools={"a", "b"}) == {(module_name(path), expected)}


@pytest.mark.parametrize("path, source", [
    ("pcseg/data/formats/s3dis.py", "from ._common import IGNORE_INDEX"),      # own package's private module
    ("pcseg/data/formats/__init__.py", "from ._common import IGNORE_INDEX"),
    ("pcseg/methods/hpal/a.py", "from pcseg.methods.common import kl_consistency\nfrom ..registry import METHODS"),
    ("pcseg/methods/__init__.py", "from .cpcm import CPCM\nfrom .hpal import HPAL"),
    ("pcseg/engine/a.py", "from __future__ import annotations\nfrom pcseg.data import x\nimport torch"),
    ("tools/a.py", "from pcseg.methods import build_method\nimport argparse"),
])
def test_the_checker_accepts_what_the_layers_allow(path, source):
    assert violations({path: source, "pcseg/data/formats/__init__.py": ""}, tools={"a", "b"}) == set()
