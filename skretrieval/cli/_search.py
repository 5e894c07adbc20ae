"""``skretrieval search INDEX IMAGE -k N``: the closest images of an index to a query image."""

from pathlib import Path

from skretrieval.cli._errors import CommandError, positive_int

_WRITE_AN_INDEX = "give the file written by 'skretrieval index DIR -o INDEX'"


def add_parser(commands):
    """Register the subcommand and its options."""
    parser = commands.add_parser("search", help="rank an index's images for a query image")
    parser.add_argument("index", help="index file written by 'skretrieval index'")
    parser.add_argument("image", help="query image file")
    parser.add_argument("-k", type=positive_int, default=10, help="number of results")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help=(
            "read an index written by skretrieval 0.2, a pickle file: reading one can run any "
            "code it holds, so only for files you trust (then index again to convert it)"
        ),
    )
    parser.set_defaults(run=run)


def _check_file(path, what, fix):
    if Path(path).is_dir():
        raise CommandError(f"the {what} {path!r} is a folder, not a file", fix)
    if not Path(path).is_file():
        raise CommandError(f"the {what} {path!r} does not exist", fix)


def _load_index(path, allow_pickle):
    from skretrieval.indexing import IndexFormatError, load_index
    from skretrieval.persistence import FileFormatError, PickleNotAllowedError

    try:
        return load_index(path, allow_pickle=allow_pickle)
    except PickleNotAllowedError as exc:
        raise CommandError(
            f"the index {path!r} is a pickle file, as skretrieval 0.2 wrote them; reading it "
            "can run any code it holds",
            "if you trust it, pass --allow-pickle (then index the images again to convert it)",
        ) from exc
    except IndexFormatError as exc:
        raise CommandError(f"{path!r} is not an index", _WRITE_AN_INDEX) from exc
    except FileFormatError as exc:
        raise CommandError(
            f"cannot read the index {path!r}: {exc}",
            "index the images again (skretrieval index DIR -o INDEX --rebuild)",
        ) from exc


def run(args):
    """Print rank, distance and path of the ``k`` nearest images."""
    from skretrieval.extraction import ImageReadError

    _check_file(args.index, "index", _WRITE_AN_INDEX)
    _check_file(args.image, "query image", "give an image file (JPEG, PNG, ...)")
    index = _load_index(args.index, args.allow_pickle)
    extractor, retriever, paths = index.extractor, index.retriever, index.paths
    extractor.set_params(verbose=False)
    try:
        query = extractor.transform([args.image])
    except ImageReadError as exc:
        raise CommandError(
            f"cannot read the query image {args.image!r}: {exc.reason}",
            "give an image file (JPEG, PNG, ...)",
        ) from exc
    k = min(args.k, len(paths))
    distances, indices = retriever.kneighbors(query, n_neighbors=k)
    for rank, (distance, position) in enumerate(zip(distances[0], indices[0], strict=True)):
        print(f"{rank + 1:4d}  {distance:.4f}  {paths[position]}")
    return 0
