"""Exact solver for many small discrete optimal transport problems at once.

The mixture Wasserstein distance (:func:`skretrieval.geometry.mixture_wasserstein_distances`)
needs one ``K_q x K_d`` transportation problem per pair of images, with ``K`` a handful of
mixture components. Solving them one by one costs a Python call each; here the transportation
simplex runs in lockstep over the whole batch, with numpy operations over the problems and
Python loops only over simplex iterations and over the few rows or columns of one problem.

The simplex is the revised simplex on the transportation polytope. The ``m + k`` marginal
constraints have rank ``m + k - 1``; the last column constraint is dropped, and a basis is a set
of ``m + k - 1`` cells forming a spanning tree of the bipartite row/column graph. Its basis
matrix is totally unimodular, so its inverse has entries in {-1, 0, 1}: it is kept explicitly
(as int8) and updated by exact integer pivots, so no round-off accumulates in it. The first
basis comes from the minimum-cost rule, and its inverse from the tree's paths to the root (a
unit of row i's supply travels from row i to the last column along the tree). Each iteration
computes the dual potentials ``y = c_B B^-1`` and the reduced costs ``c_ij - u_i - v_j``; the
most negative one enters (Dantzig's rule); the entering cell's column of ``B^-1`` gives the
cycle it closes in the tree, with signs; a ratio test picks the leaving cell.

Degenerate problems (equal or zero weights, which mixtures have often) are handled by a
lexicographic perturbation of the marginals: ``a_i + k eps`` and ``b_j + eps`` for ``j < k - 1``,
``b_{k-1} + (m k - k + 1) eps``. No proper subset of rows and columns balances under it, so the
perturbed problem is nondegenerate, every pivot strictly decreases the (lexicographic)
objective, and the simplex cannot cycle. ``eps`` stays symbolic: every flow is carried as a pair
(real part, integer coefficient of ``eps``), compared lexicographically, and the reported plan is
the real part, an optimal basic solution of the original problem.
"""

from numbers import Integral

import numpy as np

__all__ = ["batched_transport_cost"]

# Floats within this many units of the total mass count as equal in the ratio tests: a basic
# flow is a signed sum of at most m + k marginals, exact up to a few ulps.
_MASS_TOLERANCE = 1e-13
# Reduced costs above -this * max |cost| count as non-negative (optimality). The potentials are
# signed sums of at most m + k costs, exact up to a few ulps of the largest cost.
_COST_TOLERANCE = 1e-13
# Problems solved together: a block's basis inverses hold about this many entries, which keeps
# the arrays of one block in cache (measured best among powers of 2 for 4x4 and 8x8).
_BLOCK_ENTRIES = 2**20


def _check_problems(a, b, cost):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or cost.ndim != 3:
        raise ValueError(
            "Expected source weights a of shape (n, m), target weights b of shape (n, k) and "
            f"costs of shape (n, m, k); got a {a.shape}, b {b.shape}, cost {cost.shape}."
        )
    n, m = a.shape
    if b.shape[0] != n or cost.shape != (n, m, b.shape[1]):
        raise ValueError(
            f"Inconsistent shapes: a {a.shape} and b {b.shape} need costs of shape "
            f"{(n, m, b.shape[1])}; got {cost.shape}."
        )
    if m == 0 or b.shape[1] == 0:
        raise ValueError(
            f"Each problem needs at least one source and one target; got m={m}, k={b.shape[1]}."
        )
    for name, array in (("a", a), ("b", b), ("cost", cost)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or infinite values.")
    for name, array in (("a", a), ("b", b)):
        if np.any(array < 0):
            raise ValueError(f"The weights {name} must be non-negative.")
        if n and np.any(array.sum(axis=1) <= 0):
            raise ValueError(f"Every row of the weights {name} must have a positive sum.")
    return a, b, cost


def batched_transport_cost(a, b, cost, *, return_plans=False, max_iter=None):
    """Exact optimal transport costs of ``n`` small problems, solved together.

    For each problem ``p``, ``min_P sum_ij P_ij cost[p, i, j]`` over the non-negative ``P``
    with row sums ``a[p]`` and column sums ``b[p]`` (``b[p]`` is first rescaled to the total of
    ``a[p]``, so that a mismatch of round-off size between the totals is tolerated).

    Parameters
    ----------
    a : array-like of shape (n, m)
        Source weights, non-negative, each row with a positive sum.
    b : array-like of shape (n, k)
        Target weights, non-negative, each row with a positive sum.
    cost : array-like of shape (n, m, k)
        Finite transport costs.
    return_plans : bool, default=False
        Also return the optimal plans.
    max_iter : int, default=None
        Simplex iterations allowed; ``None`` means ``50 (m + k)``, far more than needed.

    Returns
    -------
    costs : ndarray of shape (n,)
        Optimal transport costs.
    plans : ndarray of shape (n, m, k)
        Optimal plans (basic solutions, at most ``m + k - 1`` non-zero cells); only when
        ``return_plans`` is True.

    Raises
    ------
    RuntimeError
        If some problem is not solved within ``max_iter`` simplex iterations.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0.5, 0.5]])
    >>> b = np.array([[0.5, 0.5]])
    >>> cost = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    >>> batched_transport_cost(a, b, cost)
    array([0.])
    """
    a, b, cost = _check_problems(a, b, cost)
    if max_iter is not None and (
        isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 0
    ):
        raise ValueError(f"max_iter must be a non-negative integer or None; got {max_iter!r}.")
    n, m = a.shape
    k = b.shape[1]
    totals = a.sum(axis=1)
    b = b * (totals / b.sum(axis=1))[:, None]
    if m == 1 or k == 1:
        # A single source or target: the product of the weights is the only plan.
        plans = a[:, :, None] * b[:, None, :] / totals[:, None, None]
        costs = np.einsum("pij,pij->p", plans, cost)
        return (costs, plans) if return_plans else costs

    if max_iter is None:
        max_iter = 50 * (m + k)
    n_basic = m + k - 1
    # Inside, the problems run along the last axis: numpy then loops over contiguous problems
    # rather than over rows of m or k numbers.
    cells = np.empty((n_basic, n), dtype=np.intp)
    flows = np.empty((n_basic, n))
    block = max(1024, _BLOCK_ENTRIES // (n_basic * n_basic))
    for start in range(0, n, block):
        part = slice(start, start + block)
        cells[:, part], flows[:, part] = _solve_block(
            np.ascontiguousarray(a[part].T),
            np.ascontiguousarray(b[part].T),
            np.ascontiguousarray(cost[part].transpose(1, 2, 0)),
            max_iter,
        )
    cells, flows = cells.T, flows.T
    flat_cost = cost.reshape(n, m * k)
    costs = np.einsum("pt,pt->p", np.take_along_axis(flat_cost, cells, axis=1), flows)
    if not return_plans:
        return costs
    plans = np.zeros((n, m * k))
    np.put_along_axis(plans, cells, flows, axis=1)
    return costs, plans.reshape(n, m, k)


def _perturbation(m, k):
    """Integer coefficients of ``eps`` added to the row and column weights."""
    row = np.full(m, float(k))
    column = np.ones(k)
    column[-1] = m * k - k + 1
    return row, column


def _lex_less_equal(x0, x1, y0, y1, tolerance):
    """``x0 + x1 eps <= y0 + y1 eps`` for an infinitesimal ``eps``, reals equal within tolerance."""
    close = np.abs(x0 - y0) <= tolerance
    return np.where(close, (x1 < y1) | ((x1 == y1) & (x0 <= y0)), x0 < y0)


def _greedy_basis(a, b, cost, tolerance):
    """Initial basis by the minimum-cost rule on the perturbed problem.

    Each step fills the cheapest cell of the open rows and columns with as much as it can carry
    and closes the line (row or column) that this exhausts. The cell filled at a step is the
    last one of the line it closes, hence the cells form no cycle: the m + k - 1 of them make a
    spanning tree, and a feasible basis since the perturbed problem is nondegenerate.

    ``a`` is ``(m, n)``, ``b`` ``(k, n)``, ``cost`` ``(m, k, n)``. Returns the cells
    ``(m + k - 1, n)`` (flat indices ``i k + j``) and, for the tree rooted at the line left open
    at the end, the node each cell hangs below (the line it closed) and its parent node (same
    shape; rows are nodes ``0..m-1``, columns ``m..m+k-1``). Read backwards, the steps list
    parents before children.
    """
    m, n = a.shape
    k = b.shape[0]
    row_eps, column_eps = _perturbation(m, k)
    supply0, supply1 = a.copy(), np.repeat(row_eps[:, None], n, axis=1)
    demand0, demand1 = b.copy(), np.repeat(column_eps[:, None], n, axis=1)
    # Closed rows and columns cost +inf.
    row_closed = np.zeros((m, n))
    column_closed = np.zeros((k, n))
    n_open_rows = np.full(n, m)
    n_open_columns = np.full(n, k)
    problems = np.arange(n)
    n_basic = m + k - 1
    cells = np.empty((n_basic, n), dtype=np.intp)
    children = np.empty((n_basic, n), dtype=np.intp)
    parents = np.empty((n_basic, n), dtype=np.intp)
    for step in range(n_basic):
        open_cost = cost + row_closed[:, None, :]
        open_cost += column_closed[None, :, :]
        chosen = _argmin_first_axis(open_cost.reshape(m * k, n))
        cells[step] = chosen
        i, j = np.divmod(chosen, k)
        s0, s1 = supply0[i, problems], supply1[i, problems]
        d0, d1 = demand0[j, problems], demand1[j, problems]
        row_exhausted = _lex_less_equal(s0, s1, d0, d1, tolerance)
        # The last open row (column) stays open so that every line keeps an open cell.
        close_row = (n_open_rows > 1) & ((n_open_columns == 1) | row_exhausted)
        moved0 = np.where(row_exhausted, s0, d0)
        moved1 = np.where(row_exhausted, s1, d1)
        supply0[i, problems] -= moved0
        supply1[i, problems] -= moved1
        demand0[j, problems] -= moved0
        demand1[j, problems] -= moved1
        row_closed[i[close_row], problems[close_row]] = np.inf
        column_closed[j[~close_row], problems[~close_row]] = np.inf
        n_open_rows -= close_row
        n_open_columns -= ~close_row
        children[step] = np.where(close_row, i, m + j)
        parents[step] = np.where(close_row, m + j, i)
    return cells, children, parents


def _tree_basis_inverse(children, parents, m, k):
    """Exact inverse of the basis matrices of spanning trees, ``(m + k - 1, m + k - 1, n)``.

    Constraint ``i < m`` is the sum of row ``i``, constraint ``m + j`` the sum of column
    ``j < k - 1`` (the last column's is the redundant one, dropped); the basis matrix's column
    for basic cell ``t = (i, j)`` has ones at ``i`` and ``m + j``. Its inverse maps marginals to
    the tree's flows: a unit of row ``i`` reaches the root (the last column) along the tree
    path, a unit of column ``j`` comes from it. So ``B^-1[t, l] = sign(child end of t) sign(l)``
    when node ``l`` lies below edge ``t`` seen from the last column, else 0, with sign +1 for
    rows and -1 for columns. ``children``/``parents`` root the tree elsewhere (at the line the
    greedy rule left open); seen from the last column, an edge whose subtree holds the last
    column is turned around.
    """
    n_basic, n = children.shape
    n_nodes = n_basic + 1
    problems = np.arange(n)
    if n_nodes <= 64:
        # ancestors[v]: bit w set when w is v or an ancestor of v. The last step's parent is
        # the root; going backwards, each child's parent already has its bits.
        ancestors = np.zeros((n_nodes, n), dtype=np.uint64)
        bits = np.left_shift(np.uint64(1), np.arange(n_nodes, dtype=np.uint64))
        root = parents[-1]
        ancestors[root, problems] = bits[root]
        for step in range(n_basic - 1, -1, -1):
            child = children[step]
            ancestors[child, problems] = ancestors[parents[step], problems] | bits[child]
        # in_subtree[v, t]: node v lies in the subtree hanging from edge t.
        in_subtree = (ancestors[:, None, :] & bits[children][None]) != 0
    else:  # the same with one boolean per (node, ancestor) pair
        ancestors = np.zeros((n_nodes, n_nodes, n), dtype=bool)
        root = parents[-1]
        ancestors[root, root, problems] = True
        for step in range(n_basic - 1, -1, -1):
            child = children[step]
            ancestors[child, :, problems] = ancestors[parents[step], :, problems]
            ancestors[child, child, problems] = True
        in_subtree = ancestors[:, children, problems]
    last_column_inside = in_subtree[-1]  # (t, n)
    below = in_subtree[:-1] ^ last_column_inside  # (l, t, n)
    child_end = np.where(last_column_inside, parents, children)
    node_sign = np.where(np.arange(n_nodes) < m, 1, -1).astype(np.int8)
    edge_sign = node_sign[child_end]  # (t, n)
    inverse = np.where(below.transpose(1, 0, 2), edge_sign[:, None, :], np.int8(0))
    inverse *= node_sign[None, :-1, None]
    return inverse


def _solve_block(a, b, cost, max_iter):
    """Optimal basic cells and flows, ``(m + k - 1, n)`` each, for a block of problems.

    ``a`` is ``(m, n)``, ``b`` ``(k, n)``, ``cost`` ``(m, k, n)``: problems along the last axis.
    """
    m, n = a.shape
    k = b.shape[0]
    n_basic = m + k - 1
    flat_cost = cost.reshape(m * k, n)
    mass_tolerance = _MASS_TOLERANCE * a.sum(axis=0)
    cost_tolerance = _COST_TOLERANCE * np.abs(flat_cost).max(axis=0)

    cells, children, parents = _greedy_basis(a, b, cost, mass_tolerance)
    inverse = _tree_basis_inverse(children, parents, m, k)
    row_eps, column_eps = _perturbation(m, k)
    marginals = np.concatenate([a, b[:-1]], axis=0)  # right-hand sides of the kept constraints
    # Basic flows as (real part, coefficient of eps); the eps parts are exact integers.
    flows = _basis_solve(inverse, marginals)
    flows_eps = _basis_solve(inverse, np.concatenate([row_eps, column_eps[:-1]])[:, None])
    problems = np.arange(n)
    basic_cost = flat_cost[cells, problems]

    out_cells = np.empty((n_basic, n), dtype=np.intp)
    out_flows = np.empty((n_basic, n))
    original = np.arange(n)  # position in the block of each problem still held
    finished = np.zeros(n, dtype=bool)
    for iteration in range(max_iter + 1):
        held = len(original)
        problems = np.arange(held)
        duals = _dual_potentials(basic_cost, inverse)  # y = c_B B^-1, (m + k - 1, held)
        reduced = cost - duals[:m, None, :]
        reduced[:, : k - 1] -= duals[None, m:, :]
        reduced = reduced.reshape(m * k, held)
        entering = _argmin_first_axis(reduced)
        most_negative = reduced[entering, problems]
        newly = ~finished & (most_negative >= -cost_tolerance)
        if newly.any():
            # Exact flows of the optimal basis: B^-1 is exact, only the final sums round.
            exact = _basis_solve(inverse[:, :, newly], marginals[:, newly])
            out_cells[:, original[newly]] = cells[:, newly]
            # Lexicographically non-negative flows have a real part >= -tolerance.
            out_flows[:, original[newly]] = np.maximum(exact, 0.0)
            finished |= newly
        if finished.all():
            return out_cells, out_flows
        if iteration == max_iter:
            break
        if finished.mean() > 0.25:
            # Drop the solved problems once they are a good share of the work.
            keep = ~finished
            original, cells, inverse = original[keep], cells[:, keep], inverse[:, :, keep]
            flows, flows_eps = flows[:, keep], flows_eps[:, keep]
            basic_cost, marginals = basic_cost[:, keep], marginals[:, keep]
            cost, flat_cost = cost[:, :, keep], flat_cost[:, keep]
            mass_tolerance, cost_tolerance = mass_tolerance[keep], cost_tolerance[keep]
            entering, finished = entering[keep], finished[keep]
            held = len(original)
            problems = np.arange(held)

        # The entering cell's column of the constraint matrix in the basis: d = B^-1 A_e,
        # entries in {-1, 0, 1}. Raising the entering flow by theta changes the basic flows by
        # -theta d: d marks the cycle the entering cell closes in the tree, with its signs.
        p, q = np.divmod(entering, k)
        direction = inverse[:, p, problems]
        in_kept_column = q < k - 1
        direction += np.where(
            in_kept_column, inverse[:, np.minimum(m + q, n_basic - 1), problems], np.int8(0)
        )
        direction[:, finished] = 0  # solved problems pivot on nothing
        # Ratio test: the leaving cell carries the lexicographically smallest flow among those
        # that decrease (d_t = 1); unique, as the perturbed problem is nondegenerate.
        decreasing = direction > 0
        smallest = np.where(decreasing, flows, np.inf).min(axis=0)
        tied = decreasing & (flows <= smallest + mass_tolerance)
        leaving = _argmin_first_axis(np.where(tied, flows_eps, np.inf))
        step = np.where(finished, 0.0, flows[leaving, problems])
        step_eps = np.where(finished, 0.0, flows_eps[leaving, problems])
        entering = np.where(finished, cells[leaving, problems], entering)

        # Pivot. Flows: x_B - theta d, and theta on the entering cell. Inverse:
        # B'^-1 = B^-1 - (d - e_r) (row r of B^-1), exact on these integers.
        flows -= step * direction
        flows_eps -= step_eps * direction
        flows[leaving, problems] = step
        flows_eps[leaving, problems] = step_eps
        pivot_row = inverse[leaving, :, problems].T  # (l, held), a copy
        direction[leaving, problems] -= 1
        direction[:, finished] = 0
        for position in range(n_basic):  # row by row: no (m + k - 1)^2 temporary
            inverse[position] -= direction[position] * pivot_row
        cells[leaving, problems] = entering
        basic_cost[leaving, problems] = flat_cost[entering, problems]

    raise RuntimeError(
        f"The transportation simplex did not finish {np.count_nonzero(~finished)} of {n} "
        f"problems of size {m}x{k} (in one block) within max_iter={max_iter} iterations."
    )


def _basis_solve(inverse, rhs):
    """``B^-1 rhs`` for each problem: ``(t, l, n)`` and ``(l, n)`` -> ``(t, n)``."""
    result = inverse[:, 0] * rhs[0]
    for constraint in range(1, rhs.shape[0]):
        result += inverse[:, constraint] * rhs[constraint]
    return result


def _dual_potentials(basic_cost, inverse):
    """``c_B B^-1`` for each problem: ``(t, n)`` and ``(t, l, n)`` -> ``(l, n)``."""
    result = basic_cost[0] * inverse[0]
    for position in range(1, basic_cost.shape[0]):
        result += basic_cost[position] * inverse[position]
    return result


def _argmin_first_axis(values):
    """``np.argmin(values, axis=0)`` for a few rows of many problems (numpy's is slow there)."""
    if values.shape[1] < 1024:  # few problems: one call beats a call per row
        return np.argmin(values, axis=0)
    smallest = values.min(axis=0)
    index = np.full(values.shape[1], values.shape[0] - 1, dtype=np.intp)
    for row in range(values.shape[0] - 2, -1, -1):
        np.copyto(index, row, where=values[row] == smallest)
    return index
