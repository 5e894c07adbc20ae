"""Renamed estimator parameters: the old name keeps working for a while, with a warning."""

import warnings

# The release that renamed the parameters, and the one that will drop their old names.
RENAMED_IN = "0.3"
REMOVED_IN = "0.5"


def renamed_parameter(estimator, old, new):
    """The value in effect of parameter ``new``, whose former name is ``old``.

    ``old`` defaults to the string ``"deprecated"``; when a user sets it, its value wins and a
    ``FutureWarning`` says to use ``new``.

    Examples
    --------
    >>> import warnings
    >>> from types import SimpleNamespace
    >>> from skretrieval._utils.deprecation import renamed_parameter
    >>> renamed_parameter(SimpleNamespace(verbose=True, progress="deprecated"), "progress",
    ...                   "verbose")
    True
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_parameter(SimpleNamespace(verbose=True, progress=False), "progress", "verbose")
    False
    >>> str(caught[0].message)
    '`progress` was renamed `verbose` in 0.3 and will be removed in 0.5; use `verbose` instead.'
    """
    value = getattr(estimator, old)
    if isinstance(value, str) and value == "deprecated":
        return getattr(estimator, new)
    warnings.warn(
        f"`{old}` was renamed `{new}` in {RENAMED_IN} and will be removed in {REMOVED_IN}; use "
        f"`{new}` instead.",
        FutureWarning,
        stacklevel=3,
    )
    return value


def upgrade_renamed_state(state, renames):
    """Rename the parameters of an estimator pickled before ``renames`` (old -> new), in place.

    The pickle holds the old names; the estimator now has both, the old one ``"deprecated"``.
    """
    for old, new in renames.items():
        if new not in state and old in state:
            state[new] = state[old]
            state[old] = "deprecated"
    return state
