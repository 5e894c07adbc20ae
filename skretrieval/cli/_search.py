"""``skretrieval search INDEX IMAGE -k N``: the closest images of an index to a query image."""


def add_parser(commands):
    """Register the subcommand and its options."""
    parser = commands.add_parser("search", help="rank an index's images for a query image")
    parser.add_argument("index", help="index file written by 'skretrieval index'")
    parser.add_argument("image", help="query image file")
    parser.add_argument("-k", type=int, default=10, help="number of results")
    parser.set_defaults(run=run)


def run(args):
    """Print rank, distance and path of the ``k`` nearest images."""
    from skretrieval.persistence import FileFormatError, load

    try:
        index = load(args.index)  # warns when written by another skretrieval version
    except (FileNotFoundError, FileFormatError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if not isinstance(index, dict) or "retriever" not in index:
        raise SystemExit(f"error: {args.index} is not an index written by 'skretrieval index'")
    extractor, retriever, paths = index["extractor"], index["retriever"], index["paths"]
    extractor.set_params(verbose=False)
    k = min(args.k, len(paths))
    distances, indices = retriever.kneighbors(extractor.transform([args.image]), n_neighbors=k)
    for rank, (distance, position) in enumerate(zip(distances[0], indices[0], strict=True)):
        print(f"{rank + 1:4d}  {distance:.4f}  {paths[position]}")
    return 0
