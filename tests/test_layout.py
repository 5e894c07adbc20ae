"""The package's layout rules: what `lint-imports` (pyproject.toml) does not check.

- No module uses another module's underscore names, whether imported (``from
  skretrieval.neighbors import _smallest_k``) or reached through the module
  (``extraction._resolve_device``). What several modules share has a plain name, in
  :mod:`skretrieval._utils` or in a private module of its package. A package's ``__init__`` may
  import its own private modules.
- Every module stays under 650 lines: a concept that outgrows one module becomes a package.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skretrieval"
MAX_LINES = 650


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(name):
    """Whether the dotted ``name`` is a module or package of skretrieval."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _absolute(node, module, is_package):
    """The dotted module of an ``ImportFrom`` node, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def private_name_uses(source, module, is_package=False):
    """``(line, description)`` of each use of another module's underscore name in ``source``.

    ``module`` is the dotted name of the module that ``source`` is (a package when
    ``is_package``); a package's own private submodules are its to import.
    """
    violations = []
    module_aliases = {}  # local name -> skretrieval module it is bound to
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("skretrieval"):
                    module_aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(node, module, is_package)
            if not source_module.startswith("skretrieval"):
                continue
            for alias in node.names:
                target = f"{source_module}.{alias.name}"
                if _is_module(target):
                    module_aliases[alias.asname or alias.name] = target
                own_submodule = source_module == module and _is_module(target)
                if _is_private(alias.name) and not own_submodule:
                    violations.append((node.lineno, f"imports {alias.name} from {source_module}"))
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and _is_private(node.attr)
            and not _is_module(f"{module_aliases[node.value.id]}.{node.attr}")
        ):
            target = module_aliases[node.value.id]
            violations.append((node.lineno, f"uses {target}.{node.attr}"))
    return violations


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: _module_name(path))
def test_no_module_uses_another_modules_private_names(path):
    violations = private_name_uses(
        path.read_text(), _module_name(path), is_package=path.name == "__init__.py"
    )
    assert not violations, "\n".join(
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}" for line, what in violations
    )


def test_the_check_finds_private_names():
    source = (
        "from skretrieval.neighbors import ImageRetriever, _smallest_k\n"
        "from skretrieval import extraction\n"
        "import skretrieval.metrics as metrics\n"
        "extraction._resolve_device('cpu')\n"
        "metrics._check_scores([1.0])\n"
        "from skretrieval.cli import _demo\n"
    )
    lines = [line for line, _ in private_name_uses(source, "skretrieval.evaluation")]
    assert lines == [1, 6, 4, 5]
    relative = "from ..extraction import _plan\nfrom ._losses import triplet_loss\n"
    found = private_name_uses(relative, "skretrieval.learning._finetuning")
    assert found == [(1, "imports _plan from skretrieval.extraction")]
    # A package may import its own private modules, and plain names come from anywhere.
    own = "from skretrieval.cli import _demo\nfrom skretrieval._utils.linalg import l2_normalize\n"
    assert private_name_uses(own, "skretrieval.cli", is_package=True) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda path: _module_name(path))
def test_modules_stay_small(path):
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_LINES, (
        f"{path.relative_to(PACKAGE.parent)} has {n_lines} lines: split the concept into a "
        "package of modules"
    )
