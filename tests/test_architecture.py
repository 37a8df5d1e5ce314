"""ARCHITECTURE.md matches the tree: it names every module of ``scanner``, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scanner"
TEXT = (ROOT / "ARCHITECTURE.md").read_text()


def _modules() -> list[Path]:
    return sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")


def _named(module: Path) -> bool:
    dotted = "scanner." + ".".join(module.with_suffix("").parts)
    return f"`{module.as_posix()}`" in TEXT or re.search(rf"{re.escape(dotted)}\b", TEXT) is not None


def test_every_module_is_named() -> None:
    assert [module.as_posix() for module in _modules() if not _named(module)] == []


def test_every_module_named_exists() -> None:
    # A bare file name stands for a module of the package the sentence is about.
    names = {path.name for path in PACKAGE.rglob("*.py")}
    named = set(re.findall(r"`([\w/]+\.py)`", TEXT))
    missing = [
        path
        for path in sorted(named)
        if not (PACKAGE / path).exists() and not (ROOT / path).exists() and path not in names
    ]
    assert missing == []


def test_no_module_imports_itself_back() -> None:
    """No import cycle between modules, counting imports inside functions and for type checks
    (import-linter's contracts check the layers; this checks every module within them)."""
    import grimp

    graph = grimp.build_graph("scanner", include_external_packages=False)
    cycles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []
