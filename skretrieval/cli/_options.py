"""Options and estimators that several subcommands share: the feature extractor, the pooling."""

from skretrieval.cli._errors import positive_int

POOLINGS = ("spoc", "mac", "gem", "rmac")
POOLING_NAMES = {"spoc": "SPoC", "mac": "MAC", "gem": "GeM", "rmac": "R-MAC"}


def make_pooling(name):
    """The pooling transformer of a ``--pooling`` choice."""
    from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling

    return {"spoc": SumPooling, "mac": MaxPooling, "gem": GeMPooling, "rmac": RMAC}[name]()


def add_extractor_options(parser, *, max_size):
    """The options of the feature extractor, with the subcommand's default image size."""
    parser.add_argument("--backbone", default="mobilenet_v2", help="torchvision model name")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet', a state-dict file, or 'none' for random weights (seeded: the same "
        "on every run)",
    )
    parser.add_argument(
        "--max-size", type=positive_int, default=max_size, help="longer image side"
    )
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'mps', ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def make_extractor(args, pooling=None):
    """The unfitted feature extractor that the extractor options describe."""
    from skretrieval.extraction import CNNFeatureExtractor

    return CNNFeatureExtractor(
        backbone=args.backbone,
        weights=None if args.weights == "none" else args.weights,
        max_size=args.max_size,
        batch_size=args.batch_size,
        device=args.device,
        pooling=pooling,
        verbose=not args.quiet,
        # Random weights drawn alike on every run: an index or a cache of them stays valid.
        random_state=0,
    )
