"""The reliability table: each kind of bad or unusual input, and what skretrieval does with it.

``CASES`` is the table. Each row names the input, says in one sentence what skretrieval does,
and checks it. ``docs/reliability.md`` shows the same rows to users;
``test_the_docs_page_shows_the_same_table`` keeps the two equal, so the page cannot promise
what the code does not do.
"""

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from payloads import CreatesFile
from PIL import Image

from skretrieval.descriptors import GMMDescriptor, SparseCovariance
from skretrieval.extraction import CNNFeatureExtractor, ImageNotFoundError, ImageReadError
from skretrieval.metrics import UndefinedRetrievalMetricWarning, make_retrieval_scorer
from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import (
    FileFormatError,
    PickleNotAllowedError,
    UntrustedTypesError,
    VersionMismatchWarning,
    atomic_write,
    load,
    save,
)
from skretrieval.pooling import GeMPooling

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@dataclass(frozen=True)
class Case:
    area: str
    case: str
    behaviour: str
    check: object  # callable(tmp_path)


def _rgb(height=40, width=48, seed=0):
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


_EXTRACTORS = {}


def _extractor():
    """One tiny random-weight extractor for every image case (built once)."""
    if "extractor" not in _EXTRACTORS:
        _EXTRACTORS["extractor"] = CNNFeatureExtractor(
            backbone="resnet18", weights=None, max_size=64, verbose=False, random_state=0
        ).fit()
    return _EXTRACTORS["extractor"]


def _maps(images):
    return _extractor().transform(images)


def _saved(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


def _raises_image_error(path, match, error=ImageReadError):
    with pytest.raises(error, match=match) as info:
        _maps([_extractor_dummy_first(), path])
    assert info.value.index == 1 and info.value.path == path


def _extractor_dummy_first():
    return _rgb(seed=1)


# --------------------------------------------------------------------------------------------
# Image files and arrays given to CNNFeatureExtractor
# --------------------------------------------------------------------------------------------


def _truncated_jpeg(tmp_path):
    data = (Path(_saved(tmp_path, "whole.jpg", Image.fromarray(_rgb())))).read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    _raises_image_error(str(path), "truncated or corrupt")


def _zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _raises_image_error(str(path), "not an image file")


def _text_as_jpeg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    _raises_image_error(str(path), "not an image file")


def _missing_file(tmp_path):
    path = str(tmp_path / "missing.jpg")
    _raises_image_error(path, "not found", ImageNotFoundError)
    with pytest.raises(FileNotFoundError):
        _maps([path])


def _same_maps(first, second):
    np.testing.assert_array_equal(first[0], second[0])


def _grey_image(tmp_path):
    grey = _rgb()[:, :, 0]
    path = _saved(tmp_path, "grey.png", Image.fromarray(grey))
    _same_maps(_maps([path]), _maps([np.repeat(grey[:, :, None], 3, axis=2)]))


def _rgba_image(tmp_path):
    rgba = np.dstack([_rgb(), np.full((40, 48), 7, np.uint8)])
    path = _saved(tmp_path, "rgba.png", Image.fromarray(rgba))
    _same_maps(_maps([path]), _maps([rgba[:, :, :3]]))


def _palette_image(tmp_path):
    palette = Image.fromarray(_rgb()).convert("P")
    path = _saved(tmp_path, "palette.png", palette)
    _same_maps(_maps([path]), _maps([np.asarray(palette.convert("RGB"))]))


def _sixteen_bit_image(tmp_path):
    wide = (np.random.default_rng(2).random((40, 48)) * 65535).astype(np.uint16)
    path = _saved(tmp_path, "wide.png", Image.fromarray(wide))
    scaled = ((wide.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    _same_maps(_maps([path]), _maps([np.repeat(scaled[:, :, None], 3, axis=2)]))


def _cmyk_image(tmp_path):
    path = _saved(tmp_path, "cmyk.jpg", Image.fromarray(_rgb()).convert("CMYK"))
    with Image.open(path) as stored:
        as_rgb = np.asarray(stored.convert("RGB"))
    _same_maps(_maps([path]), _maps([as_rgb]))


def _tiny_image(tmp_path):
    path = _saved(tmp_path, "tiny.png", Image.fromarray(_rgb(2, 3)))
    maps = _maps([path])
    assert maps[0].shape[1:] == (2, 2) and np.isfinite(maps[0]).all()


def _extreme_aspect(tmp_path):
    path = _saved(tmp_path, "strip.png", Image.fromarray(_rgb(4, 600)))
    _raises_image_error(path, r"1x64 pixels .* needs at least 32 pixels")


def _decompression_bomb(tmp_path, monkeypatch):
    path = _saved(tmp_path, "bomb.png", Image.fromarray(_rgb()))
    # PIL refuses images over twice MAX_IMAGE_PIXELS; a small limit stands in for a huge file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _raises_image_error(path, "DecompressionBombError")


def _non_finite_array(tmp_path):
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[3, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[0\] contains NaN or infinity"):
        _maps([image])


def _empty_array(tmp_path):
    with pytest.raises(ValueError, match=r"X\[0\] is an empty image"):
        _maps([np.zeros((0, 8, 3), np.uint8)])


def _wrong_channels(tmp_path):
    with pytest.raises(ValueError, match=r"C in 1..4"):
        _maps([np.zeros((8, 8, 5), np.uint8)])


# --------------------------------------------------------------------------------------------
# Arrays given to the other estimators
# --------------------------------------------------------------------------------------------

_RNG = np.random.default_rng(0)


def _non_finite_feature_maps(tmp_path):
    maps = [_RNG.random((8, 4, 4)) for _ in range(3)]
    maps[1][0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"X\[1\] contains NaN or infinity"):
        GeMPooling().fit_transform(maps)


def _mismatched_feature_maps(tmp_path):
    with pytest.raises(ValueError, match=r"X\[1\] has 5 channels but X\[0\] has 8"):
        GeMPooling().fit_transform([_RNG.random((8, 4, 4)), _RNG.random((5, 4, 4))])


def _no_images(tmp_path):
    with pytest.raises(ValueError, match="X is empty"):
        GeMPooling().fit_transform([])


def _query_dimension(tmp_path):
    retriever = ImageRetriever(n_neighbors=1).fit(_RNG.random((4, 8)))
    with pytest.raises(ValueError, match="X has 7 features, but ImageRetriever is expecting 8"):
        retriever.kneighbors(_RNG.random((1, 7)))


def _non_finite_database(tmp_path):
    database = _RNG.random((4, 8))
    database[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ImageRetriever().fit(database)


def _constant_local_features(tmp_path):
    with pytest.raises(ValueError, match=r"X\[0\] has 20 local features that are all equal"):
        SparseCovariance().fit_transform([np.ones((20, 6)), _RNG.random((20, 6))])


def _single_local_feature(tmp_path):
    with pytest.raises(ValueError, match=r"X\[0\] has a single local feature"):
        SparseCovariance().fit_transform([_RNG.random((1, 6)), _RNG.random((20, 6))])


def _rank_deficient_local_features(tmp_path):
    local = [np.outer(_RNG.random(20), _RNG.random(6)) for _ in range(3)]
    covariances = SparseCovariance().fit_transform(local)
    assert np.all(np.linalg.eigvalsh(covariances) > 0)


def _too_few_features_for_a_mixture(tmp_path):
    with pytest.raises(ValueError, match=r"X\[0\] has 2 local features, fewer than n_components=3"):
        GMMDescriptor(n_components=3).fit_transform([_RNG.random((2, 4)), _RNG.random((9, 4))])


def _too_many_neighbours(tmp_path):
    retriever = ImageRetriever(n_neighbors=5).fit(_RNG.random((4, 8)))
    with pytest.raises(ValueError, match="n_neighbors=5 is larger than the database"):
        retriever.kneighbors(_RNG.random((1, 8)))


def _zero_neighbours(tmp_path):
    with pytest.raises(ValueError, match="n_neighbors"):
        ImageRetriever(n_neighbors=0).fit(_RNG.random((4, 8)))


# --------------------------------------------------------------------------------------------
# Files written and read by skretrieval.persistence
# --------------------------------------------------------------------------------------------


def _crash_during_save(tmp_path):
    path = tmp_path / "index.skops"
    save({"answer": 1}, path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as file:
            file.write(b"half of a new file")
            raise KeyboardInterrupt
    assert load(path) == {"answer": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.skops"]


def _not_a_saved_file(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_rgb()).save(path)
    with pytest.raises(FileFormatError, match="photo.jpg"):
        load(path)


def _crafted_pickle(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "index.skops"
    path.write_bytes(pickle.dumps(CreatesFile(marker)))
    with pytest.raises(FileFormatError, match="pickle"):
        load(path)
    assert not marker.exists()


def _untrusted_type(tmp_path):
    path = tmp_path / "index.skops"
    save({"kernel": _Untrusted()}, path)
    with pytest.raises(UntrustedTypesError, match="_Untrusted") as info:
        load(path)
    assert any("_Untrusted" in name for name in info.value.types)
    assert load(path, trusted=info.value.types)["kernel"].value == 3


class _Untrusted:
    """A class from outside skretrieval and scikit-learn: not trusted unless named."""

    def __init__(self):
        self.value = 3


def _old_pickle_index(tmp_path):
    import joblib
    import sklearn

    # The layout of the joblib files that skretrieval 0.2 wrote.
    path = tmp_path / "old-index.joblib"
    old_file = {"format": "skretrieval.persistence", "format_version": 1}
    old_file |= {"skretrieval_version": "0.2.0", "sklearn_version": sklearn.__version__}
    joblib.dump({**old_file, "object": {"paths": ["a.jpg"]}}, path)
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        load(path)
    with pytest.warns(VersionMismatchWarning, match="0.2.0"):
        content = load(path, allow_pickle=True)
    assert content == {"paths": ["a.jpg"]}


def _crafted_ground_truth(tmp_path):
    from skretrieval.datasets import load_revisited

    marker = tmp_path / "payload-ran"
    folder = tmp_path / "roxford5k"
    (folder / "jpg").mkdir(parents=True)
    (folder / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(CreatesFile(marker)))
    with pytest.raises(ValueError, match="not the published gnd"):
        load_revisited(tmp_path, "roxford5k")
    assert not marker.exists()


def _negative_ground_truth_index(tmp_path):
    from skretrieval.metrics import evaluate_revisited

    gnd = [{"easy": [0, -1], "hard": [], "junk": [], "bbx": [0, 0, 4, 4]}]
    with pytest.raises(ValueError, match=r"query 0.*'easy'.*-1"):
        evaluate_revisited(np.array([[0, 1, 2]]), gnd, ks=(1,), n_database=3)


def _metric_for_other_descriptors(tmp_path):
    covariances = np.stack([np.eye(3) * (1 + i) for i in range(4)])
    with pytest.raises(ValueError, match=r"metric 'cosine' expects vectors.*SPD matrices"):
        ImageRetriever(metric="cosine").fit(covariances)
    with pytest.raises(ValueError, match=r"metric 'affine_invariant'.*vectors"):
        ImageRetriever(metric="affine_invariant").fit(_RNG.random((4, 8)))


def _huge_float32_values(tmp_path):
    database = _RNG.random((6, 8)).astype(np.float32)
    queries = database[:2] + np.float32(0.01)
    expected = ImageRetriever(n_neighbors=3).fit(database).kneighbors(queries)
    for scale in (np.float32(1e19), np.float32(1e25)):
        found = ImageRetriever(n_neighbors=3).fit(database * scale).kneighbors(queries * scale)
        np.testing.assert_array_equal(found[1], expected[1])
        np.testing.assert_allclose(found[0], expected[0], atol=1e-5)


def _queries_without_positives(tmp_path):
    from sklearn.model_selection import KFold, cross_val_score

    # Unshuffled folds of grouped labels: class 1 lies wholly in the first test fold.
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0])
    X = np.eye(4)[y] + 0.01 * _RNG.random((16, 4))
    with pytest.warns(UndefinedRetrievalMetricWarning, match="^4 of 8 queries have no database"):
        cross_val_score(
            ImageRetriever(n_neighbors=3), X, y, cv=KFold(2), scoring=make_retrieval_scorer()
        )


def _rotated_phone_photo(tmp_path):
    upright = Image.fromarray(_rgb(40, 64))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _saved(tmp_path, "phone.jpg", stored, exif=exif, quality=100)
    with Image.open(path) as image:
        shown = np.asarray(image.transpose(Image.Transpose.ROTATE_270))
    _same_maps(_maps([path]), _maps([shown]))


def _thread_counts_after_an_error(tmp_path):
    import torch

    before = torch.get_num_threads()
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError):
        _maps([_rgb(), _rgb(seed=2), str(path)])
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

_FAST = ["--backbone", "resnet18", "--weights", "none", "--max-size", "48", "--quiet"]


def _one_error_line(capsys, argv, *fragments):
    from skretrieval.cli import main

    assert main(argv) != 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]


def _photo_folder(tmp_path, n=3):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(_rgb(seed=i)).save(folder / f"photo{i}.jpg")
    return folder


def _cli_broken_files_in_a_folder(tmp_path, capsys):
    from skretrieval.cli import main
    from skretrieval.indexing import load_index

    folder = _photo_folder(tmp_path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    output = tmp_path / "photos.index"
    assert main(["index", str(folder), "-o", str(output), *_FAST]) == 0
    assert "Skipped 1 files" in capsys.readouterr().out
    assert len(load_index(output).paths) == 3
    assert "broken.jpg" in (tmp_path / "photos.index.skipped.tsv").read_text()
    _one_error_line(
        capsys, ["index", str(folder), "-o", str(output), "--strict", "--rebuild", *_FAST],
        "broken.jpg",
    )


def _cli_missing_folder(tmp_path, capsys):
    _one_error_line(
        capsys, ["index", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x"), *_FAST],
        "nowhere", "does not exist",
    )


def _cli_unwritable_output(tmp_path, capsys):
    folder = _photo_folder(tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()  # a folder where the index file should go
    _one_error_line(capsys, ["index", str(folder), "-o", str(taken), *_FAST], "taken")


def _cli_corrupt_index(tmp_path, capsys):
    index = tmp_path / "photos.index"
    index.write_bytes(b"\x89skretrieval garbage")
    query = _saved(tmp_path, "query.jpg", Image.fromarray(_rgb()))
    _one_error_line(capsys, ["search", str(index), query], "photos.index")


def _cli_bad_k(tmp_path, capsys):
    for k in ("0", "-3"):
        _one_error_line(capsys, ["search", "any.index", "query.jpg", "-k", k], "positive integer")


def _cli_unreadable_query(tmp_path, capsys):
    from skretrieval.cli import main

    folder = _photo_folder(tmp_path)
    output = tmp_path / "photos.index"
    assert main(["index", str(folder), "-o", str(output), *_FAST]) == 0
    query = tmp_path / "query.jpg"
    query.write_text("not an image")
    capsys.readouterr()
    _one_error_line(capsys, ["search", str(output), str(query)], "query.jpg")


def _killed_indexing_resumes(tmp_path):
    from skretrieval.extraction import CNNFeatureExtractor as Extractor
    from skretrieval.indexing import build_index, load_index

    folder = _photo_folder(tmp_path, n=6)
    extractor = Extractor(
        backbone="resnet18", weights=None, random_state=0, max_size=48, pooling=GeMPooling()
    )
    clean = build_index(folder, tmp_path / "clean.index", extractor, verbose=False)
    # A crash after the first checkpoint: the next run reads it instead of describing again.
    calls = []
    original = Extractor.transform

    def crash_after_two_chunks(self, X):
        calls.append(len(X))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, X)

    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patch:
        patch.setattr(Extractor, "transform", crash_after_two_chunks)
        with pytest.raises(KeyboardInterrupt):
            build_index(folder, tmp_path / "run.index", extractor, checkpoint_every=2,
                        verbose=False)
    resumed = build_index(folder, tmp_path / "run.index", extractor, checkpoint_every=2,
                          verbose=False)
    assert (resumed.n_resumed, resumed.n_described) == (2, 4)
    np.testing.assert_allclose(
        load_index(tmp_path / "run.index").descriptors,
        load_index(clean.output).descriptors,
        rtol=0,
        atol=1e-6,
    )


CASES = [
    Case(
        "Image files",
        "Truncated JPEG",
        "`ImageReadError` naming the file: truncated or corrupt image data",
        _truncated_jpeg,
    ),
    Case(
        "Image files",
        "Zero-byte file",
        "`ImageReadError` naming the file: not an image file",
        _zero_byte_file,
    ),
    Case(
        "Image files",
        "Text file named `.jpg`",
        "`ImageReadError` naming the file: not an image file",
        _text_as_jpeg,
    ),
    Case(
        "Image files",
        "Missing file",
        "`ImageNotFoundError` (a `FileNotFoundError` too) naming the file",
        _missing_file,
    ),
    Case(
        "Image files",
        "Grey image",
        "Described as the RGB image with three equal channels",
        _grey_image,
    ),
    Case(
        "Image files",
        "RGBA image",
        "Alpha dropped; described as its RGB channels",
        _rgba_image,
    ),
    Case(
        "Image files",
        "Palette image",
        "Converted to RGB by PIL",
        _palette_image,
    ),
    Case(
        "Image files",
        "16-bit image",
        "Full range scaled to 8 bits (65535 -> 255)",
        _sixteen_bit_image,
    ),
    Case(
        "Image files",
        "CMYK JPEG",
        "Converted to RGB by PIL",
        _cmyk_image,
    ),
    Case(
        "Image files",
        "Tiny image (2 x 3 pixels)",
        "Resized up to `max_size`, like any image",
        _tiny_image,
    ),
    Case(
        "Image files",
        "Extreme aspect ratio (4 x 600)",
        "`ImageReadError`: too thin for the network after resizing, with the sizes",
        _extreme_aspect,
    ),
    Case(
        "Image files",
        "Decompression bomb",
        "`ImageReadError`: PIL's pixel limit is honoured",
        _decompression_bomb,
    ),
    Case(
        "Image arrays",
        "NaN or infinity in a float image",
        "`ValueError` naming the image",
        _non_finite_array,
    ),
    Case(
        "Image arrays",
        "Empty image array",
        "`ValueError` naming the image and its shape",
        _empty_array,
    ),
    Case(
        "Image arrays",
        "Five channels",
        "`ValueError`: grey, grey + alpha, RGB or RGBA expected",
        _wrong_channels,
    ),
    Case(
        "Arrays",
        "NaN or infinity in feature maps",
        "`ValueError` naming the image",
        _non_finite_feature_maps,
    ),
    Case(
        "Arrays",
        "Feature maps with different channel counts",
        "`ValueError` naming both images and their channels",
        _mismatched_feature_maps,
    ),
    Case(
        "Arrays",
        "No images at all",
        "`ValueError`: at least one image is required",
        _no_images,
    ),
    Case(
        "Arrays",
        "Queries of another dimension than the database",
        "`ValueError` with both dimensions",
        _query_dimension,
    ),
    Case(
        "Arrays",
        "NaN in the database",
        "`ValueError` at `fit`",
        _non_finite_database,
    ),
    Case(
        "Local features",
        "All local features equal",
        "`ValueError`: zero covariance cannot be made SPD",
        _constant_local_features,
    ),
    Case(
        "Local features",
        "A single local feature",
        "`ValueError`: covariance undefined; how to proceed",
        _single_local_feature,
    ),
    Case(
        "Local features",
        "Rank-deficient local features",
        "Shrinkage makes every covariance SPD",
        _rank_deficient_local_features,
    ),
    Case(
        "Local features",
        "Fewer local features than mixture components",
        "`ValueError` naming the image and both counts",
        _too_few_features_for_a_mixture,
    ),
    Case(
        "Search",
        "`n_neighbors` larger than the database",
        "`ValueError` with both sizes",
        _too_many_neighbours,
    ),
    Case(
        "Search",
        "`n_neighbors=0`",
        "`InvalidParameterError` (a `ValueError`) at `fit`",
        _zero_neighbours,
    ),
    Case(
        "Saved files",
        "Crash (or Ctrl-C) in the middle of a save",
        "The previous file is intact; no temporary file is left",
        _crash_during_save,
    ),
    Case(
        "Saved files",
        "A file `save` did not write",
        "`FileFormatError` naming the file",
        _not_a_saved_file,
    ),
    Case(
        "Saved files",
        "A crafted pickle given to `load`",
        "Refused before unpickling: no code runs; `FileFormatError`",
        _crafted_pickle,
    ),
    Case(
        "Saved files",
        "A saved object of a type outside skretrieval and scikit-learn",
        "`UntrustedTypesError` listing the types; `load(path, trusted=[...])` loads it",
        _untrusted_type,
    ),
    Case(
        "Saved files",
        "A pickle or joblib file (an index from skretrieval 0.2)",
        "`PickleNotAllowedError` saying why; read only with `allow_pickle=True`",
        _old_pickle_index,
    ),
    Case(
        "Benchmark files",
        "A crafted `gnd_*.pkl` (revisited Oxford/Paris)",
        "Restricted unpickler: no code runs; `ValueError` naming the refused global",
        _crafted_ground_truth,
    ),
    Case(
        "Benchmark files",
        "A negative or out-of-range index in a ground truth",
        "`ValueError` naming the query and the field; never read as another image",
        _negative_ground_truth_index,
    ),
    Case(
        "Search",
        "A metric for another descriptor type (`cosine` on SPD matrices)",
        "`ValueError` at `fit`: the metric, the type it got, the metrics valid for it",
        _metric_for_other_descriptors,
    ),
    Case(
        "Search",
        "Huge float32 values (1e19, 1e25)",
        "Same neighbours and cosine distances as the unscaled data",
        _huge_float32_values,
    ),
    Case(
        "Scoring",
        "Folds that leave queries without a relevant database item",
        "`UndefinedRetrievalMetricWarning` with the count; use stratified, shuffled folds",
        _queries_without_positives,
    ),
    Case(
        "Image files",
        "Phone photo with an EXIF orientation",
        "Turned upright before description (`exif_transpose=False` to keep it as stored)",
        _rotated_phone_photo,
    ),
    Case(
        "Process",
        "An error in the middle of a transform",
        "torch's thread count is restored, as on success",
        _thread_counts_after_an_error,
    ),
    Case(
        "Command line",
        "Broken files in the folder given to `skretrieval index`",
        "Skipped, counted, listed in `INDEX.skipped.tsv`; `--strict`: one `error:` line",
        _cli_broken_files_in_a_folder,
    ),
    Case(
        "Command line",
        "`skretrieval index` killed in the middle",
        "Started again, it resumes from its last checkpoint; the index equals a clean run's",
        _killed_indexing_resumes,
    ),
    Case(
        "Command line",
        "A folder that does not exist",
        "One `error:` line naming it, before any work",
        _cli_missing_folder,
    ),
    Case(
        "Command line",
        "An output that cannot be written (a folder, a read-only place)",
        "One `error:` line naming it, before any image is described",
        _cli_unwritable_output,
    ),
    Case(
        "Command line",
        "A corrupt index given to `skretrieval search`",
        "One `error:` line naming the file",
        _cli_corrupt_index,
    ),
    Case(
        "Command line",
        "`-k 0` or a negative `-k`",
        "One `error:` line: a positive integer is expected",
        _cli_bad_k,
    ),
    Case(
        "Command line",
        "A query image that cannot be read",
        "One `error:` line naming the image",
        _cli_unreadable_query,
    ),
]

# Grouped by area on the docs page, in this order.
AREAS = [
    "Image files",
    "Image arrays",
    "Arrays",
    "Local features",
    "Search",
    "Scoring",
    "Saved files",
    "Benchmark files",
    "Command line",
    "Process",
]
CASES.sort(key=lambda case: AREAS.index(case.area))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.case}" for c in CASES])
def test_case(case, tmp_path, monkeypatch, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        fixtures = {"monkeypatch": monkeypatch, "capsys": capsys}
        names = case.check.__code__.co_varnames[1 : case.check.__code__.co_argcount]
        case.check(tmp_path, *(fixtures[name] for name in names))


def _docs_rows():
    rows = []
    for line in DOCS_PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and not re.fullmatch(r"-+", cells[0]):
            rows.append(tuple(cells))
    return rows[1:]  # without the header


def test_the_docs_page_shows_the_same_table():
    expected = [(case.area, case.case, case.behaviour) for case in CASES]
    assert _docs_rows() == expected


def test_every_case_is_checked_once():
    names = [(case.area, case.case) for case in CASES]
    assert len(names) == len(set(names))
    assert len({case.check for case in CASES}) == len(CASES)
