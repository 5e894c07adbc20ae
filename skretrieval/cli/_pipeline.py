"""The pipeline that the options of ``skretrieval evaluate`` describe: the descriptors (global,
or covariance matrices and Gaussian mixtures of local features), the whitening and the
retriever's search options."""

import argparse
import warnings

import numpy as np

from skretrieval.cli._errors import CommandError, positive_int
from skretrieval.cli._options import POOLING_NAMES, POOLINGS, make_extractor, make_pooling

DESCRIPTORS = ("global", "covariance", "gmm")
# The metric of each descriptor when --metric is not given.
DEFAULT_METRICS = {"global": "cosine", "covariance": "affine_invariant", "gmm": "wasserstein"}
WHITENINGS = ("none", "pca", "learned")
QUERY_EXPANSIONS = ("none", "average", "alpha")
RERANKINGS = ("none", "diffusion", "k-reciprocal")
_DESCRIPTOR_NAMES = {
    "covariance": "covariance matrices of local features",
    "gmm": "Gaussian mixtures of local features",
}


def _number(text, *, low=None, high=None, low_open=False):
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if not np.isfinite(value) or too_low or too_high:
        bound = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        bound += "" if high is None else f"{' and ' if bound else ''}<= {high:g}"
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def positive_float(text):
    """An argparse type: a number greater than 0."""
    return _number(text, low=0.0, low_open=True)


def non_negative_float(text):
    """An argparse type: a number of at least 0."""
    return _number(text, low=0.0)


def unit_fraction(text):
    """An argparse type: a number in [0, 1]."""
    return _number(text, low=0.0, high=1.0)


def add_pipeline_options(parser):
    """The options of the descriptors, the whitening, the metric and the search."""
    from skretrieval.geometry import registered_metrics

    describe = parser.add_argument_group("descriptors")
    describe.add_argument(
        "--descriptor",
        choices=DESCRIPTORS,
        default="global",
        help="'global': one pooled vector per image (--pooling); 'covariance': the feature "
        "maps' local features, reduced by a PCA learned on the database (--local-dim), as one "
        "SPD covariance matrix per image; 'gmm': the same local features as one Gaussian "
        "mixture per image (--components). The last two compare images by --metric "
        "'affine_invariant', 'log_euclidean', 'stein', 'kl', 'jeffreys', 'wasserstein' (gmm: "
        "'wasserstein', 'kl') and are never cached",
    )
    describe.add_argument(
        "--pooling", choices=POOLINGS, help="pooling of the global descriptors (default: gem)"
    )
    describe.add_argument(
        "--scales",
        nargs="+",
        type=positive_float,
        metavar="S",
        help="multi-scale global descriptors: the image is described at --max-size times each "
        "scale and the descriptors combined (e.g. --scales 1 0.707 0.5)",
    )
    describe.add_argument(
        "--local-dim",
        type=positive_int,
        default=64,
        help="covariance, gmm: dimension of the local features after PCA (default: 64)",
    )
    describe.add_argument(
        "--components",
        type=positive_int,
        default=4,
        help="gmm: Gaussian components per image (default: 4)",
    )
    whiten = parser.add_argument_group("whitening (global descriptors)")
    whiten.add_argument(
        "--whitening",
        choices=WHITENINGS,
        default="none",
        help="'pca': PCA whitening learned on the database descriptors; 'learned': supervised "
        "whitening from the matching pairs of the database labels (datasets with labels: "
        "folder, holidays, ukbench). Both are optimistic, learned on the images evaluated: "
        "learn on another collection with --save-whitening and apply with --whitening-from",
    )
    whiten.add_argument(
        "--shrinkage",
        type=unit_fraction,
        help="regularisation of the whitening, in [0, 1] (default: 0)",
    )
    whiten.add_argument(
        "--save-whitening",
        metavar="FILE",
        help="save the whitening learned in this run (skretrieval.persistence.save)",
    )
    whiten.add_argument(
        "--whitening-from",
        metavar="FILE",
        help="apply a whitening saved with --save-whitening (or skretrieval.persistence.save) "
        "as it is, without refitting it",
    )
    search = parser.add_argument_group("search")
    search.add_argument(
        "--metric",
        choices=registered_metrics(),
        help="distance between descriptors (default: cosine for global, affine_invariant for "
        "covariance, wasserstein for gmm)",
    )
    search.add_argument(
        "--query-expansion",
        choices=QUERY_EXPANSIONS,
        default="none",
        help="'average' (AQE) or 'alpha' (alpha-QE) query expansion with the --qe-neighbors "
        "top results; cosine (and 'average' on SPD metrics)",
    )
    search.add_argument("--qe-neighbors", type=positive_int, default=2, help="(default: 2)")
    search.add_argument(
        "--qe-alpha", type=non_negative_float, default=3.0, help="alpha of alpha-QE (default: 3)"
    )
    search.add_argument(
        "--dba",
        type=positive_int,
        metavar="N",
        help="database-side augmentation with the N nearest database vectors (cosine)",
    )
    search.add_argument(
        "--rerank",
        choices=RERANKINGS,
        default="none",
        help="re-rank with the database's neighbourhood graph: 'diffusion' (cosine) or "
        "'k-reciprocal' (any metric)",
    )
    search.add_argument(
        "--rerank-neighbors",
        type=positive_int,
        default=20,
        help="k of the re-ranking graphs; at most the database size minus 1 (default: 20)",
    )


def _example_descriptors(descriptor):
    """Two descriptors of the type ``descriptor`` makes: what the metric is checked against."""
    if descriptor == "global":
        return np.eye(2)
    if descriptor == "covariance":
        return np.stack([np.eye(2)] * 2)
    from skretrieval.descriptors import GaussianMixtures

    return GaussianMixtures(np.ones((2, 1)), np.zeros((2, 1, 2)), np.stack([[np.eye(2)]] * 2))


def check_options(args, data):
    """Fill in the defaults that depend on --descriptor and reject what does not fit together,
    before any image is described."""
    from skretrieval.geometry import get_kernel

    geometric = args.descriptor != "global"
    if args.metric is None:
        args.metric = DEFAULT_METRICS[args.descriptor]
    # The library's own message when the metric does not compare this kind of descriptor.
    get_kernel(args.metric, _example_descriptors(args.descriptor))
    if geometric:
        fix = "drop it, or use --descriptor global"
        given = {
            "--pooling": args.pooling is not None,
            "--scales": args.scales is not None,
            "--whitening": args.whitening != "none",
            "--whitening-from": args.whitening_from is not None,
            "--scheduler": args.scheduler is not None,
        }
        for option, is_given in given.items():
            if is_given:
                raise CommandError(
                    f"{option} applies to global descriptors, not to --descriptor "
                    f"{args.descriptor} (whose local PCA is learned on the database feature "
                    "maps in this process)",
                    fix,
                )
    elif args.pooling is None:
        args.pooling = "gem"
    if args.whitening_from is not None and args.whitening != "none":
        raise CommandError(
            f"--whitening {args.whitening} learns a whitening, --whitening-from applies a saved "
            "one",
            "give only one of them",
        )
    learns = args.whitening in ("pca", "learned")
    if args.save_whitening is not None and not learns:
        raise CommandError(
            "--save-whitening saves the whitening learned in this run, and none is learned",
            "add --whitening pca or --whitening learned",
        )
    if args.shrinkage is not None and not learns:
        raise CommandError(
            "--shrinkage regularises a whitening learned in this run, and none is learned",
            "add --whitening pca or --whitening learned",
        )
    if args.whitening == "learned" and data.target is None:
        raise CommandError(
            f"--whitening learned needs labels (matching pairs), and {data.name} has none",
            "use --whitening pca, or learn it on a labelled collection (folder, holidays, "
            "ukbench) with --save-whitening and apply it here with --whitening-from",
        )


def make_describer(args):
    """The estimator from images to descriptors: the extractor with fused pooling (global
    descriptors), or the extractor's feature maps -> ``LocalPCA`` -> covariance or mixture."""
    if args.descriptor == "global":
        extractor = make_extractor(args, pooling=make_pooling(args.pooling))
        return extractor.set_params(scales=args.scales)
    from sklearn.pipeline import make_pipeline

    from skretrieval.descriptors import GMMDescriptor, LocalPCA, SparseCovariance

    local = LocalPCA(n_components=args.local_dim, random_state=0)
    if args.descriptor == "covariance":
        distribution = SparseCovariance()
    else:
        distribution = GMMDescriptor(n_components=args.components, random_state=0)
    return make_pipeline(make_extractor(args), local, distribution)


def cache_folder(args):
    """The --cache folder, or None with a warning for the descriptors it does not keep."""
    if args.cache is not None and args.descriptor != "global":
        warnings.warn(
            f"--cache keeps pooled global descriptors only; the {args.descriptor} descriptors "
            "(learned from the database) are computed again and not cached.",
            UserWarning,
            stacklevel=2,
        )
        return None
    return args.cache


def cache_tag(args):
    """The readable part of the cache file names."""
    scales = "" if args.scales is None else "-s" + "_".join(f"{s:g}" for s in args.scales)
    return f"{args.backbone}-{args.pooling}-{args.max_size}{scales}"


def read_whitening(args):
    """The whitening of --whitening-from (None without it), read before any image is described."""
    from skretrieval.persistence import load

    if args.whitening_from is None:
        return None
    whitening = load(args.whitening_from)
    if not hasattr(whitening, "transform") or not hasattr(whitening, "n_features_in_"):
        raise CommandError(
            f"--whitening-from {args.whitening_from!r} holds a {type(whitening).__name__}, not a "
            "fitted whitening",
            "give a file written by --save-whitening",
        )
    return whitening


def whiten(args, data, database, queries, saved=None):
    """Learn the whitening, or take the ``saved`` one, and apply it to the descriptors.

    Returns the whitened ``database`` and ``queries``, and the whitening (None without one).
    """
    from skretrieval.whitening import LearnedWhitening, PCAWhitening

    if saved is not None:
        whitening = saved
        if whitening.n_features_in_ != database.shape[1]:
            raise CommandError(
                f"the whitening of --whitening-from {args.whitening_from!r} takes "
                f"{whitening.n_features_in_} features, these descriptors have "
                f"{database.shape[1]}",
                "learn it with the same --backbone and --pooling",
            )
    elif args.whitening == "none":
        return database, queries, None
    else:
        shrinkage = 0.0 if args.shrinkage is None else args.shrinkage
        if args.whitening == "pca":
            whitening = PCAWhitening(shrinkage=shrinkage).fit(database)
        else:
            whitening = LearnedWhitening(shrinkage=shrinkage).fit(database, data.target)
    # UKBench: the queries are the database images themselves, whitened once.
    same = queries is database
    database = whitening.transform(database)
    if same:
        queries = database
    elif queries is not None:
        queries = whitening.transform(queries)
    return database, queries, whitening


def retriever_params(args):
    """The :class:`~skretrieval.neighbors.ImageRetriever` parameters of the search options."""
    expansion = None if args.query_expansion == "none" else args.query_expansion
    return {
        "query_expansion": expansion,
        "qe_neighbors": args.qe_neighbors,
        "qe_alpha": args.qe_alpha,
        "dba_neighbors": args.dba,
        "rerank": None if args.rerank == "none" else args.rerank.replace("-", "_"),
        "rerank_neighbors": args.rerank_neighbors,
    }


def describe_pipeline(args):
    """The pipeline in words, for the first printed line."""
    if args.descriptor == "global":
        parts = [args.backbone, POOLING_NAMES[args.pooling]]
        if args.scales is not None:
            parts.append("scales " + ", ".join(f"{s:g}" for s in args.scales))
    else:
        parts = [args.backbone, f"{_DESCRIPTOR_NAMES[args.descriptor]} (dimension "]
        parts[-1] += f"{args.local_dim}" + (
            f", {args.components} components)" if args.descriptor == "gmm" else ")"
        )
    parts.append(f"max size {args.max_size}")
    if args.whitening_from is not None:
        parts.append(f"whitening read from {args.whitening_from}")
    elif args.whitening == "pca":
        parts.append("PCA whitening learned on the database")
    elif args.whitening == "learned":
        parts.append("whitening learned from the database labels")
    parts.append(f"{args.metric} distance")
    if args.query_expansion != "none":
        parts.append(f"{args.query_expansion} query expansion ({args.qe_neighbors} neighbours)")
    if args.dba is not None:
        parts.append(f"DBA ({args.dba} neighbours)")
    if args.rerank != "none":
        parts.append(f"{args.rerank} re-ranking ({args.rerank_neighbors} neighbours)")
    return ", ".join(parts)


def settings(args):
    """The pipeline's settings, as the CSV columns record them ('' where not applicable)."""
    global_ = args.descriptor == "global"
    learns = args.whitening != "none"
    whitening = "file" if args.whitening_from is not None else args.whitening
    return {
        "backbone": args.backbone,
        "weights": args.weights,
        "descriptor": args.descriptor,
        "pooling": args.pooling if global_ else "",
        "scales": " ".join(f"{s:g}" for s in args.scales) if args.scales else "",
        "local_dim": "" if global_ else args.local_dim,
        "components": args.components if args.descriptor == "gmm" else "",
        "whitening": whitening,
        "shrinkage": (args.shrinkage or 0.0) if learns else "",
        "whitening_from": args.whitening_from or "",
        "metric": args.metric,
        "query_expansion": args.query_expansion,
        "qe_neighbors": args.qe_neighbors if args.query_expansion != "none" else "",
        "qe_alpha": args.qe_alpha if args.query_expansion == "alpha" else "",
        "dba": "" if args.dba is None else args.dba,
        "rerank": args.rerank,
        "rerank_neighbors": args.rerank_neighbors if args.rerank != "none" else "",
        "max_size": args.max_size,
    }
