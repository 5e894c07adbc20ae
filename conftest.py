"""Every code block of ``README.md`` and the docs (``*.md``, ``*.rst``) runs in ``make test``.

Sybil finds the blocks:

- ```` ```python ```` blocks run one by one and each alone: a fresh namespace in a fresh, empty
  working folder. A block that uses a name it does not define, or a file it does not write,
  fails; a reader can paste any block into a notebook.
- ```` ```bash ```` blocks run line by line in a folder that holds the files a reader of a
  shell example has: ``photos/`` (ten photographs, JPEG) and ``query.jpg`` (an edited copy of
  one of them). ``skretrieval`` commands run for real, except those that need what no test
  machine has (a Dask scheduler at ``--scheduler``, a downloaded benchmark for ``evaluate``):
  those are parsed by the command's own argument parser, so a wrong option or value fails.
  ``pip install`` lines must name this distribution with extras that exist, ``make`` targets
  must exist (``make -n``), and ``dask`` options must be in ``dask ... --help``.
- ```` ```yaml ```` blocks must parse. ```` ```text ```` blocks (output, layouts) are not code;
  ``tests/test_docs_snippets.py`` checks that every block names one of these languages.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import metadata
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser
from sybil.parsers.rest import CodeBlockParser as RestCodeBlockParser

ROOT = Path(__file__).resolve().parent

# The documentation build's own sources and outputs are not tests.
collect_ignore = ["docs/conf.py"]
collect_ignore_glob = ["docs/examples/*", "docs/_build/*", "docs/auto_examples/*"]


def _run_python_alone(example):
    namespace = {"__name__": "__main__"}
    code = compile(
        pad(example.parsed, example.line + example.parsed.line_offset), example.path, "exec"
    )
    exec(code, namespace)


# -- shell lines ---------------------------------------------------------------------------


def _commands(source):
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", source)
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield words


def _check_skretrieval(argv, folder):
    from skretrieval.cli import build_parser

    needs_absent = argv[1:2] == ["evaluate"] or any(
        word == "--scheduler" or word.startswith("--scheduler=") for word in argv
    )
    if needs_absent:
        build_parser().parse_args(argv[1:])  # SystemExit(2) with the message on a bad option
        return
    completed = subprocess.run(
        [sys.executable, "-m", "skretrieval", *argv[1:]],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        check=False,
    )
    assert completed.returncode == 0, (
        f"{shlex.join(argv)} exited with {completed.returncode}:\n{completed.stderr}"
    )


def _check_pip(argv):
    from packaging.requirements import Requirement

    assert argv[1:2] == ["install"], f"only `pip install` lines are checked: {shlex.join(argv)}"
    distribution = metadata("scikit-retrieval")  # this checkout, installed by make
    extras = set(distribution.get_all("Provides-Extra"))
    words = iter(argv[2:])
    for word in words:
        if word in ("-c", "--constraint"):
            assert (ROOT / next(words)).is_file()
        elif word in ("--index-url", "--extra-index-url"):
            assert next(words).startswith("https://")
        elif word in ("-e", "--editable", "--no-deps", "--upgrade", "-U"):
            continue
        elif word.startswith((".", "/")):  # a checkout: ".[test]"
            path, _, extra = word.partition("[")
            assert (ROOT / path / "pyproject.toml").is_file()
            assert set(extra.rstrip("]").split(",")) - {""} <= extras, word
        else:
            requirement = Requirement(word)
            if requirement.name == distribution["Name"]:
                assert requirement.extras <= extras, f"unknown extra in {word!r}"


def _check_make(argv):
    for target in argv[1:]:
        subprocess.run(["make", "-n", target], cwd=ROOT, check=True, capture_output=True)


def _check_dask(argv):
    """A scheduler or worker is a server: check its options, do not start one."""
    dask = Path(sys.executable).with_name("dask")  # the environment's, on PATH or not
    command = [str(dask) if dask.exists() else "dask", argv[1], "--help"]
    help_text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    for word in argv[2:]:
        if word.startswith("--"):
            assert word.split("=")[0] in help_text, f"`dask {argv[1]}` has no option {word}"


def _run_shell(example):
    folder = Path.cwd()
    shutil.copytree(example.namespace["shell_example_files"], folder, dirs_exist_ok=True)
    checks = {
        "skretrieval": lambda argv: _check_skretrieval(argv, folder),
        "pip": _check_pip,
        "make": _check_make,
        "dask": _check_dask,
    }
    for argv in _commands(example.parsed):
        assert argv[0] in checks, f"no check for the command {argv[0]!r}: {shlex.join(argv)}"
        checks[argv[0]](argv)


def _parse_yaml(example):
    import yaml

    yaml.safe_load(example.parsed)


@pytest.fixture(scope="session")
def shell_example_files(tmp_path_factory):
    """``photos/`` (ten photographs as JPEG) and ``query.jpg`` (a cropped copy of one)."""
    from PIL import Image

    from skretrieval.datasets import make_copydays

    folder = tmp_path_factory.mktemp("shell_example_files")
    photos = make_copydays(n_copies_per_image=1, transforms=["crop"], max_size=160)
    (folder / "photos").mkdir()
    originals = photos.images[: len(photos.target_names)]  # the originals come first
    for image, name in zip(originals, photos.target_names, strict=True):
        Image.fromarray(image).save(folder / "photos" / f"{name}.jpg")
    copy = photos.images[len(originals)]  # a crop of the first photo
    Image.fromarray(copy).save(folder / "query.jpg")
    return folder


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    """Each block runs in its own empty working folder (files it writes stay there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


_FIXTURES = ["in_empty_folder", "shell_example_files"]
pytest_collect_file = (
    Sybil(
        parsers=[
            CodeBlockParser(language="python", evaluator=_run_python_alone),
            CodeBlockParser(language="bash", evaluator=_run_shell),
            CodeBlockParser(language="yaml", evaluator=_parse_yaml),
        ],
        patterns=["README.md", "docs/*.md"],
        fixtures=_FIXTURES,
    )
    + Sybil(
        parsers=[
            RestCodeBlockParser(language="python", evaluator=_run_python_alone),
            RestCodeBlockParser(language="bash", evaluator=_run_shell),
        ],
        patterns=["docs/*.rst"],
        fixtures=_FIXTURES,
    )
).pytest()
