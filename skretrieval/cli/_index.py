"""``skretrieval index DIR -o INDEX``: describe every image under a folder and save an index."""

from skretrieval.cli._options import POOLINGS, add_extractor_options, make_extractor, make_pooling


def add_parser(commands):
    """Register the subcommand and its options."""
    parser = commands.add_parser("index", help="describe a folder of images and save an index")
    parser.add_argument("folder")
    parser.add_argument("-o", "--output", required=True, help="index file to write")
    parser.add_argument("--pooling", choices=POOLINGS, default="gem")
    add_extractor_options(parser, max_size=512)
    parser.set_defaults(run=run)


def run(args):
    """Describe the folder's images and save the extractor, the retriever and the paths."""
    from skretrieval.datasets import list_images
    from skretrieval.neighbors import ImageRetriever
    from skretrieval.persistence import save

    paths = list_images(args.folder)
    if not paths:
        raise SystemExit(f"error: no images found under {args.folder}")
    extractor = make_extractor(args, pooling=make_pooling(args.pooling)).fit()
    descriptors = extractor.transform(paths)
    retriever = ImageRetriever(metric="cosine").fit(descriptors)
    index = {"extractor": extractor, "retriever": retriever, "paths": [str(p) for p in paths]}
    # Atomic and versioned: a crash never leaves a half-written index.
    save(index, args.output)
    print(f"Indexed {len(paths)} images from {args.folder} into {args.output}")
    return 0
