"""``skretrieval evaluate DATASET --root DIR``: mAP of a pipeline on a retrieval benchmark."""

import csv
from pathlib import Path

import numpy as np

from skretrieval.cli._errors import CommandError
from skretrieval.cli._options import add_extractor_options, add_scheduler_option, dask_client
from skretrieval.cli._pipeline import (
    add_pipeline_options,
    cache_folder,
    cache_tag,
    check_options,
    describe_pipeline,
    make_describer,
    read_whitening,
    retriever_params,
    settings,
    whiten,
)

DATASETS = ("roxford5k", "rparis6k", "oxford5k", "paris6k", "holidays", "ukbench", "folder")
_PRECISION_KS = (1, 5, 10)
_CSV_COLUMNS = (
    "dataset",
    "protocol",
    "n_queries",
    "n_database",
    "map",
    "mp@1",
    "mp@5",
    "mp@10",
    "ns_score",
    "backbone",
    "weights",
    "descriptor",
    "pooling",
    "scales",
    "local_dim",
    "components",
    "whitening",
    "shrinkage",
    "whitening_from",
    "metric",
    "query_expansion",
    "qe_neighbors",
    "qe_alpha",
    "dba",
    "rerank",
    "rerank_neighbors",
    "max_size",
)


def add_parser(commands):
    """Register the subcommand and its options."""
    parser = commands.add_parser(
        "evaluate",
        help="mAP of a pipeline on a retrieval benchmark (revisited Oxford/Paris, Holidays, ...)",
        description=(
            "Describe a benchmark's database and queries with a CNN pipeline, rank the database "
            "for each query and print mAP and mean precision at 1, 5 and 10 (easy, medium and "
            "hard for the revisited Oxford and Paris). Nothing is downloaded: --root must hold "
            "the benchmark's files (see skretrieval.datasets)."
        ),
    )
    parser.add_argument("dataset", choices=DATASETS, help="benchmark")
    parser.add_argument(
        "--root",
        required=True,
        help=(
            "for roxford5k, rparis6k, oxford5k, paris6k: the folder holding <dataset>/ (or that "
            "folder itself); for holidays, ukbench: the image folder; for folder: a "
            "class-per-folder image tree"
        ),
    )
    add_pipeline_options(parser)
    add_extractor_options(parser, max_size=1024)
    add_scheduler_option(parser)
    parser.add_argument("--output", help="CSV file for the results, one row per protocol")
    parser.add_argument(
        "--cache",
        help=(
            "folder keeping the pooled global descriptors (before whitening) for later runs, "
            "keyed by everything that changes them (version, backbone, weights file contents, "
            "precision, sizes, scales, pooling, images, boxes); not used by --descriptor "
            "covariance and gmm"
        ),
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="evaluate on the images present when some are missing",
    )
    parser.set_defaults(run=run)


def _load_dataset(name, root, allow_missing):
    """The benchmark's bunch, from the loader of ``skretrieval.datasets`` that reads it."""
    from skretrieval import datasets

    root = Path(root)
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise CommandError(
            f"--root {str(root)!r} {state}", f"give the folder that holds the {name} files"
        )
    if name in ("roxford5k", "rparis6k", "oxford5k", "paris6k"):
        # Accept the benchmark's own folder as well as the folder holding it.
        if root.name == name and not (root / name).is_dir():
            root = root.parent
        if name.startswith("r"):
            return datasets.load_revisited(root, name, allow_missing=allow_missing)
        return datasets.load_oxford_paris(root, name, allow_missing=allow_missing)
    if name == "holidays":
        return datasets.load_holidays(root, allow_missing=allow_missing)
    if name == "ukbench":
        return datasets.load_ukbench(root, allow_missing=allow_missing)
    return datasets.load_image_folder(root)


def _write_csv(rows, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=_CSV_COLUMNS, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: "" if isinstance(v, float) and np.isnan(v) else v for key, v in row.items()}
            )


def _print_results(rows):
    header = f"{'protocol':10s}{'queries':>8s}{'mAP':>8s}" + "".join(
        f"{f'mP@{k}':>8s}" for k in _PRECISION_KS
    )
    ukbench = "ns_score" in rows[0]
    print(header + (f"{'N-S':>8s}" if ukbench else ""))
    for row in rows:
        line = f"{row['protocol']:10s}{row['n_queries']:8d}{row['map']:8.4f}" + "".join(
            f"{row[f'mp@{k}']:8.4f}" for k in _PRECISION_KS
        )
        print(line + (f"{row['ns_score']:8.4f}" if ukbench else ""))


def run(args):
    """Load the benchmark, describe it (or read the cache), score it and print the table."""
    from skretrieval.evaluation import describe_benchmark, score_benchmark
    from skretrieval.persistence import save

    # Missing files raise errors that say where to put them (one error: line in main).
    data = _load_dataset(args.dataset, args.root, args.allow_missing)
    check_options(args, data)
    saved_whitening = read_whitening(args)
    crops = data.query_boxes is not None
    n_database = len(data.filenames)
    queries = data.query_filenames if data.query_filenames is not None else data.filenames
    print(
        f"{args.dataset}: {len(queries)} queries"
        + (" (cropped to their boxes)" if crops else "")
        + f", {n_database} database images. Pipeline: {describe_pipeline(args)}."
    )

    describer = make_describer(args)
    with dask_client(args.scheduler) as client:
        database, queries = describe_benchmark(
            describer,
            data,
            cache=cache_folder(args),
            cache_tag=cache_tag(args),
            client=client,
            verbose=True,
        )
    # Learned on the database images (no separate training set): an optimistic setting.
    database, queries, whitening = whiten(args, data, database, queries, saved_whitening)
    if args.save_whitening is not None:
        save(whitening, args.save_whitening)
        print(f"Whitening saved to {args.save_whitening}")
    rows = score_benchmark(
        data,
        database,
        queries,
        metric=args.metric,
        ks=_PRECISION_KS,
        retriever_params=retriever_params(args),
    )
    print()
    _print_results(rows)
    if args.output is not None:
        record = {"dataset": args.dataset, "n_database": n_database, **settings(args)}
        _write_csv([{**record, **row} for row in rows], args.output)
        print(f"\nResults written to {args.output}")
    return 0
