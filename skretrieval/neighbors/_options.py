"""The checks of :class:`~skretrieval.neighbors.ImageRetriever`'s options that depend on the
metric and the database (``_parameter_constraints`` check each parameter alone): run at ``fit``
before any fitted attribute is set, so that a bad combination leaves no half fit."""

from skretrieval.neighbors._riemannian import SPD_MEANS


def check_quantizer_option(retriever, kernel):
    """Product quantisation compares vectors by Euclidean distance: vector metrics only."""
    is_vectors = kernel.descriptor == "vectors" and retriever.metric in ("cosine", "euclidean")
    if retriever.quantizer is not None and not is_vectors:
        raise ValueError(
            f"quantizer={retriever.quantizer!r} needs metric='cosine' or 'euclidean' (product "
            f"quantisation approximates Euclidean distances between vectors); got "
            f"metric={retriever.metric!r} on {kernel.descriptor}."
        )


def _check_size(name, value, n_samples):
    # Leave-one-out search (and DBA, the graphs of re-ranking) must find `value` other items.
    if value is not None and value > n_samples - 1:
        raise ValueError(
            f"{name}={value} needs at least {value + 1} database items (the neighbours plus the "
            f"item itself); the database has n_samples={n_samples}."
        )


def is_spd_expansion(retriever, kernel):
    """Whether query expansion averages SPD matrices with a Riemannian mean."""
    return (
        retriever.query_expansion is not None
        and kernel.descriptor == "SPD matrices"
        and kernel.name in SPD_MEANS
    )


def check_expansion_options(retriever, kernel, n_samples):
    """Query expansion and DBA average unit vectors (cosine), or SPD matrices (average QE)."""
    is_cosine = kernel.name == "cosine" and kernel.descriptor == "vectors"
    if is_spd_expansion(retriever, kernel) and retriever.query_expansion != "average":
        raise ValueError(
            f"query_expansion={retriever.query_expansion!r} needs metric='cosine' (its weights "
            f"are cosine similarities); on SPD matrices use query_expansion='average' (a "
            f"Riemannian mean); got metric={retriever.metric!r} on {kernel.descriptor}."
        )
    for name in ("query_expansion", "dba_neighbors"):
        value = getattr(retriever, name)
        spd_ok = name == "query_expansion" and is_spd_expansion(retriever, kernel)
        if value is not None and not is_cosine and not spd_ok:
            also = (
                f", or an SPD metric ({', '.join(map(repr, SPD_MEANS))}) with 'average'"
                if name == "query_expansion"
                else ""
            )
            raise ValueError(
                f"{name}={value!r} needs metric='cosine' (it averages L2-normalised vectors)"
                f"{also}; got metric={retriever.metric!r} on {kernel.descriptor}."
            )
    _check_size("dba_neighbors", retriever.dba_neighbors, n_samples)
    if retriever.query_expansion is not None:
        _check_size("qe_neighbors", retriever.qe_neighbors, n_samples)


def check_rerank_options(retriever, kernel, n_samples):
    """Re-ranking needs the full distance rows of an uncompressed, in-memory database."""
    if retriever.rerank is None:
        return
    if retriever.quantizer is not None:
        raise ValueError(
            f"rerank={retriever.rerank!r} is not supported with a quantizer (it builds a graph "
            "of exact distances between database items); set quantizer=None or rerank=None."
        )
    if retriever.rerank == "diffusion" and not (
        kernel.name == "cosine" and kernel.descriptor == "vectors"
    ):
        raise ValueError(
            f"rerank='diffusion' needs metric='cosine' (its affinities are cosine "
            f"similarities); got metric={retriever.metric!r} on {kernel.descriptor}. "
            "rerank='k_reciprocal' works with any metric."
        )
    _check_size("rerank_neighbors", retriever.rerank_neighbors, n_samples)
    k2 = retriever.reciprocal_expansion
    if retriever.rerank == "k_reciprocal" and k2 > n_samples:
        raise ValueError(
            f"reciprocal_expansion={k2} needs at least {k2} database items (a query is expanded "
            f"with its {k2 - 1} nearest); the database has n_samples={n_samples}."
        )
