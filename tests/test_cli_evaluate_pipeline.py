"""``skretrieval evaluate``'s pipeline options: scales, query expansion, DBA, re-ranking,
whitening learned on one collection and applied to another, covariance and mixture descriptors.

Each run is checked against the same pipeline built with the library, and the top-1 precision
against the retriever's own leave-one-out search."""

import csv

import numpy as np
import pytest
from PIL import Image

from skretrieval.cli import main

# The offline ImageNet weights: random MobileNetV2 weights describe every image alike.
FAST = ["--max-size", "64", "--batch-size", "8", "--quiet"]
# Random ResNet-18 weights (seeded by the command) do tell the images apart: 512-dimensional
# descriptors keep the whitening tests quick.
RANDOM_RESNET = ["--backbone", "resnet18", "--weights", "none"]
FLIP = Image.Transpose.FLIP_LEFT_RIGHT


def _photo(name, size=(64, 48)):
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB").resize(size)


def _tree(root, names):
    """A class-per-folder tree: each photo, flipped, resized and cropped, as one class."""
    for name in names:
        (root / name).mkdir(parents=True)
        photo = _photo(name)
        photo.save(root / name / "a.png")
        photo.transpose(FLIP).save(root / name / "b.png")
        _photo(name, size=(56, 48)).save(root / name / "c.png")
        photo.crop((4, 4, 60, 44)).save(root / name / "d.png")
    return root


@pytest.fixture(scope="module")
def folder_a(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("a"), ["coffee", "chelsea", "astronaut"])


@pytest.fixture(scope="module")
def folder_b(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("b"), ["rocket", "camera"])


def _extractor(**params):
    from skretrieval.extraction import CNNFeatureExtractor

    return CNNFeatureExtractor(
        max_size=params.pop("max_size", 64), verbose=False, random_state=0, **params
    )


def _resnet():
    from skretrieval.pooling import GeMPooling

    return _extractor(backbone="resnet18", weights=None, pooling=GeMPooling())


def _record(output):
    with open(output, newline="") as file:
        (record,) = list(csv.DictReader(file))
    return record


def _top1_precision(retriever, target):
    """mP@1 of the leave-one-out search: each image's nearest other image has its label."""
    top = retriever.kneighbors(n_neighbors=1, return_distance=False)[:, 0]
    return float(np.mean(target[top] == target))


def _run(root, tmp_path, *options):
    output = tmp_path / "results.csv"
    argv = ["evaluate", "folder", "--root", str(root), "--output", str(output), *FAST]
    assert main([*argv, *options]) == 0
    return _record(output)


def test_scales_are_multi_scale_descriptors(folder_a, tmp_path, capsys):
    from skretrieval.datasets import load_image_folder
    from skretrieval.evaluation import score_benchmark
    from skretrieval.pooling import GeMPooling

    cache = tmp_path / "cache"
    record = _run(folder_a, tmp_path, "--scales", "1", "0.75", "--cache", str(cache))
    assert "scales 1, 0.75" in capsys.readouterr().out
    assert record["scales"] == "1 0.75" and record["descriptor"] == "global"
    assert record["pooling"] == "gem" and record["local_dim"] == ""
    (cached,) = [path.name for path in cache.iterdir()]
    assert cached.startswith("folder-database-mobilenet_v2-gem-64-s1_0.75-")

    data = load_image_folder(folder_a)
    extractor = _extractor(pooling=GeMPooling(), scales=[1, 0.75])
    descriptors = extractor.fit_transform(data.filenames)
    (row,) = score_benchmark(data, descriptors)
    assert float(record["map"]) == pytest.approx(row["map"], abs=1e-4)
    # One scale alone describes the images otherwise.
    single = _extractor(pooling=GeMPooling()).fit_transform(data.filenames)
    assert not np.allclose(single, descriptors, atol=1e-3)


@pytest.mark.parametrize(
    ("options", "params"),
    [
        (["--query-expansion", "average", "--qe-neighbors", "1"], {"query_expansion": "average"}),
        (
            ["--query-expansion", "alpha", "--qe-neighbors", "2", "--qe-alpha", "2"],
            {"query_expansion": "alpha", "qe_neighbors": 2, "qe_alpha": 2.0},
        ),
        (["--dba", "2"], {"dba_neighbors": 2}),
        (["--rerank", "diffusion", "--rerank-neighbors", "4"], {"rerank": "diffusion"}),
        (["--rerank", "k-reciprocal", "--rerank-neighbors", "4"], {"rerank": "k_reciprocal"}),
    ],
)
def test_search_options_reach_the_retriever(
    folder_a, tmp_path, monkeypatch, capsys, options, params
):
    import skretrieval.evaluation
    from skretrieval.datasets import load_image_folder
    from skretrieval.neighbors import ImageRetriever
    from skretrieval.pooling import GeMPooling

    built = []

    class Recorded(ImageRetriever):
        def fit(self, X, y=None):
            built.append(self.get_params())
            return super().fit(X, y)

    monkeypatch.setattr(skretrieval.evaluation, "ImageRetriever", Recorded)
    record = _run(folder_a, tmp_path, *options)
    (used,) = built
    for name, value in params.items():
        assert used[name] == value
    if "--qe-neighbors" in options:
        assert used["qe_neighbors"] == int(options[options.index("--qe-neighbors") + 1])
    if "--rerank-neighbors" in options:
        assert used["rerank_neighbors"] == 4 and record["rerank_neighbors"] == "4"
    assert record["query_expansion"] == used["query_expansion"] or (
        record["query_expansion"] == "none" and used["query_expansion"] is None
    )
    assert record["dba"] == ("" if used["dba_neighbors"] is None else "2")
    assert record["rerank"] == (options[1] if options[0] == "--rerank" else "none")

    data = load_image_folder(folder_a)
    descriptors = _extractor(pooling=GeMPooling()).fit_transform(data.filenames)
    retriever = ImageRetriever(**used).fit(descriptors)
    assert float(record["mp@1"]) == pytest.approx(_top1_precision(retriever, data.target), abs=1e-6)


def test_whitening_learned_on_one_collection_applied_to_another(
    folder_a, folder_b, tmp_path, monkeypatch, capsys
):
    import skretrieval.evaluation
    from skretrieval.datasets import load_image_folder
    from skretrieval.evaluation import score_benchmark
    from skretrieval.persistence import load
    from skretrieval.whitening import LearnedWhitening

    saved = tmp_path / "whitening" / "learned.skops"
    record = _run(
        folder_a, tmp_path, *RANDOM_RESNET, "--whitening", "learned", "--shrinkage", "0.3",
        "--save-whitening", str(saved),
    )  # fmt: skip
    assert f"Whitening saved to {saved}" in capsys.readouterr().out
    assert record["whitening"] == "learned" and record["shrinkage"] == "0.3"
    whitening = load(saved)
    data_a = load_image_folder(folder_a)
    descriptors_a = _resnet().fit_transform(data_a.filenames)
    expected = LearnedWhitening(shrinkage=0.3).fit(descriptors_a, data_a.target)
    np.testing.assert_allclose(whitening.components_, expected.components_, atol=1e-4)

    # Applied to B as it is: never refitted.
    def no_fit(self, *args, **kwargs):
        raise AssertionError("the saved whitening was fitted again")

    monkeypatch.setattr(LearnedWhitening, "fit", no_fit)
    scored = []

    def recording_score(data, database, queries, **kwargs):
        scored.append(database)
        return score_benchmark(data, database, queries, **kwargs)

    monkeypatch.setattr(skretrieval.evaluation, "score_benchmark", recording_score)
    record = _run(folder_b, tmp_path, *RANDOM_RESNET, "--whitening-from", str(saved))
    assert f"whitening read from {saved}" in capsys.readouterr().out
    assert record["whitening"] == "file" and record["whitening_from"] == str(saved)
    data_b = load_image_folder(folder_b)
    descriptors_b = _resnet().fit_transform(data_b.filenames)
    (database,) = scored
    np.testing.assert_allclose(database, expected.transform(descriptors_b), atol=1e-4)
    (row,) = score_benchmark(data_b, expected.transform(descriptors_b))
    assert float(record["map"]) == pytest.approx(row["map"], abs=1e-4)


def test_pca_whitening_with_shrinkage(folder_a, tmp_path, capsys):
    from skretrieval.datasets import load_image_folder
    from skretrieval.evaluation import score_benchmark
    from skretrieval.whitening import PCAWhitening

    record = _run(folder_a, tmp_path, *RANDOM_RESNET, "--whitening", "pca", "--shrinkage", "0.5")
    assert record["whitening"] == "pca" and record["shrinkage"] == "0.5"
    data = load_image_folder(folder_a)
    descriptors = _resnet().fit_transform(data.filenames)
    whitened = PCAWhitening(shrinkage=0.5).fit_transform(descriptors)
    (row,) = score_benchmark(data, whitened)
    assert float(record["map"]) == pytest.approx(row["map"], abs=1e-4)


@pytest.mark.parametrize(
    ("options", "metric"),
    [
        (["--descriptor", "covariance", "--local-dim", "4"], "affine_invariant"),
        (["--descriptor", "covariance", "--local-dim", "3", "--metric", "stein"], "stein"),
        (["--descriptor", "gmm", "--local-dim", "3", "--components", "2"], "wasserstein"),
    ],
)
def test_geometric_descriptors(folder_a, tmp_path, capsys, options, metric):
    from sklearn.pipeline import make_pipeline

    from skretrieval.datasets import load_image_folder
    from skretrieval.descriptors import GMMDescriptor, LocalPCA, SparseCovariance
    from skretrieval.evaluation import score_benchmark
    from skretrieval.neighbors import ImageRetriever

    cache = tmp_path / "cache"
    record = _run(folder_a, tmp_path, *options, "--max-size", "96", "--cache", str(cache))
    captured = capsys.readouterr()
    assert "warning: --cache keeps pooled global descriptors only" in captured.err
    assert not cache.exists() or not any(cache.iterdir())
    gmm = "gmm" in options
    assert f"{metric} distance" in captured.out
    local_dim = int(options[options.index("--local-dim") + 1])
    assert record["descriptor"] == options[1] and record["metric"] == metric
    assert record["local_dim"] == str(local_dim) and record["pooling"] == ""
    assert record["components"] == ("2" if gmm else "")

    data = load_image_folder(folder_a)
    local = LocalPCA(n_components=local_dim, random_state=0)
    last = GMMDescriptor(n_components=2, random_state=0) if gmm else SparseCovariance()
    pipeline = make_pipeline(_extractor(max_size=96), local, last)
    descriptors = pipeline.fit_transform(data.filenames)
    (row,) = score_benchmark(data, descriptors, metric=metric)
    assert float(record["map"]) == pytest.approx(row["map"], abs=1e-4)
    retriever = ImageRetriever(metric=metric).fit(descriptors)
    assert float(record["mp@1"]) == pytest.approx(_top1_precision(retriever, data.target), abs=1e-6)


def _error(capsys, argv, *fragments, status=1):
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0]
    return captured


def test_pipeline_option_errors(folder_a, tmp_path, capsys):
    from skretrieval.persistence import save
    from skretrieval.whitening import PCAWhitening

    argv = ["evaluate", "folder", "--root", str(folder_a), *FAST]
    # Caught before any image is described: nothing printed on stdout.
    for options, fragments in [
        (["--descriptor", "covariance", "--metric", "cosine"], ["'cosine' expects vectors"]),
        (["--descriptor", "gmm", "--metric", "stein"], ["'stein'", "Gaussian"]),
        (["--metric", "affine_invariant"], ["SPD matrices"]),
        (["--descriptor", "covariance", "--whitening", "pca"], ["--whitening applies to"]),
        (["--descriptor", "gmm", "--scales", "1", "0.5"], ["--scales applies to"]),
        (["--descriptor", "gmm", "--pooling", "mac"], ["--pooling applies to"]),
        (["--save-whitening", str(tmp_path / "w")], ["--save-whitening", "--whitening pca"]),
        (["--shrinkage", "0.1"], ["--shrinkage"]),
        (["--whitening", "pca", "--whitening-from", "x"], ["only one of them"]),
    ]:
        captured = _error(capsys, [*argv, *options], *fragments)
        assert captured.out == ""
    _error(capsys, [*argv, "--shrinkage", "2"], "expected a number >= 0 and <= 1", status=2)
    _error(capsys, [*argv, "--scales", "0"], "expected a number > 0", status=2)
    _error(capsys, [*argv, "--rerank", "kreciprocal"], "invalid choice", status=2)
    assert not (tmp_path / "w").exists()

    # A whitening of other descriptors, and a file that holds no whitening.
    other = tmp_path / "other.skops"
    save(PCAWhitening().fit(np.random.default_rng(0).normal(size=(20, 3))), other)
    _error(capsys, [*argv, "--whitening-from", str(other)], "takes 3 features", "1280")
    array = tmp_path / "array.skops"
    save(np.arange(3.0), array)
    captured = _error(capsys, [*argv, "--whitening-from", str(array)], "not a fitted whitening")
    assert "described" not in captured.out
    captured = _error(capsys, [*argv, "--whitening-from", str(tmp_path / "none.skops")], "none")
    assert "described" not in captured.out
    # The library's own checks of the search options, one line each.
    _error(capsys, [*argv, "--rerank", "diffusion"], "rerank_neighbors=20", "n_samples=12")
    _error(capsys, [*argv, "--metric", "euclidean", "--dba", "2"], "needs metric='cosine'")


def test_learned_whitening_needs_labels(tmp_path, capsys):
    import pickle

    jpg = tmp_path / "roxford5k" / "jpg"
    jpg.mkdir(parents=True)
    names = ["coffee", "chelsea", "query"]
    for name in names:
        _photo("coffee").save(jpg / f"{name}.jpg")
    gnd = [{"easy": [0], "hard": [], "junk": [], "bbx": [0.0, 0.0, 60.0, 40.0]}]
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as file:
        pickle.dump({"imlist": names[:2], "qimlist": names[2:], "gnd": gnd}, file)
    argv = ["evaluate", "roxford5k", "--root", str(tmp_path), "--whitening", "learned", *FAST]
    captured = _error(capsys, argv, "--whitening learned needs labels", "--whitening-from")
    assert captured.out == ""
