"""Imports point down the package layering only (docs/contracts.md, "Layering").

config / layers / ops / utils  <-  data  <-  evaluation  <-  checkpoint  <-  modeling
<-  export  <-  engine  <-  tools; `densenets/__init__.py`, `cli.py` and `__main__.py`
sit on top. Every import counts, including those inside functions and relative ones.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "densenets"

# Level of each top-level part of densenets; a module may import its own level or lower.
LAYERS: dict[str, int] = {
    "config": 0,
    "layers": 0,
    "ops": 0,
    "utils": 0,
    "_C": 0,
    "_torchvision_check": 0,
    "data": 1,
    "evaluation": 2,
    "checkpoint": 3,
    "modeling": 4,
    "export": 5,  # needs only modeling; Predictor (engine) runs exported files
    "engine": 6,
    "tools": 7,
    "__init__": 8,
    "cli": 8,
    "__main__": 8,
}
# `import densenets` / `from densenets import register_all` (the registration point, which
# imports up to engine) is for the entry points: tools and the top level.
ROOT_IMPORT = LAYERS["tools"]


def _module_name(path: Path, root: Path) -> str:
    """`<root>/engine/trainer.py` -> `densenets.engine.trainer`; a package's `__init__.py`
    is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute name) of every densenets import in `path`, at any depth of the file,
    relative ones resolved; ``from X import name`` gives ``X.name`` (it may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] == "densenets"]


def _part(module: str) -> str:
    """`densenets.engine.trainer` -> "engine"; `densenets` or `densenets.<not a part>` (a
    name from the package's `__init__`) -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "__init__"


def layering_violations(root: Path = PACKAGE) -> list[str]:
    """One line ``file:line: <part> imports <higher part> (<module>)`` per upward import."""
    errors = []
    for path in sorted(root.rglob("*.py")):
        own = _part(_module_name(path, root)) if path.parent != root else path.stem
        for line, module in imported_modules(path, root):
            target = _part(module)
            if LAYERS[target] > LAYERS[own] and not (target == "__init__" and ROOT_IMPORT <= LAYERS[own]):
                errors.append(f"{path.relative_to(root.parent)}:{line}: {own} imports {target} ({module})")
    return errors


def test_every_part_has_a_layer():
    parts = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    parts |= {p.name.split(".")[0] for p in PACKAGE.iterdir() if p.suffix in (".py", ".so", ".pyd")}
    assert sorted(parts - set(LAYERS)) == []


# Upward imports still to remove, by file and part imported. Each entry names its way out;
# `test_known_exceptions_are_current` fails once one is gone, so the list only shrinks.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()  # (file, imported part) pairs still to fix: none


def _key(error: str) -> tuple[str, str]:
    return error.split(":")[0], error.split(" imports ")[1].split(" ")[0]


def test_imports_point_down():
    errors = [e for e in layering_violations() if _key(e) not in KNOWN_EXCEPTIONS]
    assert not errors, "imports pointing up the layering:\n" + "\n".join(errors)


def test_known_exceptions_are_current():
    assert KNOWN_EXCEPTIONS <= {_key(e) for e in layering_violations()}


def test_checker_finds_an_upward_import(tmp_path):
    """The checker itself: an upward import inside a function, written relatively, is found;
    a downward one is not."""
    pkg = tmp_path / "densenets"
    (pkg / "data").mkdir(parents=True)
    (pkg / "modeling").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "sr.py").write_text("def f():\n    from ..modeling import EDSR\n    return EDSR\n")
    (pkg / "modeling" / "__init__.py").write_text("from densenets.data import sr\nfrom . import edsr\n")
    (pkg / "config").mkdir()
    (pkg / "config" / "config.py").write_text("import densenets\n")
    (pkg / "tools").mkdir()
    (pkg / "tools" / "train.py").write_text("from densenets import register_all\n")
    assert imported_modules(pkg / "modeling" / "__init__.py", pkg) == [
        (1, "densenets.data.sr"),
        (2, "densenets.modeling.edsr"),
    ]
    assert layering_violations(pkg) == [
        "densenets/config/config.py:1: config imports __init__ (densenets)",
        "densenets/data/sr.py:2: data imports modeling (densenets.modeling.EDSR)",
    ]


def test_registration_point_is_explicit():
    """`densenets.config` fills no registry by itself (it would import packages above it):
    before `densenets.register_all()` an unknown type says how to register; after it,
    every built-in component is there."""
    code = (
        "import sys\n"
        "from densenets.config import MODELS, ConfigError, load_config\n"
        "assert 'FasterRCNN' not in MODELS and 'densenets.modeling' not in sys.modules\n"
        "try:\n"
        "    MODELS.get('FasterRCNN', 'model.type')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
        "import densenets\n"
        "densenets.register_all()\n"
        "assert 'FasterRCNN' in MODELS\n"
        "print(MODELS.get('FasterRCNN').__module__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.strip().splitlines()
    assert first.startswith("model.type: unknown model type 'FasterRCNN'")
    assert first.endswith("densenets.register_all() registers the built-in ones)")
    assert second == "densenets.modeling.detection.faster_rcnn"
