import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from skretrieval.datasets import make_copydays  # noqa: E402
from skretrieval.plotting import plot_precision_recall, plot_retrieval_grid  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def copydays():
    return make_copydays(
        n_copies_per_image=4, sources=["astronaut", "coffee", "chelsea"], max_size=96
    )


def _same_color(a, b):
    return np.allclose(mcolors.to_rgba(a), mcolors.to_rgba(b))


# ---------------------------------------------------------------------------------------------
# plot_retrieval_grid
# ---------------------------------------------------------------------------------------------


def test_retrieval_grid_layout_frames_and_labels(copydays, tmp_path):
    images = copydays.images
    queries = images[:3]
    database = images[3:]
    database_target = copydays.target[3:]
    # Hand-made rankings: two copies of the query's photo, then one of another photo.
    indices = np.array([[0, 1, 4], [4, 5, 8], [8, 9, 0]])
    relevant = database_target[indices] == copydays.target[:3, None]
    distances = np.linspace(0.1, 0.9, 9).reshape(3, 3)
    fig = plot_retrieval_grid(
        queries,
        database,
        indices,
        distances=distances,
        relevant=relevant,
        query_titles=list(copydays.target_names),
    )
    assert len(fig.axes) == 3 * 4
    axes = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_title() for ax in axes[:, 0]] == ["astronaut", "coffee", "chelsea"]
    assert [ax.get_title() for ax in axes[0, 1:]] == ["#1", "#2", "#3"]
    for row in range(3):
        for rank in range(3):
            ax = axes[row, rank + 1]
            expected = "tab:green" if relevant[row, rank] else "tab:red"
            assert _same_color(ax.spines["top"].get_edgecolor(), expected)
            assert ax.get_xlabel() == f"{distances[row, rank]:.3g}"
            # The drawn image is the indexed database image.
            drawn = ax.get_images()[0].get_array()
            assert np.array_equal(drawn, database[indices[row, rank]])
    assert relevant.tolist() == [[True, True, False]] * 3

    path = tmp_path / "grid.png"
    fig.savefig(path, dpi=60)
    with Image.open(path) as saved:
        width, height = saved.size
        pixels = np.asarray(saved.convert("RGB"))
    assert width > height > 0
    assert pixels.std() > 10  # photographs, not a blank canvas


def test_retrieval_grid_labels_caption_and_colour_each_result():
    images = [np.full((4, 4, 3), value, dtype=np.uint8) for value in (0, 80, 160, 240)]
    labels = [["easy", "junk", "negative"], ["hard", "easy", "junk"]]
    fig = plot_retrieval_grid(
        images[:2],
        images,
        [[1, 2, 3], [0, 2, 3]],
        distances=[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
        labels=labels,
        label_colors={"easy": "tab:green", "negative": "tab:red"},
    )
    axes = np.array(fig.axes).reshape(2, 4)
    assert axes[0, 1].get_xlabel() == "easy  0.1" and axes[1, 3].get_xlabel() == "junk  0.6"
    frames = {
        label: axes[row, rank + 1].spines["top"].get_edgecolor()
        for row, ranking in enumerate(labels)
        for rank, label in enumerate(ranking)
    }
    assert _same_color(frames["easy"], "tab:green") and _same_color(frames["negative"], "tab:red")
    # Categories without a colour take the cycle's first colours, in order of appearance.
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    assert _same_color(frames["junk"], cycle[0]) and _same_color(frames["hard"], cycle[1])


def test_retrieval_grid_accepts_pil_images_paths_and_gray(tmp_path):
    rng = np.random.RandomState(0)
    arrays = [rng.randint(0, 256, size=(10, 12, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "db.png"
    Image.fromarray(arrays[2]).save(path)
    database = [Image.fromarray(arrays[0]), arrays[1].mean(axis=2), str(path)]
    query = [rng.rand(6, 6, 3)]  # float image in [0, 1]
    fig = plot_retrieval_grid(query, database, [[2, 0, 1]])
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_title() == "query 0"
    assert np.array_equal(axes[1].get_images()[0].get_array(), arrays[2])
    assert np.array_equal(axes[2].get_images()[0].get_array(), arrays[0])
    assert axes[3].get_images()[0].get_cmap().name == "gray"
    # Without relevance, results keep matplotlib's default (black) spines.
    assert _same_color(axes[1].spines["top"].get_edgecolor(), "black")


def test_retrieval_grid_max_queries(copydays):
    images = copydays.images
    indices = np.tile(np.arange(5), (6, 1))
    fig = plot_retrieval_grid(images[:6], images, indices, max_queries=2)
    assert len(fig.axes) == 2 * 6
    fig = plot_retrieval_grid(images[:6], images, indices, max_queries=None)
    assert len(fig.axes) == 6 * 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(indices=[0, 1]), "2-D array"),
        (dict(indices=[[0, 5]]), r"in \[0, 3\)"),
        (dict(indices=[[0, -1]]), r"in \[0, 3\)"),
        (dict(indices=[[0.0, 1.0]]), "integer"),
        (dict(indices=[[0, 1], [1, 2]]), "1 images but indices has 2 rows"),
        (dict(distances=[[0.1, 0.2, 0.3]]), "distances must have the shape"),
        (dict(relevant=[[1, 2]]), "relevant must be boolean"),
        (dict(query_titles="q"), "query_titles"),
        (dict(max_queries=0), "max_queries"),
        (dict(ax_size=-1), "ax_size"),
        (dict(labels=[["easy"]]), "labels must have the shape"),
        (dict(labels=[["a", "b"]], relevant=[[True, False]]), "relevant or labels, not both"),
        (dict(labels=[["a", "b"]], label_colors=["red"]), "label_colors must be a dict"),
    ],
)
def test_retrieval_grid_rejects_bad_input(kwargs, match):
    images = [np.zeros((4, 4, 3), dtype=np.uint8)] * 3
    params = dict(indices=[[0, 1]])
    params.update(kwargs)
    indices = params.pop("indices")
    with pytest.raises(ValueError, match=match):
        plot_retrieval_grid(images[:1], images, indices, **params)


def test_retrieval_grid_rejects_bad_images(tmp_path):
    good = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"database_images\[1\] must be an image"):
        plot_retrieval_grid([good], [good, np.zeros((4, 4, 5))], [[1]])
    with pytest.raises(ValueError, match="cannot read image file"):
        plot_retrieval_grid([str(tmp_path / "missing.png")], [good], [[0]])


# ---------------------------------------------------------------------------------------------
# plot_precision_recall
# ---------------------------------------------------------------------------------------------


def _interpolated_oracle(truth, score, levels):
    """Interpolated precision by brute force over every cut-off (no ties in ``score``)."""
    order = np.argsort(-score)
    hits = truth[order]
    cutoffs = []
    for k in range(1, len(hits) + 1):
        found = hits[:k].sum()
        cutoffs.append((found / hits.sum(), found / k))
    curve = []
    for level in levels:
        curve.append(max(p for r, p in cutoffs if r >= level - 1e-12))
    return np.array(curve)


def test_precision_recall_hand_worked_case():
    # Ranking: relevant, not, relevant, not. Precisions 1, 1/2, 2/3, 1/2 at recalls
    # 1/2, 1/2, 1, 1; interpolated precision is 1 up to recall 1/2, then 2/3. AP = (1 + 2/3)/2.
    y_true = np.array([1, 0, 1, 0])
    y_score = np.array([0.9, 0.8, 0.7, 0.1])
    ax = plot_precision_recall(y_true, y_score, n_levels=5)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(line.get_ydata(), [1, 1, 1, 2 / 3, 2 / 3])
    assert ax.get_legend_handles_labels()[1] == [f"mean (mAP = {(1 + 2 / 3) / 2:.3f})"]
    assert ax.get_xlabel() == "Recall"


def test_precision_recall_mean_matches_oracle():
    rng = np.random.RandomState(0)
    y_true = rng.rand(6, 30) < 0.3
    y_true[0] = False  # a query without relevant items is skipped
    y_true[1, 0] = True
    y_score = rng.rand(6, 30)
    levels = np.linspace(0, 1, 11)
    fig, ax = plt.subplots()
    returned = plot_precision_recall(
        y_true, y_score, ax=ax, label="random", per_query=True, n_levels=11
    )
    assert returned is ax
    lines = ax.get_lines()
    assert len(lines) == 5 + 1  # five queries with positives, then the mean
    oracle = np.array(
        [_interpolated_oracle(t, s, levels) for t, s in zip(y_true[1:], y_score[1:], strict=True)]
    )
    for line, expected in zip(lines[:5], oracle, strict=True):
        np.testing.assert_allclose(line.get_ydata(), expected)
    np.testing.assert_allclose(lines[-1].get_ydata(), oracle.mean(axis=0))
    # Interpolated curves never increase with recall.
    assert np.all(np.diff(lines[-1].get_ydata()) <= 1e-12)
    label = ax.get_legend_handles_labels()[1][0]
    assert label.startswith("random (mAP = ")


def test_precision_recall_saves_png(tmp_path):
    y_true = np.eye(4, 12, dtype=bool)
    y_score = np.random.RandomState(0).rand(4, 12)
    ax = plot_precision_recall(y_true, y_score)
    path = tmp_path / "pr.png"
    ax.figure.savefig(path, dpi=50)
    with Image.open(path) as saved:
        assert saved.size[0] > 0


@pytest.mark.parametrize(
    "y_true, y_score, kwargs, match",
    [
        ([[1, 0]], [[0.1, 0.2, 0.3]], {}, "same shape"),
        ([[2, 0]], [[0.1, 0.2]], {}, "binary"),
        ([[1, 0]], [[np.nan, 0.2]], {}, "NaN"),
        ([[0, 0]], [[0.1, 0.2]], {}, "No query has a relevant"),
        (np.ones((1, 1, 2)), np.ones((1, 1, 2)), {}, "2-D array"),
        ([[1, 0]], [[0.1, 0.2]], {"n_levels": 1}, "n_levels"),
    ],
)
def test_precision_recall_rejects_bad_input(y_true, y_score, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_precision_recall(y_true, y_score, **kwargs)
