"""Every fenced block of the README and the documentation says what it holds.

``conftest.py`` runs the ``python``, ``bash`` and ``yaml`` blocks of ``README.md`` and
``docs/*.md``; a block without a language would silently escape that. Blocks of other kinds
(``text``: output, layouts) are listed here so that a typo in a language name is caught too.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted(ROOT.glob("docs/*.md"))]
EXECUTED = {"python", "bash", "yaml"}
NOT_CODE = {"text", "{include}"}
FENCE = re.compile(r"^(`{3,})(.*)$")


def _opening_fences(path):
    inside = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line.lstrip())
        if not match:
            continue
        if inside is None:
            inside = match.group(1)
            yield number, match.group(2).split(" ")[0].strip()
        elif match.group(1) == inside and not match.group(2).strip():
            inside = None


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_block_names_its_language(page):
    unknown = [
        f"line {number}: {language or '(none)'}"
        for number, language in _opening_fences(page)
        if language not in EXECUTED | NOT_CODE
    ]
    assert not unknown, f"{page.name}: blocks with no or an unknown language: {unknown}"


def test_every_executed_block_is_collected():
    # A renamed pattern or a moved conftest.py would make the runner collect nothing.
    pages = [page for page in PAGES if page.parent.name != "benchmarks"]
    expected = sorted(
        f"{page.relative_to(ROOT)}::line:{number}"
        for page in pages
        for number, language in _opening_fences(page)
        if language in EXECUTED
    )
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *(str(page.relative_to(ROOT)) for page in pages),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    collected = sorted(
        line.split(",column")[0] for line in listing.splitlines() if "::line:" in line
    )
    assert collected == expected
