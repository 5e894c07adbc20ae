"""EXIF orientation: tagged photos are seen upright, planned without decoding, and can be left
as stored with ``exif_transpose=False``.

The oracle is PIL's own ``ImageOps.exif_transpose`` and the upright photo itself: every stored
file is the upright photo turned by the inverse of what its tag says.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image, ImageFile, ImageOps
from skimage import data
from sklearn.base import clone

from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.extraction._images import plan

# For each orientation tag, how the camera stored the upright photo: the inverse of the
# transpose that the tag asks a viewer to apply (ROTATE_90 and ROTATE_270 undo each other, the
# flips and the two transpositions undo themselves).
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
HEIGHT, WIDTH = 40, 60  # upright; not square, so that a quarter turn shows in the shape


def upright_photo():
    image = Image.fromarray(data.chelsea())
    return image.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)


def assert_maps_close(actual, expected):
    """Equal up to float32 rounding (batches of different sizes round differently)."""
    assert actual.shape == expected.shape
    assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def save_tagged(path, orientation, image=None, format="PNG", **options):
    """Save the upright photo as a camera tagged ``orientation`` would store it."""
    image = upright_photo() if image is None else image
    stored = image if STORED[orientation] is None else image.transpose(STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, format=format, exif=exif, **options)
    return path


@pytest.fixture(scope="module")
def extractor():
    # Random ResNet-18 (activations of order 1), photos resized to a longer side of 48 pixels.
    return CNNFeatureExtractor(
        backbone="resnet18", weights=None, max_size=48, n_workers=0, verbose=False, random_state=0
    ).fit()


@pytest.fixture(scope="module")
def upright_maps(extractor, tmp_path_factory):
    path = tmp_path_factory.mktemp("upright") / "upright.png"
    upright_photo().save(path)
    return extractor.transform([path])[0]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tagged_photo_gives_the_maps_of_the_upright_photo(
    orientation, extractor, upright_maps, tmp_path
):
    path = save_tagged(tmp_path / f"tagged{orientation}.png", orientation)
    with Image.open(path) as stored:
        # The oracle agrees that this file shows the upright photo.
        assert_array_equal(np.asarray(ImageOps.exif_transpose(stored)), upright_photo())
    file_maps, pil_maps = extractor.transform([path, Image.open(path)])
    assert_maps_close(file_maps, upright_maps)
    assert_maps_close(pil_maps, upright_maps)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_transpose_false_uses_the_stored_pixels(orientation, extractor, tmp_path):
    path = save_tagged(tmp_path / f"tagged{orientation}.png", orientation)
    as_stored = clone(extractor).set_params(exif_transpose=False).fit()
    with Image.open(path) as stored:
        pixels = np.asarray(stored.convert("RGB"))
    maps = as_stored.transform([path])[0]
    assert_maps_close(maps, as_stored.transform([pixels])[0])
    if orientation != 1 and orientation not in (2, 4):
        # Not the upright photo's maps (flips of a cat are not symmetric either, but a
        # quarter or half turn is the clearest case).
        upright = as_stored.transform([np.asarray(upright_photo())])[0]
        assert maps.shape != upright.shape or not np.allclose(maps, upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_plan_reports_the_upright_shape_without_decoding(orientation, tmp_path, monkeypatch):
    path = save_tagged(tmp_path / "tagged.png", orientation)
    jpeg = save_tagged(tmp_path / "tagged.jpg", orientation, format="JPEG", quality=95)
    pil = Image.open(jpeg)

    def refuse(self):
        raise AssertionError("planning must not decode pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    planned = plan([path, jpeg, pil], None, 1, "resnet18")
    assert [image.shape for image in planned] == [(HEIGHT, WIDTH)] * 3
    swapped = (WIDTH, HEIGHT) if orientation >= 5 else (HEIGHT, WIDTH)
    as_stored = plan([path, jpeg, pil], None, 1, "resnet18", exif_transpose=False)
    assert [image.shape for image in as_stored] == [swapped] * 3
    # Resizing plans the longer side of the upright photo.
    assert plan([path], 30, 1, "resnet18")[0].shape == (20, 30)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_matches_pil_exif_transpose(orientation, extractor, tmp_path):
    # A lossy file: the oracle is PIL's transpose of the very same decoded pixels.
    path = save_tagged(tmp_path / "tagged.jpg", orientation, format="JPEG", quality=90)
    with Image.open(path) as stored:
        upright = ImageOps.exif_transpose(stored)
    maps, reference = extractor.transform([path, upright])
    assert_maps_close(maps, reference)


def test_damaged_or_odd_tags_leave_the_photo_as_stored(extractor, tmp_path):
    image = upright_photo()
    for value in (0, 9, 65535):
        exif = Image.Exif()
        exif[0x0112] = value
        path = tmp_path / f"odd{value}.png"
        image.save(path, exif=exif)
        assert plan([path], None, 1, "resnet18")[0].shape == (HEIGHT, WIDTH)


def test_old_pickles_default_to_transposing(extractor):
    state = extractor.__getstate__()
    state.pop("exif_transpose")
    restored = CNNFeatureExtractor.__new__(CNNFeatureExtractor)
    restored.__setstate__(state)
    assert restored.get_params()["exif_transpose"] is True


def test_exif_transpose_is_validated():
    with pytest.raises(ValueError, match="exif_transpose"):
        CNNFeatureExtractor(weights=None, exif_transpose="yes").fit()
