"""The API reference, ``docs/api.rst``, lists every public name of every public module.

Read without Sphinx: the page is parsed for its ``.. currentmodule::`` sections and the names of
their ``.. autosummary::`` blocks, and the modules' ``__all__`` are read from their source (no
import, so torch is not loaded).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skretrieval"
API_PAGE = ROOT / "docs" / "api.rst"
# The command line is documented by ``skretrieval --help``, not in the API reference.
NOT_IN_API = {"cli"}


def public_modules():
    """Names of the public top-level modules and packages of skretrieval."""
    names = set()
    for path in PACKAGE.iterdir():
        if path.name.startswith("_"):
            continue
        if path.suffix == ".py" or (path / "__init__.py").is_file():
            names.add(path.stem if path.suffix == ".py" else path.name)
    return names - NOT_IN_API


def module_all(module):
    """The literal ``__all__`` of ``skretrieval.<module>``, read from its source."""
    path = PACKAGE / f"{module}.py"
    if not path.is_file():
        path = PACKAGE / module / "__init__.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"skretrieval.{module} has no literal __all__; add one.")


def documented_names(text):
    """``{module: names}`` listed by the autosummary blocks of an API page's ``text``."""
    documented = {}
    module = None
    in_autosummary = False
    for line in text.splitlines():
        current = re.match(r"\.\. currentmodule:: skretrieval\.(\w+)\s*$", line)
        if current:
            module = current.group(1)
            documented.setdefault(module, set())
            in_autosummary = False
        elif line.startswith(".. autosummary::"):
            in_autosummary = True
        elif in_autosummary and line and not line.startswith(" "):
            in_autosummary = False  # the block ends at the first unindented line
        elif in_autosummary and line.strip() and not line.strip().startswith(":"):
            documented[module].add(line.strip())
    return documented


def test_parser_reads_sections_and_stops_at_block_end():
    text = (
        ".. currentmodule:: skretrieval.pooling\n\n"
        ".. autosummary::\n   :toctree: generated/\n\n   gem\n   GeMPooling\n\n"
        "Prose after the block, not a name.\n\n"
        ".. currentmodule:: skretrieval.neighbors\n\n"
        ".. autosummary::\n\n   ImageRetriever\n"
    )
    assert documented_names(text) == {
        "pooling": {"gem", "GeMPooling"},
        "neighbors": {"ImageRetriever"},
    }


def test_module_all_is_read_from_source():
    # Independent oracle: the import of the (torch-free) module itself.
    from skretrieval import metrics

    assert module_all("metrics") == set(metrics.__all__)


def test_api_page_documents_every_public_module():
    documented = documented_names(API_PAGE.read_text(encoding="utf-8"))
    assert set(documented) == public_modules()


@pytest.mark.parametrize("module", sorted(public_modules()))
def test_api_page_lists_the_whole_all_of_each_module(module):
    documented = documented_names(API_PAGE.read_text(encoding="utf-8")).get(module, set())
    expected = module_all(module)
    missing, extra = expected - documented, documented - expected
    assert not missing, f"docs/api.rst leaves out skretrieval.{module}.{sorted(missing)}: add them."
    assert not extra, f"docs/api.rst lists {sorted(extra)}, not in skretrieval.{module}.__all__."
