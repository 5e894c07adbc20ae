"""A Copydays-style copy-detection benchmark generated from photographs shipped offline."""

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from sklearn.utils import check_random_state

from skretrieval._utils.validation import is_integer
from skretrieval.datasets._base import dataset_bunch

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
    "occlude",
    "extreme",
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


def _occlude(image, rng, area_range=(0.25, 0.4)):
    # One opaque rectangle of random colour, as a caption, logo or overlaid picture would be.
    area = rng.uniform(*area_range)
    ratio = np.exp(rng.uniform(np.log(1 / 2), np.log(2)))
    width, height = image.size
    box_w = max(1, min(width, round(width * np.sqrt(area * ratio))))
    box_h = max(1, min(height, round(width * height * area / box_w)))
    left = rng.randint(0, width - box_w + 1)
    top = rng.randint(0, height - box_h + 1)
    colour = tuple(int(c) for c in rng.randint(0, 256, size=3))
    occluded = image.copy()
    occluded.paste(colour, (left, top, left + box_w, top + box_h))
    covered = box_w * box_h / (width * height)
    return occluded, f"occlude(area={covered:.2f})"


def _extreme(image, rng):
    # Harsher than "strong": a small crop, a larger tilt, an occlusion, a strong downscale and
    # a very low JPEG quality, so that copy detection is far from saturated.
    steps = []
    for step in (
        lambda im: _crop(im, rng, area_range=(0.2, 0.4)),
        lambda im: _tilt(im, rng, angle_range=(10.0, 30.0)),
        lambda im: _color(im, rng),
        lambda im: _occlude(im, rng, area_range=(0.15, 0.3)),
        lambda im: _scale(im, rng, factor_range=(0.3, 0.5)),
        lambda im: _jpeg(im, rng, quality_range=(5, 12)),
    ):
        image, description = step(image)
        steps.append(description)
    return image, "extreme: " + " + ".join(steps)


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
    "occlude": _occlude,
    "extreme": _extreme,
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
        - ``"blur"``: Gaussian blur of radius 1-3 pixels;
        - ``"occlude"``: one opaque rectangle of random colour over 25-40% of the area;
        - ``"extreme"``: a harder chain than ``"strong"``: crop to 20-40% of the area, tilt by
          10-30 degrees, colour change, occlusion of 15-30%, downscale by 0.3-0.5 and JPEG
          at quality 5-12.

        ``None`` uses the first eight (all but ``"flip"``, ``"blur"``, ``"occlude"`` and
        ``"extreme"``); ``["strong", "extreme", "occlude"]`` makes a harder benchmark. A
        callable is called as ``transform(image, random_state)`` with an RGB
        :class:`PIL.Image.Image` and a :class:`numpy.random.RandomState`, and returns a PIL
        image or a uint8 array; its ``__name__`` describes the copy.
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
        The keys of the dataset schema (see :mod:`skretrieval.datasets`), then extras. The
        dataset holds pixels, and every image is in turn a query against the others, relevant
        where ``target`` is equal: ``filenames``, ``query_filenames``, ``query_target``,
        ``query_boxes``, ``gnd``, ``positive_keys``, ``queries_without_positives``,
        ``n_missing_images`` and ``n_missing_queries`` are None. The others are:

        name : str
            ``"copydays"``.
        images : list of ndarray of shape (H_i, W_i, 3), dtype uint8
            Originals first, then the copies grouped by source photo.
        target : ndarray of shape (n_images,), dtype int64
            Group of each image: the index of its source photo in ``target_names``.
        target_names : ndarray of shape (n_groups,), dtype object
            Name of each source photo.
        DESCR : str
            Description of the dataset.

        The extras:

        is_original : ndarray of shape (n_images,), dtype bool
            True for the untransformed originals.
        transform_family : ndarray of shape (n_images,), dtype object
            Transform name of each image (``"original"`` for originals).
        transform : ndarray of shape (n_images,), dtype object
            Full description of each image's transform and its drawn parameters, such as
            ``"jpeg(quality=17)"`` (``"original"`` for originals).
        credits : ndarray of shape (n_groups,), dtype object
            Origin and licence of each source photo.

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
    if not is_integer(n_copies_per_image) or n_copies_per_image < 0:
        raise ValueError(
            f"n_copies_per_image must be a non-negative integer; got {n_copies_per_image!r}."
        )
    if max_size is not None and (not is_integer(max_size) or max_size < 8):
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
    return dataset_bunch(
        "copydays",
        images=images,
        target=target,
        target_names=np.asarray(names, dtype=object),
        descr=descr,
        is_original=np.arange(len(images)) < len(names),
        transform_family=np.asarray(family, dtype=object),
        transform=np.asarray(description, dtype=object),
        credits=np.asarray(credits, dtype=object),
    )
