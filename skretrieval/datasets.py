"""Datasets for image retrieval: benchmark loaders, image folders and a copy-detection generator.

:func:`make_copydays` builds a small copy-detection benchmark from real photographs that ship
with scikit-image and scikit-learn, so that examples, the ``skretrieval demo`` command and the
tests run without any download. :func:`load_image_folder` reads a class-per-folder image tree
and :func:`list_images` lists the image files under a folder.

The benchmark loaders read standard benchmarks that the user has downloaded by hand (they never
download): :func:`load_revisited` (revisited Oxford and Paris, ``gnd_*.pkl``),
:func:`load_oxford_paris` (the original Oxford5k and Paris6k text ground truth),
:func:`load_holidays` (INRIA Holidays) and :func:`load_ukbench` (UKBench). They share one
layout: a :class:`~sklearn.utils.Bunch` with the database ``images`` and the ``queries`` (file
paths), ``query_boxes`` (or None), and ``gnd``, one dict per query of integer index arrays into
``images`` -- ``"easy"``, ``"hard"``, ``"junk"`` for the revisited benchmarks, as
:func:`skretrieval.metrics.evaluate_revisited` takes them, and ``"ok"`` and ``"junk"`` for the
others, turned into the matrices of :func:`skretrieval.metrics.mean_average_precision` by
:func:`ground_truth_masks`. :func:`crop_queries` crops the queries to their boxes. Missing files
raise :class:`MissingDatasetFilesError`, whose message says what to put where.
"""

import io
import numbers
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from sklearn.utils import Bunch, check_random_state

__all__ = [
    "COPYDAYS_TRANSFORMS",
    "MissingDatasetFilesError",
    "crop_queries",
    "ground_truth_masks",
    "list_images",
    "load_holidays",
    "load_image_folder",
    "load_oxford_paris",
    "load_revisited",
    "load_ukbench",
    "make_copydays",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Photographs shipped inside the scikit-image and scikit-learn wheels (no pooch download):
# name -> (package, loader, credit). Credits are those given in each package's documentation.
_PHOTOS = {
    "astronaut": (
        "skimage",
        "astronaut",
        "Eileen Collins, NASA Great Images database; public domain (scikit-image).",
    ),
    "camera": (
        "skimage",
        "camera",
        "Gray-level camera photo, CC0 by Lav Varshney (scikit-image).",
    ),
    "coffee": (
        "skimage",
        "coffee",
        "Coffee cup, courtesy of Pikolo Espresso Bar, CC0 by Rachel Michetti (scikit-image).",
    ),
    "chelsea": (
        "skimage",
        "chelsea",
        "Chelsea the cat, CC0 by Stefan van der Walt (scikit-image).",
    ),
    "rocket": (
        "skimage",
        "rocket",
        "Launch of DSCOVR on Falcon 9, SpaceX photos; public domain (scikit-image).",
    ),
    "coins": (
        "skimage",
        "coins",
        "Greek coins from Pompeii, Brooklyn Museum; no known copyright restrictions "
        "(scikit-image).",
    ),
    "hubble_deep_field": (
        "skimage",
        "hubble_deep_field",
        "Hubble eXtreme Deep Field, NASA / HubbleSite; public domain (scikit-image).",
    ),
    "immunohistochemistry": (
        "skimage",
        "immunohistochemistry",
        "IHC-stained colonic glands, CMMI; no known copyright restrictions (scikit-image).",
    ),
    "clock": (
        "skimage",
        "clock",
        "Motion-blurred wall clock, public domain by Stefan van der Walt (scikit-image).",
    ),
    "china": (
        "sklearn",
        "china.jpg",
        "Chinese temple by danielbuechele on Flickr, CC BY 2.0 (scikit-learn sample image).",
    ),
    "flower": (
        "sklearn",
        "flower.jpg",
        "Flower by vultilion on Flickr, CC BY 2.0 (scikit-learn sample image).",
    ),
}

_DEFAULT_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "china",
    "flower",
)

#: Names of the built-in copy transforms of :func:`make_copydays`, in their default order.
COPYDAYS_TRANSFORMS = (
    "crop",
    "rotate",
    "tilt",
    "scale",
    "jpeg",
    "color",
    "grayscale",
    "strong",
    "flip",
    "blur",
)

_DEFAULT_TRANSFORMS = COPYDAYS_TRANSFORMS[:8]


# ---------------------------------------------------------------------------------------------
# Copy transforms: each takes an RGB PIL image and a RandomState and returns (image, description)
# ---------------------------------------------------------------------------------------------


def _crop(image, rng, area_range=(0.5, 0.8)):
    area = rng.uniform(*area_range)
    # Jitter the aspect ratio so that crops are not all shaped like the original.
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    width, height = image.size
    crop_w = max(1, min(width, round(width * np.sqrt(area * ratio))))
    crop_h = max(1, min(height, round(width * height * area / crop_w)))
    left = rng.randint(0, width - crop_w + 1)
    top = rng.randint(0, height - crop_h + 1)
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    kept = crop_w * crop_h / (width * height)
    return cropped, f"crop(area={kept:.2f})"


def _rotate(image, rng):
    angle = int(rng.choice([90, 180, 270]))
    method = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }[angle]
    return image.transpose(method), f"rotate({angle})"


def _tilt(image, rng, angle_range=(5.0, 20.0)):
    angle = rng.uniform(*angle_range) * rng.choice([-1, 1])
    # Keep the frame size: the corners turned out of view are lost, as in a manual attack.
    tilted = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    return tilted, f"tilt(angle={angle:.1f})"


def _scale(image, rng, factor_range=(0.25, 0.5)):
    factor = rng.uniform(*factor_range)
    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR), f"scale({factor:.2f})"


def _jpeg(image, rng, quality_range=(10, 30)):
    quality = int(rng.randint(quality_range[0], quality_range[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded = decoded.convert("RGB")
    return decoded, f"jpeg(quality={quality})"


def _shift_hue(image, shift):
    """Rotate the hue of an RGB image by ``shift`` turns of the colour circle."""
    hue, saturation, value = image.convert("HSV").split()
    offset = round(shift * 256) % 256
    hue = Image.fromarray(((np.asarray(hue, dtype=np.int16) + offset) % 256).astype(np.uint8))
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def _color(image, rng):
    brightness = rng.uniform(0.6, 1.4)
    contrast = rng.uniform(0.6, 1.4)
    saturation = rng.uniform(0.3, 1.7)
    hue = rng.uniform(-0.1, 0.1)
    image = ImageEnhance.Brightness(image).enhance(brightness)
    image = ImageEnhance.Contrast(image).enhance(contrast)
    image = ImageEnhance.Color(image).enhance(saturation)
    image = _shift_hue(image, hue)
    description = (
        f"color(brightness={brightness:.2f}, contrast={contrast:.2f}, "
        f"saturation={saturation:.2f}, hue={hue:+.2f})"
    )
    return image, description


def _grayscale(image, rng):
    return image.convert("L").convert("RGB"), "grayscale"


def _flip(image, rng):
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "flip"


def _blur(image, rng, radius_range=(1.0, 3.0)):
    radius = rng.uniform(*radius_range)
    return image.filter(ImageFilter.GaussianBlur(radius)), f"blur(radius={radius:.1f})"


def _strong(image, rng):
    # A chain of milder attacks, as in the "strong" part of Copydays: crop, tilt, colour change,
    # rescale and a low-quality JPEG re-encoding.
    steps = []
    for step in (
        lambda im: _crop(im, rng, area_range=(0.5, 0.8)),
        lambda im: _tilt(im, rng, angle_range=(3.0, 10.0)),
        lambda im: _color(im, rng),
        lambda im: _scale(im, rng, factor_range=(0.5, 0.8)),
        lambda im: _jpeg(im, rng, quality_range=(15, 30)),
    ):
        image, description = step(image)
        steps.append(description)
    return image, "strong: " + " + ".join(steps)


_TRANSFORM_FUNCTIONS = {
    "crop": _crop,
    "rotate": _rotate,
    "tilt": _tilt,
    "scale": _scale,
    "jpeg": _jpeg,
    "color": _color,
    "grayscale": _grayscale,
    "strong": _strong,
    "flip": _flip,
    "blur": _blur,
}


def _check_transforms(transforms):
    """Return a list of (family name, function returning (image, description)) pairs."""
    if transforms is None:
        transforms = _DEFAULT_TRANSFORMS
    if isinstance(transforms, str) or callable(transforms):
        transforms = [transforms]
    transforms = list(transforms)
    if not transforms:
        raise ValueError("transforms is empty: give at least one transform name or callable.")
    checked = []
    for transform in transforms:
        if isinstance(transform, str):
            if transform not in _TRANSFORM_FUNCTIONS:
                raise ValueError(
                    f"Unknown transform {transform!r}; expected one of "
                    f"{sorted(_TRANSFORM_FUNCTIONS)} or a callable."
                )
            checked.append((transform, _TRANSFORM_FUNCTIONS[transform]))
        elif callable(transform):
            checked.append(_wrap_user_transform(transform))
        else:
            raise TypeError(
                "transforms must contain transform names or callables; got "
                f"{type(transform).__name__}."
            )
    return checked


def _wrap_user_transform(transform):
    name = getattr(transform, "__name__", type(transform).__name__)

    def apply(image, rng):
        result = transform(image, rng)
        if isinstance(result, Image.Image):
            result = result.convert("RGB")
        else:
            result = _to_rgb_pil(np.asarray(result), f"the output of transform {name!r}")
        return result, name

    return name, apply


def _to_rgb_pil(array, what):
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(
            f"{what} must be a PIL image or a uint8 array of shape (H, W) or (H, W, 3); got "
            f"dtype {array.dtype} and shape {array.shape}."
        )
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise ValueError(f"{what} must have 3 (RGB) or 4 (RGBA) channels; got {array.shape[2]}.")
    return Image.fromarray(array).convert("RGB")


def _load_photo(name):
    package, loader, _ = _PHOTOS[name]
    if package == "skimage":
        import skimage.data

        array = getattr(skimage.data, loader)()
    else:
        from sklearn.datasets import load_sample_image

        array = load_sample_image(loader)
    return _to_rgb_pil(np.asarray(array), f"photo {name!r}")


def _check_sources(sources):
    if sources is None:
        return list(_DEFAULT_PHOTOS)
    if isinstance(sources, str):
        if sources == "all":
            return list(_PHOTOS)
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise ValueError("sources is empty: give at least one photo name.")
    unknown = [name for name in sources if name not in _PHOTOS]
    if unknown:
        raise ValueError(f"Unknown photo(s) {unknown}; available photos are {sorted(_PHOTOS)}.")
    if len(set(sources)) != len(sources):
        raise ValueError(f"sources contains duplicates: {sources}.")
    return sources


def make_copydays(
    n_copies_per_image=8,
    *,
    sources=None,
    transforms=None,
    max_size=512,
    random_state=0,
    return_X_y=False,
):
    """Generate a Copydays-style copy-detection benchmark from photographs shipped offline.

    Each original photograph (from ``skimage.data`` and
    :func:`sklearn.datasets.load_sample_images`) forms one group; ``n_copies_per_image``
    transformed copies are generated for it: crops, rotations, small tilts, rescales, JPEG
    re-encodings at low quality, colour changes, grayscale conversion and "strong" chains of
    several of these, in the spirit of the INRIA Copydays benchmark. A copy is relevant to its
    original and to the other copies of the same photo, and to nothing else.

    The originals come first: ``images[i]`` for ``i < n_groups`` is the original of group ``i``,
    so ``images[target[j]]`` is the original of image ``j``. The copies follow, grouped by
    source photo.

    Parameters
    ----------
    n_copies_per_image : int, default=8
        Number of transformed copies generated per original. Copy ``j`` uses
        ``transforms[j % len(transforms)]``, so the default gives one copy per default
        transform.
    sources : list of str, "all" or None, default=None
        Names of the photographs to use. ``None`` uses ten of them: ``"astronaut"``,
        ``"camera"``, ``"coffee"``, ``"chelsea"``, ``"rocket"``, ``"coins"``,
        ``"hubble_deep_field"``, ``"immunohistochemistry"``, ``"china"`` and ``"flower"``;
        ``"all"`` adds ``"clock"``. ``"camera"``, ``"coins"`` and ``"clock"`` are gray-level
        photos, returned as three equal channels.
    transforms : list of str or callable, default=None
        Copy transforms, applied in turn. Names are taken from :data:`COPYDAYS_TRANSFORMS`:

        - ``"crop"``: keep 50-80% of the area, aspect ratio jittered;
        - ``"rotate"``: rotation by 90, 180 or 270 degrees;
        - ``"tilt"``: rotation by 5-20 degrees either way, frame size kept (black corners);
        - ``"scale"``: downscale by a factor 1/4 to 1/2;
        - ``"jpeg"``: JPEG re-encoding at quality 10-30;
        - ``"color"``: brightness, contrast, saturation and hue changes;
        - ``"grayscale"``: conversion to gray levels (a no-op on gray photos);
        - ``"strong"``: crop, tilt, colour change, rescale and JPEG in a chain;
        - ``"flip"``: left-right mirror;
        - ``"blur"``: Gaussian blur of radius 1-3 pixels.

        ``None`` uses the first eight (all but ``"flip"`` and ``"blur"``). A callable is called
        as ``transform(image, random_state)`` with an RGB :class:`PIL.Image.Image` and a
        :class:`numpy.random.RandomState`, and returns a PIL image or a uint8 array; its
        ``__name__`` describes the copy.
    max_size : int or None, default=512
        Originals are downscaled (never upscaled) so that their longer side is at most
        ``max_size`` pixels before copies are made; ``None`` keeps their native size (at most
        1000 pixels).
    random_state : int, RandomState instance or None, default=0
        Controls the transform parameters. Pass an int for reproducible output.
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        images : list of ndarray of shape (H_i, W_i, 3), dtype uint8
            Originals first, then the copies grouped by source photo.
        target : ndarray of shape (n_images,), dtype int64
            Group of each image: the index of its source photo in ``target_names``.
        target_names : ndarray of shape (n_groups,), dtype object
            Name of each source photo.
        is_original : ndarray of shape (n_images,), dtype bool
            True for the untransformed originals.
        transform_family : ndarray of shape (n_images,), dtype object
            Transform name of each image (``"original"`` for originals).
        transform : ndarray of shape (n_images,), dtype object
            Full description of each image's transform and its drawn parameters, such as
            ``"jpeg(quality=17)"`` (``"original"`` for originals).
        credits : ndarray of shape (n_groups,), dtype object
            Origin and licence of each source photo.
        DESCR : str
            Description of the dataset.

    (images, target) : tuple
        If ``return_X_y`` is True.

    Notes
    -----
    The photographs are distributed with scikit-image (``skimage.data``: public domain or CC0
    unless noted) and scikit-learn (``china.jpg`` and ``flower.jpg``, CC BY 2.0 by their Flickr
    authors); ``credits`` lists the origin of each. Only images that are part of the installed
    packages are used, so nothing is downloaded.

    The original Copydays benchmark is described in M. Douze, H. Jegou, H. Sandhawalia,
    L. Amsaleg and C. Schmid, "Evaluation of GIST descriptors for web-scale image search",
    CIVR 2009.

    Examples
    --------
    >>> from skretrieval.datasets import make_copydays
    >>> data = make_copydays(n_copies_per_image=3, sources=["coffee", "chelsea"], max_size=128)
    >>> len(data.images)
    8
    >>> data.target.tolist()
    [0, 1, 0, 0, 0, 1, 1, 1]
    >>> data.transform_family.tolist()[:5]
    ['original', 'original', 'crop', 'rotate', 'tilt']
    >>> data.images[0].shape
    (85, 128, 3)
    """
    if (
        not isinstance(n_copies_per_image, numbers.Integral)
        or isinstance(n_copies_per_image, bool)
        or n_copies_per_image < 0
    ):
        raise ValueError(
            f"n_copies_per_image must be a non-negative integer; got {n_copies_per_image!r}."
        )
    if max_size is not None and (
        not isinstance(max_size, numbers.Integral) or isinstance(max_size, bool) or max_size < 8
    ):
        raise ValueError(f"max_size must be None or an integer >= 8; got {max_size!r}.")
    names = _check_sources(sources)
    checked_transforms = _check_transforms(transforms)
    rng = check_random_state(random_state)

    originals = []
    for name in names:
        photo = _load_photo(name)
        if max_size is not None and max(photo.size) > max_size:
            photo.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        originals.append(photo)

    images = [np.asarray(photo) for photo in originals]
    target = list(range(len(names)))
    family = ["original"] * len(names)
    description = ["original"] * len(names)
    for group, photo in enumerate(originals):
        for copy in range(n_copies_per_image):
            transform_name, apply = checked_transforms[copy % len(checked_transforms)]
            image, text = apply(photo, rng)
            images.append(np.asarray(image.convert("RGB")))
            target.append(group)
            family.append(transform_name)
            description.append(text)

    target = np.asarray(target, dtype=np.int64)
    if return_X_y:
        return images, target
    credits = [_PHOTOS[name][2] for name in names]
    descr = (
        "Copydays-style copy-detection benchmark generated by skretrieval.datasets."
        f"make_copydays: {len(names)} original photographs and {n_copies_per_image} transformed "
        f"copies of each ({len(images)} images). Relevance: same target (source photo).\n\n"
        "Photo credits:\n" + "\n".join(f"- {n}: {c}" for n, c in zip(names, credits, strict=True))
    )
    return Bunch(
        images=images,
        target=target,
        target_names=np.asarray(names, dtype=object),
        is_original=np.arange(len(images)) < len(names),
        transform_family=np.asarray(family, dtype=object),
        transform=np.asarray(description, dtype=object),
        credits=np.asarray(credits, dtype=object),
        DESCR=descr,
    )


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------


def _check_extensions(extensions):
    if isinstance(extensions, str):
        extensions = (extensions,)
    try:
        extensions = tuple(extensions)
    except TypeError:
        raise TypeError(
            f"extensions must be a string or a sequence of strings; got "
            f"{type(extensions).__name__}."
        ) from None
    if not extensions:
        raise ValueError("extensions is empty: give at least one file extension such as '.jpg'.")
    normalised = []
    for extension in extensions:
        if not isinstance(extension, str) or not extension.strip("."):
            raise ValueError(f"Invalid file extension {extension!r}; expected e.g. '.jpg'.")
        extension = extension.lower()
        normalised.append(extension if extension.startswith(".") else "." + extension)
    return tuple(normalised)


def _check_root(root):
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike); got {type(root).__name__}.")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"Image folder {str(root)!r} is not a directory.")
    return path


def _is_hidden(name):
    return name.startswith(".")


def _walk_images(path, extensions):
    """Image files under ``path`` (recursively), skipping hidden files and folders, sorted."""
    found = []
    for directory, subdirectories, filenames in os.walk(path):
        # Prune hidden folders in place so os.walk does not descend into them.
        subdirectories[:] = [name for name in subdirectories if not _is_hidden(name)]
        for filename in filenames:
            if not _is_hidden(filename) and filename.lower().endswith(extensions):
                found.append(Path(directory, filename))
    # Sort by path components so that a folder's files stay together ("a/b" before "a-b").
    found.sort(key=lambda file: file.relative_to(path).parts)
    return [str(file) for file in found]


def list_images(root, extensions=IMAGE_EXTENSIONS):
    """List the image files under a folder, recursively, in sorted order.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to search.
    extensions : str or sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File extensions counted as images, matched case-insensitively. Files with other
        extensions are not images by this definition and are skipped.

    Returns
    -------
    filenames : list of str
        Paths of the image files (``root`` joined with the relative path), sorted by their
        path components. Hidden files and anything inside hidden folders (names starting
        with ``"."``) are skipped. The list is empty if there is no image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skretrieval.datasets import list_images
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["b/2.png", "b/1.JPG", "a.jpg", "notes.txt"]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     (root / name).touch()
    >>> [pathlib.Path(f).relative_to(root).as_posix() for f in list_images(root)]
    ['a.jpg', 'b/1.JPG', 'b/2.png']
    """
    extensions = _check_extensions(extensions)
    return _walk_images(_check_root(root), extensions)


def load_image_folder(root, *, extensions=IMAGE_EXTENSIONS, allow_empty=False):
    """Load the file names and labels of a class-per-folder image tree.

    Each sub-folder of ``root`` is one class, in sorted order; every image file below it
    (searched recursively) belongs to that class. The images are not decoded: pass
    ``filenames`` to a feature extractor, which reads them.

    Parameters
    ----------
    root : str or os.PathLike
        Folder whose sub-folders are the classes.
    extensions : str or sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File extensions counted as images, matched case-insensitively. Files with other
        extensions (text files, annotations, ...) are not images by this definition and are
        ignored.
    allow_empty : bool, default=False
        If False, a class folder without images is an error. If True, it is kept as a class
        with no images (its index still counts in ``target_names``).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        filenames : list of str
            Paths of the image files, grouped by class and sorted within each class.
        target : ndarray of shape (n_images,), dtype int64
            Class index of each image.
        target_names : ndarray of shape (n_classes,), dtype object
            Name of each class folder.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist, has no class sub-folders, or (unless ``allow_empty``) a
        class folder holds no image.
    NotADirectoryError
        If ``root`` is not a directory.
    ValueError
        If image files lie directly in ``root``, outside any class folder: they would have no
        label.

    Notes
    -----
    Hidden files and folders (names starting with ``"."``) are ignored.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skretrieval.datasets import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cats/1.jpg", "cats/2.jpg", "dogs/1.png"]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     (root / name).touch()
    >>> data = load_image_folder(root)
    >>> data.target_names.tolist(), data.target.tolist()
    (['cats', 'dogs'], [0, 0, 1])
    """
    extensions = _check_extensions(extensions)
    path = _check_root(root)
    entries = sorted(entry for entry in os.listdir(path) if not _is_hidden(entry))
    stray = [
        entry
        for entry in entries
        if (path / entry).is_file() and entry.lower().endswith(extensions)
    ]
    if stray:
        raise ValueError(
            f"Image folder {str(root)!r} holds image files outside any class sub-folder "
            f"(e.g. {stray[0]!r}); put each image in the sub-folder of its class."
        )
    class_names = [entry for entry in entries if (path / entry).is_dir()]
    if not class_names:
        raise FileNotFoundError(
            f"Image folder {str(root)!r} has no class sub-folders; expected one sub-folder per "
            f"class holding image files with extensions {list(extensions)}."
        )

    filenames = []
    target = []
    for label, name in enumerate(class_names):
        files = _walk_images(path / name, extensions)
        if not files and not allow_empty:
            raise FileNotFoundError(
                f"Class folder {str(path / name)!r} holds no image file with extensions "
                f"{list(extensions)}; remove it or pass allow_empty=True."
            )
        filenames.extend(files)
        target.extend([label] * len(files))
    if not filenames:
        raise FileNotFoundError(
            f"Image folder {str(root)!r} holds no image file with extensions {list(extensions)} "
            "in any of its class sub-folders."
        )

    descr = (
        f"Image folder {str(root)!r}: {len(filenames)} images in {len(class_names)} classes "
        "(one class per sub-folder)."
    )
    return Bunch(
        filenames=filenames,
        target=np.asarray(target, dtype=np.int64),
        target_names=np.asarray(class_names, dtype=object),
        DESCR=descr,
    )


# ---------------------------------------------------------------------------------------------
# Retrieval benchmarks: revisited and classic Oxford / Paris, INRIA Holidays, UKBench
# ---------------------------------------------------------------------------------------------


class MissingDatasetFilesError(FileNotFoundError):
    """Files of a benchmark are missing from its folder; the message says which, and where.

    The loaders of :mod:`skretrieval.datasets` never download anything: the ground truth and
    the images must be fetched by hand from the benchmark's official site. This error is a
    :class:`FileNotFoundError`, so ``except FileNotFoundError`` catches it too.
    """


_REVISITED_NAMES = ("roxford5k", "rparis6k")
_CLASSIC_NAMES = ("oxford5k", "paris6k")

_REVISITED_GND_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl"
_OXFORD_IMAGES_URL = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images.tgz"
_PARIS_IMAGES_URL = (
    "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1.tgz and paris_2.tgz "
    "(flatten the per-landmark folders they unpack to)"
)
_IMAGE_SOURCES = {
    "roxford5k": _OXFORD_IMAGES_URL,
    "oxford5k": _OXFORD_IMAGES_URL,
    "rparis6k": _PARIS_IMAGES_URL,
    "paris6k": _PARIS_IMAGES_URL,
}
_CLASSIC_GT_URLS = {
    "oxford5k": "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/gt_files_170407.tgz",
    "paris6k": "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_120310.tgz",
}
_HOLIDAYS_URL = (
    "https://lear.inrialpes.fr/people/jegou/data.php#holidays (jpg1.tar.gz and jpg2.tar.gz)"
)
_HOLIDAYS_SIZE = (1491, 500)  # images, queries
_UKBENCH_URL = "https://archive.org/details/ukbench (ukbench.zip, formerly vis.uky.edu/~stewe)"
_UKBENCH_SIZE = 10200


def _check_benchmark_root(root):
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike); got {type(root).__name__}.")
    return Path(root)


def _check_name(name, allowed):
    if name not in allowed:
        raise ValueError(f"Unknown dataset name {name!r}; expected one of {list(allowed)}.")
    return name


def _as_index_array(values):
    return np.asarray(values, dtype=np.int64).ravel()


def _missing_message(what, missing, folder, source):
    """Sentence listing missing files: how many, the first one, where they go and where from."""
    return (
        f"{len(missing)} {what} missing under {str(folder)!r} (first: {missing[0]!r}); "
        f"download them from {source} and place them there, or pass allow_missing=True to "
        "evaluate on the images present."
    )


def _restrict(n_total, present):
    """Map old indices to new ones (-1 for the dropped), given a bool mask of kept items."""
    new_index = np.full(n_total, -1, dtype=np.int64)
    new_index[present] = np.arange(int(np.sum(present)))
    return new_index


def _remap(indices, new_index):
    remapped = new_index[_as_index_array(indices)]
    return remapped[remapped >= 0]


def _report_restriction(
    name, n_queries, n_images, n_missing_queries, n_missing_images, without_positives
):
    import warnings

    message = (
        f"{name}: {n_missing_images} database images and {n_missing_queries} query images are "
        f"missing; evaluating {n_queries} queries against {n_images} database images."
    )
    if len(without_positives):
        message += (
            f" {len(without_positives)} of the remaining queries have no positive left "
            f"(queries {np.asarray(without_positives)[:10].tolist()}); metrics skip them."
        )
    warnings.warn(message, UserWarning, stacklevel=3)


def _benchmark_bunch(
    name,
    images,
    queries,
    query_boxes,
    gnd,
    positive_keys,
    n_missing_images,
    n_missing_queries,
    descr,
    **extra,
):
    if not queries or not images:
        raise MissingDatasetFilesError(
            f"{name}: no {'query' if not queries else 'database'} image is present, so there is "
            "nothing to evaluate; see the dataset's loader documentation for the files expected."
        )
    has_positive = np.array(
        [sum(len(entry[key]) for key in positive_keys) > 0 for entry in gnd], dtype=bool
    )
    return Bunch(
        name=name,
        images=images,
        queries=queries,
        query_boxes=query_boxes,
        gnd=gnd,
        positive_keys=tuple(positive_keys),
        n_missing_images=int(n_missing_images),
        n_missing_queries=int(n_missing_queries),
        queries_without_positives=np.flatnonzero(~has_positive),
        DESCR=descr,
        **extra,
    )


def _read_revisited_gnd(path):
    import pickle

    with open(path, "rb") as file:
        try:
            cfg = pickle.load(file)
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable pickle file: {exc}") from exc
    if not isinstance(cfg, dict) or not {"imlist", "qimlist", "gnd"} <= set(cfg):
        raise ValueError(
            f"{str(path)!r} is not a revisited ground truth: expected a pickled dict with keys "
            "'imlist', 'qimlist' and 'gnd'."
        )
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise ValueError(
            f"{str(path)!r}: 'gnd' has {len(cfg['gnd'])} entries but 'qimlist' has "
            f"{len(cfg['qimlist'])} queries."
        )
    for i, entry in enumerate(cfg["gnd"]):
        absent = [key for key in ("easy", "hard", "junk", "bbx") if key not in entry]
        if absent:
            raise ValueError(f"{str(path)!r}: gnd[{i}] has no key(s) {absent}.")
    return cfg


def load_revisited(root, name, *, allow_missing=False):
    """Load the revisited Oxford or Paris benchmark (ROxford5k, RParis6k) from disk.

    Reads the published ground truth ``root/<name>/gnd_<name>.pkl`` of Radenovic et al.
    (CVPR 2018) and lists the images ``root/<name>/jpg/<image>.jpg``. Nothing is downloaded.
    The ground truth comes in the form :func:`skretrieval.metrics.evaluate_revisited` takes:
    rank the database ``images`` for each of the ``queries`` (cropped to ``query_boxes`` with
    :func:`crop_queries`, as the protocol requires) and pass the ranks and ``gnd``.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding one sub-folder per benchmark, e.g. ``root/roxford5k/gnd_roxford5k.pkl``
        and ``root/roxford5k/jpg/all_souls_000000.jpg``.
    name : {"roxford5k", "rparis6k"}
        Benchmark.
    allow_missing : bool, default=False
        If False, a missing image is an error. If True, the benchmark is restricted to the
        images present: missing database images are removed and the ground-truth indices
        renumbered, queries whose image is missing are dropped, and a :class:`UserWarning`
        says how many queries and database images remain and which queries have no positive
        left.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        name : str
            The benchmark name.
        images : list of str
            Paths of the database images, in the order of the ground truth's ``imlist``.
        queries : list of str
            Paths of the (uncropped) query images.
        query_boxes : ndarray of shape (n_queries, 4), dtype float64
            Query regions ``[x1, y1, x2, y2]`` in pixels.
        gnd : list of dict
            One dict per query with int64 index arrays into ``images`` under ``"easy"``,
            ``"hard"`` and ``"junk"``, and the box under ``"bbx"``.
        positive_keys : tuple of str
            ``("easy", "hard")``: the keys of ``gnd`` holding positives (medium setting).
        n_missing_images : int
            Database images missing (0 unless ``allow_missing``).
        n_missing_queries : int
            Queries dropped because their image is missing.
        queries_without_positives : ndarray of int
            Queries with neither easy nor hard positive.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    MissingDatasetFilesError
        If the ground-truth file is missing or, unless ``allow_missing``, any image is; the
        message says which files go where and where to download them.
    ValueError
        If ``name`` is unknown or the ground-truth file is not in the published format.

    See Also
    --------
    crop_queries : The query images cropped to their boxes.
    skretrieval.metrics.evaluate_revisited : mAP and mP@k for easy, medium and hard.

    Notes
    -----
    The ground truth is a pickle, which can run code when loaded: read only the file published
    by the benchmark's authors.

    Examples
    --------
    >>> import pickle, tempfile, pathlib
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_revisited
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "roxford5k" / "jpg").mkdir(parents=True)
    >>> for image in ["a", "b", "c"]:
    ...     Image.new("RGB", (8, 8)).save(root / "roxford5k" / "jpg" / f"{image}.jpg")
    >>> gnd = [{"easy": [1], "hard": [2], "junk": [], "bbx": [0, 0, 4, 4]}]
    >>> with open(root / "roxford5k" / "gnd_roxford5k.pkl", "wb") as file:
    ...     pickle.dump({"imlist": ["a", "b", "c"], "qimlist": ["a"], "gnd": gnd}, file)
    >>> data = load_revisited(root, "roxford5k")
    >>> len(data.images), len(data.queries), data.query_boxes.tolist()
    (3, 1, [[0.0, 0.0, 4.0, 4.0]])
    """
    name = _check_name(name, _REVISITED_NAMES)
    folder = _check_benchmark_root(root) / name
    gnd_path = folder / f"gnd_{name}.pkl"
    jpg = folder / "jpg"
    if not gnd_path.is_file():
        raise MissingDatasetFilesError(
            f"{name}: expected the ground truth at {str(gnd_path)!r}; download it from "
            f"{_REVISITED_GND_URL.format(name=name)} and place it there. The images go under "
            f"{str(jpg)!r} as <image>.jpg; download them from {_IMAGE_SOURCES[name]}."
        )
    cfg = _read_revisited_gnd(gnd_path)
    imlist = [str(image) for image in cfg["imlist"]]
    qimlist = [str(image) for image in cfg["qimlist"]]
    image_present = np.array([(jpg / f"{im}.jpg").is_file() for im in imlist], dtype=bool)
    query_present = np.array([(jpg / f"{im}.jpg").is_file() for im in qimlist], dtype=bool)
    if not allow_missing and not (image_present.all() and query_present.all()):
        missing = [f"{im}.jpg" for im in imlist if not (jpg / f"{im}.jpg").is_file()]
        missing += [f"{im}.jpg" for im, ok in zip(qimlist, query_present, strict=True) if not ok]
        missing = list(dict.fromkeys(missing))
        raise MissingDatasetFilesError(
            f"{name}: {_missing_message('images', missing, jpg, _IMAGE_SOURCES[name])}"
        )

    new_index = _restrict(len(imlist), image_present)
    gnd = []
    for entry, present in zip(cfg["gnd"], query_present, strict=True):
        if present:
            gnd.append(
                {
                    "easy": _remap(entry["easy"], new_index),
                    "hard": _remap(entry["hard"], new_index),
                    "junk": _remap(entry["junk"], new_index),
                    "bbx": np.asarray(entry["bbx"], dtype=np.float64).ravel(),
                }
            )
    images = [str(jpg / f"{im}.jpg") for im, ok in zip(imlist, image_present, strict=True) if ok]
    queries = [str(jpg / f"{im}.jpg") for im, ok in zip(qimlist, query_present, strict=True) if ok]
    query_boxes = np.array([entry["bbx"] for entry in gnd], dtype=np.float64).reshape(-1, 4)
    n_missing_images = int(np.sum(~image_present))
    n_missing_queries = int(np.sum(~query_present))
    data = _benchmark_bunch(
        name,
        images,
        queries,
        query_boxes,
        gnd,
        ("easy", "hard"),
        n_missing_images,
        n_missing_queries,
        f"Revisited {name} (Radenovic et al., CVPR 2018) read from {str(folder)!r}: "
        f"{len(queries)} queries (cropped to their boxes by the protocol), {len(images)} "
        "database images; settings easy, medium and hard.",
    )
    if n_missing_images or n_missing_queries:
        _report_restriction(
            name,
            len(queries),
            len(images),
            n_missing_queries,
            n_missing_images,
            data.queries_without_positives,
        )
    return data


def _read_name_list(path):
    with open(path) as file:
        return [line.strip() for line in file if line.strip()]


def _strip_prefix(image):
    # The Oxford query files name images "oxc1_<image>"; the good/ok/junk lists do not.
    return image[len("oxc1_") :] if image.startswith("oxc1_") else image


def _read_classic_query(path):
    """(image name, box) of a ``*_query.txt`` file: ``[query_id] image x1 y1 x2 y2``."""
    lines = _read_name_list(path)
    fields = lines[0].split() if lines else []
    if len(fields) == 6:  # a leading query id
        fields = fields[1:]
    if len(lines) != 1 or len(fields) != 5:
        raise ValueError(
            f"{str(path)!r} must hold one line '<image> x1 y1 x2 y2'; got {lines[:2]!r}."
        )
    try:
        box = [float(value) for value in fields[1:]]
    except ValueError:
        raise ValueError(f"{str(path)!r}: the box {fields[1:]} is not four numbers.") from None
    return _strip_prefix(fields[0]), box


def load_oxford_paris(root, name, *, allow_missing=False):
    """Load the original Oxford5k or Paris6k benchmark from its text ground-truth files.

    Reads ``root/<name>/gt/<query>_query.txt`` (one line ``<image> x1 y1 x2 y2``; a leading
    query id is accepted, and the ``oxc1_`` prefix of Oxford's image names is stripped) and
    the image lists ``<query>_good.txt``, ``<query>_ok.txt`` and ``<query>_junk.txt``. The
    database is every ``.jpg`` file under ``root/<name>/jpg/``, sorted. Positives are the good
    and ok images, junk the junk images, as in the reference evaluation. Nothing is
    downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding one sub-folder per benchmark, e.g. ``root/oxford5k/gt/`` and
        ``root/oxford5k/jpg/``.
    name : {"oxford5k", "paris6k"}
        Benchmark.
    allow_missing : bool, default=False
        If False, an image named by the ground truth but absent from ``jpg/`` is an error. If
        True, it is left out of the ground truth, queries whose image is missing are dropped,
        and a :class:`UserWarning` says how many queries and database images remain.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The fields of :func:`load_revisited`, except that each ``gnd`` dict holds
        ``"ok"`` (good + ok positives), ``"junk"`` and ``"bbx"``, ``positive_keys`` is
        ``("ok",)``, and ``n_missing_images`` counts the ground-truth images absent from
        ``jpg/``. It also has:

        query_ids : list of str
            Query names, from the ground-truth file names (``"all_souls_1"``, ...).

    Raises
    ------
    MissingDatasetFilesError
        If the ``gt`` folder or its query files are missing or, unless ``allow_missing``, an
        image named by the ground truth is.
    ValueError
        If ``name`` is unknown or a ground-truth file is malformed.

    See Also
    --------
    ground_truth_masks : Relevance and junk matrices for
        :func:`skretrieval.metrics.mean_average_precision` (use ``interpolation="trapezoid"``
        for the reference AP).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_oxford_paris
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "oxford5k"
    >>> (folder / "jpg").mkdir(parents=True); (folder / "gt").mkdir()
    >>> for image in ["a_1", "a_2", "b_1"]:
    ...     Image.new("RGB", (8, 8)).save(folder / "jpg" / f"{image}.jpg")
    >>> _ = (folder / "gt" / "a_1_query.txt").write_text("oxc1_a_1 0 0 4 4\\n")
    >>> _ = (folder / "gt" / "a_1_good.txt").write_text("a_1\\n")
    >>> _ = (folder / "gt" / "a_1_ok.txt").write_text("a_2\\n")
    >>> _ = (folder / "gt" / "a_1_junk.txt").write_text("")
    >>> data = load_oxford_paris(folder.parent, "oxford5k")
    >>> data.query_ids, data.gnd[0]["ok"].tolist(), data.gnd[0]["junk"].tolist()
    (['a_1'], [0, 1], [])
    """
    name = _check_name(name, _CLASSIC_NAMES)
    folder = _check_benchmark_root(root) / name
    gt, jpg = folder / "gt", folder / "jpg"
    query_files = sorted(gt.glob("*_query.txt")) if gt.is_dir() else []
    if not query_files:
        raise MissingDatasetFilesError(
            f"{name}: expected the ground-truth files <query>_query.txt, _good.txt, _ok.txt and "
            f"_junk.txt under {str(gt)!r}; download them from {_CLASSIC_GT_URLS[name]} and "
            f"unpack them there. The images go under {str(jpg)!r} as <image>.jpg; download them "
            f"from {_IMAGE_SOURCES[name]}."
        )
    database = (
        sorted(p.stem for p in jpg.iterdir() if p.suffix.lower() == ".jpg" and p.is_file())
        if jpg.is_dir()
        else []
    )
    position = {image: i for i, image in enumerate(database)}

    queries, query_ids, boxes, gnd = [], [], [], []
    referenced, missing_queries = set(), []
    for query_file in query_files:
        query_id = query_file.name[: -len("_query.txt")]
        lists = {}
        for kind in ("good", "ok", "junk"):
            path = gt / f"{query_id}_{kind}.txt"
            if not path.is_file():
                raise MissingDatasetFilesError(
                    f"{name}: {str(path)!r} is missing; every <query>_query.txt needs its "
                    f"_good.txt, _ok.txt and _junk.txt beside it (from {_CLASSIC_GT_URLS[name]})."
                )
            lists[kind] = [_strip_prefix(image) for image in _read_name_list(path)]
            referenced.update(lists[kind])
        image, box = _read_classic_query(query_file)
        referenced.add(image)
        if image not in position:
            missing_queries.append(image)
            continue
        positives = [position[im] for im in lists["good"] + lists["ok"] if im in position]
        junk = [position[im] for im in lists["junk"] if im in position]
        queries.append(str(jpg / f"{image}.jpg"))
        query_ids.append(query_id)
        boxes.append(box)
        gnd.append(
            {
                "ok": np.unique(np.asarray(positives, dtype=np.int64)),
                "junk": np.unique(np.asarray(junk, dtype=np.int64)),
                "bbx": np.asarray(box, dtype=np.float64),
            }
        )
    missing = sorted(f"{image}.jpg" for image in referenced if image not in position)
    if missing and not allow_missing:
        raise MissingDatasetFilesError(
            f"{name}: "
            + _missing_message("ground-truth images", missing, jpg, _IMAGE_SOURCES[name])
        )
    images = [str(jpg / f"{image}.jpg") for image in database]
    data = _benchmark_bunch(
        name,
        images,
        queries,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        gnd,
        ("ok",),
        len(missing),
        len(missing_queries),
        f"{name} (Philbin et al.) read from {str(folder)!r}: {len(queries)} queries (cropped to "
        f"their boxes), {len(images)} database images; positives good + ok, junk ignored.",
        query_ids=query_ids,
    )
    if missing:
        _report_restriction(
            name,
            len(queries),
            len(images),
            len(missing_queries),
            len(missing),
            data.queries_without_positives,
        )
    return data


def _images_folder(root, subfolder):
    """``root/subfolder`` when it exists (the layout of the official archives), else ``root``."""
    path = _check_benchmark_root(root)
    return path / subfolder if (path / subfolder).is_dir() else path


def _numbered_images(folder, pattern):
    """``{number: path}`` of the files of ``folder`` whose name matches ``pattern``."""
    import re

    regex = re.compile(pattern, re.IGNORECASE)
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = regex.fullmatch(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = str(path)
    return dict(sorted(found.items()))


def _group_ground_truth(groups, query_groups, self_index=None):
    """Per query, the database indices of its group (``ok``), and itself as junk if given."""
    gnd = []
    for i, group in enumerate(query_groups):
        positives = np.flatnonzero(groups == group)
        junk = np.empty(0, dtype=np.int64)
        if self_index is not None:
            junk = np.array([self_index[i]], dtype=np.int64)
            positives = positives[positives != self_index[i]]
        gnd.append({"ok": positives.astype(np.int64), "junk": junk})
    return gnd


def load_holidays(root, *, allow_missing=False):
    """Load the INRIA Holidays benchmark (Jegou et al., ECCV 2008) from disk.

    The images are named ``<number>.jpg`` (``100000.jpg``, ``100001.jpg``, ...); image
    ``number`` belongs to group ``number // 100``, and the first image of each group (the
    number ending in ``00``) is its query. The database is every other image, the queries
    being excluded as in the standard protocol; the positives of a query are the other images
    of its group. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the images, directly or in a ``jpg`` sub-folder (the layout of the
        official archives ``jpg1.tar.gz`` and ``jpg2.tar.gz``).
    allow_missing : bool, default=False
        If False, anything but the full benchmark (1491 images, 500 queries) is an error. If
        True, the images present are used, and a :class:`UserWarning` says how many queries
        and database images remain and which queries have no positive left.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        name : str
            ``"holidays"``.
        images : list of str
            Paths of the database images (non-query images), sorted by number.
        queries : list of str
            Paths of the query images, sorted by number.
        query_boxes : None
            Holidays queries are whole images.
        gnd : list of dict
            One dict per query with int64 index arrays into ``images``: ``"ok"`` (the other
            images of the group) and ``"junk"`` (empty).
        positive_keys : tuple of str
            ``("ok",)``.
        target : ndarray of shape (n_images,), dtype int64
            Group of each database image.
        query_target : ndarray of shape (n_queries,), dtype int64
            Group of each query.
        n_missing_images : int
            Database images missing from the 991 of the full benchmark.
        n_missing_queries : int
            Queries missing from the 500 of the full benchmark.
        queries_without_positives : ndarray of int
            Queries whose group has no database image.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    MissingDatasetFilesError
        If no query image is found or, unless ``allow_missing``, the benchmark is incomplete.

    Notes
    -----
    Some Holidays images are stored rotated by 90 degrees (their EXIF orientation is not
    applied, as in most published results); the images are used as stored.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_holidays
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for number in [100000, 100001, 100002, 100100, 100101]:
    ...     Image.new("RGB", (8, 8)).save(root / f"{number}.jpg")
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     data = load_holidays(root, allow_missing=True)
    >>> [pathlib.Path(p).name for p in data.queries]
    ['100000.jpg', '100100.jpg']
    >>> [entry["ok"].tolist() for entry in data.gnd]
    [[0, 1], [2]]
    """
    folder = _images_folder(root, "jpg")
    found = _numbered_images(folder, r"(\d+)\.jpe?g")
    numbers = np.fromiter(found, dtype=np.int64, count=len(found))
    paths = list(found.values())
    is_query = numbers % 100 == 0
    n_images, n_queries = _HOLIDAYS_SIZE
    expected = f"the {n_images} images <number>.jpg ({n_queries} queries <number>00.jpg)"
    if not is_query.any() or (
        not allow_missing and (len(numbers) != n_images or is_query.sum() != n_queries)
    ):
        raise MissingDatasetFilesError(
            f"holidays: expected {expected} under {str(folder)!r}; found {len(numbers)} images "
            f"and {int(is_query.sum())} queries. Download them from {_HOLIDAYS_URL} and unpack "
            "them there" + ("." if allow_missing else ", or pass allow_missing=True.")
        )
    groups = numbers // 100
    database = np.flatnonzero(~is_query)
    gnd = _group_ground_truth(groups[database], groups[is_query])
    data = _benchmark_bunch(
        "holidays",
        [paths[i] for i in database],
        [paths[i] for i in np.flatnonzero(is_query)],
        None,
        gnd,
        ("ok",),
        max(0, n_images - n_queries - len(database)),
        max(0, n_queries - int(is_query.sum())),
        f"INRIA Holidays read from {str(folder)!r}: {int(is_query.sum())} queries, "
        f"{len(database)} database images (queries excluded); positives: the query's group.",
        target=groups[database],
        query_target=groups[is_query],
    )
    if data.n_missing_images or data.n_missing_queries or len(data.queries_without_positives):
        _report_restriction(
            "holidays",
            len(data.queries),
            len(data.images),
            data.n_missing_queries,
            data.n_missing_images,
            data.queries_without_positives,
        )
    return data


def load_ukbench(root, *, allow_missing=False):
    """Load the UKBench benchmark (Nister and Stewenius, CVPR 2006) from disk.

    The 10200 images ``ukbench00000.jpg`` ... ``ukbench10199.jpg`` show 2550 objects, four
    consecutive images each. Every image is a query against all the others: the database is
    every image, and each query's own image is junk (deleted from its ranking), so its
    positives are the other three images of its group. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the images, directly or in a ``full`` sub-folder (the layout of the
        official archive).
    allow_missing : bool, default=False
        If False, a missing image is an error. If True, the images present are used, and a
        :class:`UserWarning` says how many remain and which queries have no positive left.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        name : str
            ``"ukbench"``.
        images : list of str
            Paths of the images, sorted by number.
        queries : list of str
            The same paths: every image is a query.
        query_boxes : None
            Queries are whole images.
        gnd : list of dict
            One dict per query with int64 index arrays into ``images``: ``"ok"`` (the other
            images of the group) and ``"junk"`` (the query itself).
        positive_keys : tuple of str
            ``("ok",)``.
        target : ndarray of shape (n_images,), dtype int64
            Group (object) of each image, ``number // 4``.
        query_target : ndarray of shape (n_queries,), dtype int64
            The same groups.
        n_missing_images, n_missing_queries : int
            Images missing from the full benchmark (the two counts are equal).
        queries_without_positives : ndarray of int
            Queries whose group has no other image.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    MissingDatasetFilesError
        If no image is found or, unless ``allow_missing``, any image is missing.

    Notes
    -----
    The usual UKBench score (N-S score) is the mean number of images of the query's group,
    the query itself included, among its top 4 results in the ranking of all images: 4 is
    perfect.

    Examples
    --------
    >>> import tempfile, pathlib, warnings
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_ukbench
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for number in range(8):
    ...     Image.new("RGB", (8, 8)).save(root / f"ukbench{number:05d}.jpg")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     data = load_ukbench(root, allow_missing=True)
    >>> data.target.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    >>> data.gnd[5]["ok"].tolist(), data.gnd[5]["junk"].tolist()
    ([4, 6, 7], [5])
    """
    folder = _images_folder(root, "full")
    found = _numbered_images(folder, r"ukbench(\d{5})\.jpe?g")
    numbers = np.fromiter(found, dtype=np.int64, count=len(found))
    paths = list(found.values())
    missing = [f"ukbench{number:05d}.jpg" for number in range(_UKBENCH_SIZE) if number not in found]
    if not found or (missing and not allow_missing):
        raise MissingDatasetFilesError(
            f"ukbench: expected the {_UKBENCH_SIZE} images ukbench00000.jpg ... "
            f"ukbench{_UKBENCH_SIZE - 1:05d}.jpg under {str(folder)!r}; "
            + _missing_message("images", missing or ["ukbench00000.jpg"], folder, _UKBENCH_URL)
        )
    groups = numbers // 4
    gnd = _group_ground_truth(groups, groups, self_index=np.arange(len(numbers)))
    data = _benchmark_bunch(
        "ukbench",
        paths,
        list(paths),
        None,
        gnd,
        ("ok",),
        len(missing),
        len(missing),
        f"UKBench read from {str(folder)!r}: {len(paths)} images, each a query against all the "
        "others (itself excluded); positives: the other images of its group of four.",
        target=groups,
        query_target=groups.copy(),
    )
    if missing or len(data.queries_without_positives):
        _report_restriction(
            "ukbench",
            len(paths),
            len(paths),
            len(missing),
            len(missing),
            data.queries_without_positives,
        )
    return data


def ground_truth_masks(gnd, n_database, *, positive_keys=("ok",), junk_keys=("junk",)):
    """Relevance and junk matrices of a benchmark ground truth, for the score-based metrics.

    Parameters
    ----------
    gnd : list of dict
        One dict per query with integer index arrays into the database, such as the ``gnd``
        of :func:`load_oxford_paris`, :func:`load_holidays`, :func:`load_ukbench` or
        :func:`load_revisited`.
    n_database : int
        Number of database images.
    positive_keys : sequence of str, default=("ok",)
        Keys of the positives; the bunches give theirs as ``positive_keys`` (for the revisited
        benchmarks ``("easy", "hard")``, the medium setting).
    junk_keys : sequence of str, default=("junk",)
        Keys of the items to ignore.

    Returns
    -------
    relevant : ndarray of shape (n_queries, n_database), dtype bool
        Positives that are not junk.
    junk : ndarray of shape (n_queries, n_database), dtype bool
        Junk items, for the ``junk`` argument of
        :func:`skretrieval.metrics.mean_average_precision` and :func:`~skretrieval.metrics.
        precision_at_k`.

    Examples
    --------
    >>> from skretrieval.datasets import ground_truth_masks
    >>> relevant, junk = ground_truth_masks([{"ok": [0, 2], "junk": [1]}], 4)
    >>> relevant.astype(int).tolist(), junk.astype(int).tolist()
    ([[1, 0, 1, 0]], [[0, 1, 0, 0]])
    """
    n_queries = len(gnd)
    masks = []
    for keys in (positive_keys, junk_keys):
        mask = np.zeros((n_queries, n_database), dtype=bool)
        for key in keys:
            lists = [_as_index_array(entry[key]) for entry in gnd]
            rows = np.repeat(np.arange(n_queries), [len(indices) for indices in lists])
            columns = np.concatenate(lists) if lists else np.empty(0, dtype=np.int64)
            if columns.size and (columns.min() < 0 or columns.max() >= n_database):
                raise ValueError(
                    f"gnd[...][{key!r}] holds indices outside [0, {n_database}) database images."
                )
            mask[rows, columns] = True
        masks.append(mask)
    relevant, junk = masks
    return relevant & ~junk, junk


def crop_queries(data):
    """The query images of a benchmark, cropped to their boxes as the protocol requires.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        A bunch from one of the benchmark loaders, with ``queries`` (paths) and
        ``query_boxes`` (``(n_queries, 4)`` boxes ``[x1, y1, x2, y2]``, or None for whole
        images).

    Returns
    -------
    images : list of PIL.Image.Image
        RGB query images. Box corners are rounded to the nearest pixel (as
        :meth:`PIL.Image.Image.crop` does) and clipped to the image.

    Raises
    ------
    ValueError
        If a box is empty once clipped to its image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn.utils import Bunch
    >>> from skretrieval.datasets import crop_queries
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "query.png"
    >>> Image.new("RGB", (40, 30)).save(path)
    >>> data = Bunch(queries=[str(path)], query_boxes=np.array([[5.2, 4.0, 25.0, 100.0]]))
    >>> crop_queries(data)[0].size
    (20, 26)
    """
    boxes = data.query_boxes
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (len(data.queries), 4):
            raise ValueError(
                f"query_boxes must have shape ({len(data.queries)}, 4); got {boxes.shape}."
            )
    images = []
    for i, path in enumerate(data.queries):
        with Image.open(path) as image:
            image = image.convert("RGB")
        if boxes is not None:
            width, height = image.size
            x1, y1, x2, y2 = np.round(boxes[i]).astype(int)
            x1, x2 = np.clip([x1, x2], 0, width)
            y1, y2 = np.clip([y1, y2], 0, height)
            if x2 <= x1 or y2 <= y1:
                raise ValueError(
                    f"The box {boxes[i].tolist()} of query {i} ({path!r}) is empty within its "
                    f"{width}x{height} image."
                )
            image = image.crop((int(x1), int(y1), int(x2), int(y2)))
        images.append(image)
    return images
