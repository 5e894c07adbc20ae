"""Options and estimators that several subcommands share: the feature extractor, the pooling,
the Dask scheduler."""

from contextlib import contextmanager

from skretrieval.cli._errors import CommandError, positive_int

POOLINGS = ("spoc", "mac", "gem", "rmac")
# Seconds to wait for the scheduler of --scheduler before saying it cannot be reached.
SCHEDULER_TIMEOUT = 10
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


def add_scheduler_option(parser):
    """``--scheduler ADDRESS``: describe the images on the workers of a running Dask cluster."""
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://host:8786): the images are "
        "described on its workers, which must read them under the same paths (needs the "
        "'distributed' extra); without it, in this process",
    )


@contextmanager
def dask_client(address):
    """A client of the scheduler at ``address``, closed on exit; None without an address."""
    if address is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise CommandError(
            "--scheduler needs dask.distributed, which is not installed",
            'install the extra: pip install "scikit-retrieval[distributed]"',
        ) from None
    try:
        client = Client(address, timeout=SCHEDULER_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CommandError(
            f"cannot reach the Dask scheduler at {address!r} ({exc})",
            "check the address, or start a scheduler ('dask scheduler') and workers "
            "('dask worker ADDRESS')",
        ) from None
    with client:
        yield client
