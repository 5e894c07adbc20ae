"""``skretrieval index DIR -o INDEX``: describe every image under a folder and save an index."""

from pathlib import Path

from skretrieval.cli._errors import CommandError, positive_int
from skretrieval.cli._options import (
    POOLINGS,
    add_extractor_options,
    add_scheduler_option,
    dask_client,
    make_extractor,
    make_pooling,
)


def add_parser(commands):
    """Register the subcommand and its options."""
    parser = commands.add_parser(
        "index",
        help="describe a folder of images and save an index",
        description=(
            "Describe every image under a folder and save a search index. Unreadable files "
            "are skipped and listed in INDEX.skipped.tsv; the work is checkpointed in "
            "INDEX.partial/, so that a killed run started again continues where it stopped; "
            "an existing index made with the same settings is updated: only new and changed "
            "files are described, deleted ones are dropped."
        ),
    )
    parser.add_argument("folder", help="folder of images, searched recursively")
    parser.add_argument("-o", "--output", required=True, help="index file to write")
    parser.add_argument("--pooling", choices=POOLINGS, default="gem")
    add_extractor_options(parser, max_size=512)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first file that cannot be read instead of skipping it",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=500,
        metavar="N",
        help="images described between two checkpoints (default: 500)",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="describe every image again, replacing an index made with other settings",
    )
    add_scheduler_option(parser)
    parser.set_defaults(run=run)


def _check_folder(folder):
    path = Path(folder)
    if not path.exists():
        raise CommandError(
            f"the folder {folder!r} does not exist", "give the folder that holds the images"
        )
    if not path.is_dir():
        raise CommandError(
            f"{folder!r} is a file, not a folder",
            "give the folder that holds the images (to index one image, put it in a folder)",
        )
    try:
        next(path.iterdir(), None)
    except PermissionError:
        raise CommandError(
            f"cannot read the folder {folder!r} (permission denied)",
            "make it readable (chmod u+rx) or index it as a user who can read it",
        ) from None


def _summary(report, folder):
    counts = [f"{report.n_new} new"]
    if report.n_changed:
        counts.append(f"{report.n_changed} changed")
    if report.n_reused:
        counts.append(f"{report.n_reused} unchanged")
    if report.n_removed:
        counts.append(f"{report.n_removed} removed")
    lines = [
        f"Indexed {report.n_indexed} images from {folder} into {report.output} "
        f"({', '.join(counts)})."
    ]
    if report.n_resumed:
        lines.append(
            f"Resumed an interrupted run: {report.n_resumed} descriptors read from its "
            "checkpoint."
        )
    if report.skipped:
        lines.append(
            f"Skipped {len(report.skipped)} files that could not be read (not images, "
            f"truncated or corrupt); the list, with the reasons: {report.skipped_file}"
        )
    return "\n".join(lines)


def run(args):
    """Index the folder with :func:`skretrieval.indexing.build_index` and print a summary."""
    from skretrieval.extraction import ImageReadError
    from skretrieval.indexing import build_index

    _check_folder(args.folder)
    extractor = make_extractor(args, pooling=make_pooling(args.pooling))
    try:
        with dask_client(args.scheduler) as client:
            report = build_index(
                args.folder,
                args.output,
                extractor,
                on_error="raise" if args.strict else "skip",
                checkpoint_every=args.checkpoint_every,
                rebuild=args.rebuild,
                client=client,
                verbose=not args.quiet,
            )
    except ImageReadError as exc:
        raise CommandError(
            f"cannot read {exc.path}: {exc.reason}",
            "fix or remove the file, or run without --strict to skip unreadable files",
        ) from exc
    print(_summary(report, args.folder))
    return 0
