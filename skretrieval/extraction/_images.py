"""Image inputs: checks and cheap inspection up front, resized shapes, decoding into batches.

Decoding runs in worker threads: it releases Python's global lock.
"""

import os
import threading

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from skretrieval._utils.batching import batches_by_shape
from skretrieval.exceptions import ImageNotFoundError, ImageReadError

# Serialises the decoding of the caller's (possibly lazy, possibly repeated) PIL images.
_PIL_LOAD_LOCK = threading.Lock()

# Image modes handled by PIL's own conversion to RGB (or to L for the grey ones).
_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
# Modes whose pixels are not 8-bit: converted through numpy with an explicit range.
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

# The EXIF orientation tag, and for each of its values the transpose that shows the photo
# upright, as PIL.ImageOps.exif_transpose applies it. 1 (or no tag) is upright; 5 to 8 swap
# width and height.
_EXIF_ORIENTATION = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class _Image:
    """One input image: where it comes from and the shape the network will see."""

    __slots__ = ("index", "kind", "orientation", "shape", "source")

    def __init__(self, index, kind, source, shape, orientation=1):
        self.index = index
        self.kind = kind  # "path", "pil" or "array"
        self.source = source
        self.shape = shape  # (height, width) after the EXIF transpose and resizing
        self.orientation = orientation  # EXIF orientation applied when decoding; 1: none

    @property
    def path(self):
        return self.source if self.kind == "path" else None

    @property
    def label(self):
        if self.kind == "path":
            return f"X[{self.index}] ({self.source!r})"
        return f"X[{self.index}]"


# --------------------------------------------------------------------------------------------
# Inspection (cheap, up front) and planning
# --------------------------------------------------------------------------------------------


def as_image_list(X):
    """The images of ``X`` as a list, with errors that say how to pass them."""
    if isinstance(X, (str, bytes, os.PathLike, Image.Image)):
        raise TypeError(
            f"X must be a list of images; got a single {type(X).__name__}. Wrap one image in a "
            "list: [image]."
        )
    if isinstance(X, np.ndarray):
        if X.dtype == object:
            if X.ndim != 1:
                raise ValueError(f"X must be a 1-D object array of images; got shape {X.shape}.")
            images = list(X)
        elif X.ndim == 4:
            images = list(X)
        else:
            raise ValueError(
                f"X is a single array of shape {X.shape}: pass a list of (H, W) or (H, W, C) "
                "images (wrap one image as [image]) or an (n, H, W, C) array."
            )
    else:
        try:
            images = list(X)
        except TypeError:
            raise TypeError(
                "X must be a list of images (file paths, PIL images or numpy arrays); got "
                f"{type(X).__name__}."
            ) from None
    if not images:
        raise ValueError("X is empty: at least one image is required.")
    return images


def _check_mode(mode, label):
    if mode not in _GREY_MODES | _COLOUR_MODES | _WIDE_MODES:
        raise ValueError(f"{label} has unsupported image mode {mode!r}.")


def _check_array(image, label):
    """Validate an image array; return its (height, width)."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(
            f"{label} must be an (H, W) grey or (H, W, C) image array with C in 1..4 (grey, grey "
            f"+ alpha, RGB, RGBA); got shape {image.shape}."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{label} is an empty image of shape {image.shape}.")
    if image.dtype in (np.uint8, np.uint16, np.bool_):
        return image.shape[:2]
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"{label} has unsupported dtype {image.dtype}: pass uint8 (0-255), uint16 "
            "(0-65535), bool, or floats in [0, 1]."
        )
    if not np.isfinite(image).all():
        raise ValueError(f"{label} contains NaN or infinity.")
    low, high = image.min(), image.max()
    if low < 0 or high > 1:
        raise ValueError(
            f"{label} is a {image.dtype} image with values in [{low:.6g}, {high:.6g}]; float "
            "images must lie in [0, 1]. Scale it, or pass uint8 values (0-255)."
        )
    return image.shape[:2]


def _read_error(label, reason, index, path):
    return ImageReadError(f"{label} {reason}", index=index, path=path, reason=reason)


def _exif_orientation(pil):
    """The EXIF orientation (1 to 8) of an opened image, from its header; 1 if it has none.

    PNG is the one format whose ``getexif`` may decode the pixels, to look for an EXIF chunk
    after them: such a late chunk (writers, PIL included, put it before the pixels) is ignored.
    """
    if pil.format == "PNG" and "exif" not in pil.info:
        return 1
    try:
        orientation = pil.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # damaged metadata: the pixels may be fine, so take them as stored
        return 1
    return orientation if isinstance(orientation, int) and orientation in _UPRIGHT else 1


def _upright_size(size, orientation):
    """``(height, width)`` of a ``(width, height)`` image once its orientation is applied."""
    width, height = size
    return (width, height) if orientation >= 5 else (height, width)


def _inspect(item, index, exif_transpose=True):
    """Check one input cheaply (no pixel decoding).

    Returns ``(kind, source, (height, width), orientation)``: the shape once the EXIF
    orientation is applied (with ``exif_transpose``), and that orientation (1: none).
    """
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        label = f"X[{index}] ({path!r})"
        try:
            with Image.open(path) as image:
                size, mode = image.size, image.mode
                orientation = _exif_orientation(image) if exif_transpose else 1
        except FileNotFoundError:
            raise ImageNotFoundError(
                f"X[{index}]: image file not found: {path!r}.",
                index=index,
                path=path,
                reason="file not found",
            ) from None
        except UnidentifiedImageError as exc:
            raise _read_error(
                label, f"is not an image file that PIL can read: {exc}", index, path
            ) from None
        except (OSError, Image.DecompressionBombError) as exc:
            raise _read_error(
                label, f"could not be opened: {type(exc).__name__}: {exc}", index, path
            ) from None
        try:
            _check_mode(mode, label)
        except ValueError as exc:
            raise ImageReadError(
                str(exc), index=index, path=path, reason=f"unsupported image mode {mode!r}"
            ) from None
        return "path", path, _upright_size(size, orientation), orientation
    if isinstance(item, Image.Image):
        _check_mode(item.mode, f"X[{index}]")
        orientation = _exif_orientation(item) if exif_transpose else 1
        return "pil", item, _upright_size(item.size, orientation), orientation
    if isinstance(item, np.ndarray) and item.dtype != object:
        return "array", item, _check_array(item, f"X[{index}]"), 1
    raise TypeError(
        f"X[{index}] has unsupported type {type(item).__name__}: expected a file path (str or "
        "pathlib.Path), a PIL image, or an (H, W) / (H, W, C) numpy array."
    )


def _resized_shape(height, width, max_size):
    if max_size is None:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def plan(X, max_size, min_side, backbone, *, exif_transpose=True):
    """Check every image of ``X`` and plan its resized shape, without decoding pixels.

    Returns one image record per input, in order: ``index``, ``shape`` (height, width after
    the EXIF orientation, unless ``exif_transpose=False``, and after resizing so that the
    longer side is ``max_size``) and what :func:`prepare_batch` decodes. Raises when a resized
    side is below ``min_side``, the smallest input of ``backbone``.
    """
    images = []
    for index, item in enumerate(as_image_list(X)):
        kind, source, (height, width), orientation = _inspect(item, index, exif_transpose)
        shape = _resized_shape(height, width, max_size)
        image = _Image(index, kind, source, shape, orientation)
        if min(shape) < min_side:
            # An ImageReadError, so that an indexer skipping bad files skips this one too.
            reason = (
                f"is {shape[0]}x{shape[1]} pixels (height x width) after resizing from "
                f"{height}x{width} with max_size={max_size}; backbone {backbone!r} needs at "
                f"least {min_side} pixels on each side (its stride), otherwise the feature map "
                "is empty or made of padding only."
            )
            raise _read_error(image.label, reason, index, image.path)
        images.append(image)
    return images


def image_batches(images, batch_size, max_pixels=None):
    """Split planned images into batches of equal resized shape, in order of first appearance.

    At most ``batch_size`` images per batch, and at most ``max_pixels`` pixels (but at least one
    image) when it is not None.
    """
    shapes = [image.shape for image in images]
    for positions in batches_by_shape(shapes, batch_size, max_elements=max_pixels):
        yield [images[position] for position in positions]


# --------------------------------------------------------------------------------------------
# Decoding (in worker threads)
# --------------------------------------------------------------------------------------------


def _wide_to_uint8(array, label):
    """16-bit (or wider integer) and float pixels -> uint8, scaling the full range."""
    if np.issubdtype(array.dtype, np.floating):
        _check_array(array, label)  # range [0, 1]
        return np.rint(array * 255).astype(np.uint8)
    if array.dtype != np.uint16:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ValueError(
                f"{label} is a 32-bit integer image with values in [{low}, {high}]; only 16-bit "
                "values (0-65535) are supported."
            )
    # round(x * 255 / 65535), i.e. 65535 -> 255, in integers.
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _array_to_uint8(image):
    if image.ndim == 3 and image.shape[2] in (1, 2):  # grey, grey + alpha
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:  # RGBA: alpha dropped, as PIL's convert does
        image = image[:, :, :3]
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return _wide_to_uint8(image, None)
    return np.rint(image * 255).astype(np.uint8)  # floats, range checked in _check_array


def _to_8bit_pil(pil, image):
    """An 8-bit PIL image in mode L or RGB."""
    mode = pil.mode
    if mode in _WIDE_MODES:
        return Image.fromarray(_wide_to_uint8(np.asarray(pil), image.label))
    if mode in ("L", "RGB"):
        return pil
    try:
        return pil.convert("L" if mode in _GREY_MODES else "RGB")
    except ValueError as exc:
        reason = f"cannot convert image mode {mode!r} to RGB: {exc}"
        raise ImageReadError(
            f"{image.label}: {reason}", index=image.index, path=image.path, reason=reason
        ) from None


def _load(pil, image):
    """Decode all pixel data now: PIL is lazy, and truncated data only shows up here.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False, so truncated files raise.
    """
    try:
        pil.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _read_error(
            image.label,
            "could not be decoded (truncated or corrupt image data): "
            f"{type(exc).__name__}: {exc}",
            image.index,
            image.path,
        ) from None


def _upright(pil, orientation):
    """``pil`` as its EXIF orientation says it is seen (a new image unless it is upright)."""
    return pil if orientation == 1 else pil.transpose(_UPRIGHT[orientation])


def _resize(pil, shape):
    height, width = shape
    if pil.size != (width, height):
        # Bilinear, with a support widened by the scale factor when shrinking (antialiased).
        pil = pil.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _decode(image):
    """Pixels of ``image`` resized to ``image.shape``: uint8 (h, w) grey or (h, w, 3) RGB."""
    if image.kind == "array":
        pixels = _array_to_uint8(image.source)
        if pixels.shape[:2] == image.shape:
            return pixels
        return _resize(Image.fromarray(np.ascontiguousarray(pixels)), image.shape)
    if image.kind == "path":
        try:
            pil = Image.open(image.source)
        except OSError as exc:
            reason = f"could not be opened: {exc}"
            raise _read_error(image.label, reason, image.index, image.path) from None
        with pil:
            _load(pil, image)
            try:
                # Transposed before resizing: the pixels are then exactly those of the
                # upright photo resized.
                return _resize(_upright(_to_8bit_pil(pil, image), image.orientation), image.shape)
            except ImageReadError:
                raise
            except (OSError, ValueError) as exc:  # e.g. 32-bit pixels out of the 16-bit range
                raise _read_error(image.label, str(exc), image.index, image.path) from None
    # A PIL image of the caller's may be lazy, and may appear several times in X: loading it
    # from two threads at once is not safe.
    with _PIL_LOAD_LOCK:
        _load(image.source, image)
    return _resize(_upright(_to_8bit_pil(image.source, image), image.orientation), image.shape)


def _fill(buffer, images):
    for row, image in zip(buffer, images, strict=True):
        pixels = _decode(image)
        row[...] = pixels[:, :, None] if pixels.ndim == 2 else pixels


def prepare_batch(images, pin_memory):
    """Decode a batch into a uint8 (n, h, w, 3) tensor, pinned for asynchronous GPU copies.

    Normalisation is left to torch on the target device: on CPU it is 3x faster than numpy's
    (vectorised, multi-threaded), on GPU 4x fewer bytes cross the bus as uint8.
    """
    height, width = images[0].shape
    batch = torch.empty((len(images), height, width, 3), dtype=torch.uint8, pin_memory=pin_memory)
    _fill(batch.numpy(), images)
    return batch
