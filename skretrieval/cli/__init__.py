"""The ``skretrieval`` command line (also ``python -m skretrieval``).

One module per subcommand, each with ``add_parser`` (its arguments) and ``run`` (what it
prints); the work itself is done by the library:

``skretrieval demo``
    Builds a Copydays-style benchmark from real photos shipped with scikit-image and
    scikit-learn, describes it with a pretrained MobileNetV2 and several poolings, prints a mAP
    table and writes a PNG grid of queries and their top results.
``skretrieval index DIR -o INDEX``
    Describes every image under a folder and saves a fitted search index.
``skretrieval search INDEX IMAGE -k N``
    Prints the N database images closest to IMAGE, with their distances.
``skretrieval evaluate DATASET --root DIR``
    Scores a pipeline (backbone, pooling, whitening, metric) on a retrieval benchmark read from
    disk (revisited Oxford/Paris, Oxford5k/Paris6k, Holidays, UKBench or an image folder) with
    :func:`skretrieval.evaluation.evaluate_benchmark`'s steps, optionally writing a CSV and
    caching the descriptors.
"""

import argparse

import skretrieval
from skretrieval.cli._demo import add_parser as add_demo
from skretrieval.cli._evaluate import add_parser as add_evaluate
from skretrieval.cli._index import add_parser as add_index
from skretrieval.cli._search import add_parser as add_search

__all__ = ["build_parser", "main"]


def build_parser():
    """The argument parser of the ``skretrieval`` command."""
    parser = argparse.ArgumentParser(
        prog="skretrieval", description="Content-based image retrieval the scikit-learn way."
    )
    parser.add_argument("--version", action="version", version=skretrieval.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    for add_parser in (add_demo, add_index, add_search, add_evaluate):
        add_parser(commands)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)
