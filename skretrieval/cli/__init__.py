"""The ``skretrieval`` command line (also ``python -m skretrieval``).

One module per subcommand, each with ``add_parser`` (its arguments) and ``run`` (what it
prints); the work itself is done by the library:

``skretrieval demo``
    Builds a Copydays-style benchmark from real photos shipped with scikit-image and
    scikit-learn, describes it with a pretrained MobileNetV2 and several poolings, prints a mAP
    table and writes a PNG grid of queries and their top results.
``skretrieval index DIR -o INDEX``
    Describes every image under a folder and saves a fitted search index with
    :func:`skretrieval.indexing.build_index`: unreadable files are skipped and listed, the work
    is checkpointed (a killed run continues where it stopped), and an existing index is
    updated (only new and changed files are described).
``skretrieval search INDEX IMAGE -k N``
    Prints the N database images closest to IMAGE, with their distances.
``skretrieval evaluate DATASET --root DIR``
    Scores a pipeline (backbone, scales, pooling or covariance / mixture descriptors, whitening,
    metric, query expansion, DBA, re-ranking) on a retrieval benchmark read from
    disk (revisited Oxford/Paris, Oxford5k/Paris6k, Holidays, UKBench or an image folder) with
    :func:`skretrieval.evaluation.evaluate_benchmark`'s steps, optionally writing a CSV and
    caching the descriptors.

A user error (a missing file, an unwritable output, an unreadable image, a bad option) prints
one ``error: <what> -- <the fix>`` line on stderr and exits with a non-zero status; ``--debug``
shows the traceback instead. Warnings print as ``warning: ...`` lines.
"""

import sys

import skretrieval
from skretrieval.cli._demo import add_parser as add_demo
from skretrieval.cli._errors import USER_ERRORS, ArgumentParser, error_line, warnings_as_lines
from skretrieval.cli._evaluate import add_parser as add_evaluate
from skretrieval.cli._index import add_parser as add_index
from skretrieval.cli._search import add_parser as add_search

__all__ = ["build_parser", "main"]


def build_parser():
    """The argument parser of the ``skretrieval`` command.

    Examples
    --------
    >>> from skretrieval.cli import build_parser
    >>> args = build_parser().parse_args(["search", "photos.index", "query.jpg", "-k", "3"])
    >>> args.command, args.index, args.image, args.k
    ('search', 'photos.index', 'query.jpg', 3)
    """
    parser = ArgumentParser(
        prog="skretrieval", description="Content-based image retrieval the scikit-learn way."
    )
    parser.add_argument("--version", action="version", version=skretrieval.__version__)
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the traceback (for bug reports)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add_parser in (add_demo, add_index, add_search, add_evaluate):
        add_parser(commands)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status (0 on success).

    Usage errors exit with status 2, other user errors with 1, an interruption with 130.

    Examples
    --------
    A user error prints one ``error:`` line on the standard error and returns 1:

    >>> from skretrieval.cli import main
    >>> main(["search", "no-such.index", "query.jpg"])
    1
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        with warnings_as_lines():
            return args.run(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted -- run the command again to continue", file=sys.stderr)
        return 130
