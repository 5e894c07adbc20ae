"""Every user error of the command line is one ``error:`` line and a non-zero exit status."""

import os

import joblib
import numpy as np
import pytest
import sklearn
from payloads import CreatesFile
from PIL import Image

import skretrieval
from skretrieval.cli import main

# Random (seeded) weights on small images: the errors do not depend on the weights.
FAST = ["--weights", "none", "--max-size", "64", "--quiet"]


def _permissions_apply():
    """Whether this process is refused a read-only folder (not so for root)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            open(os.path.join(folder, "probe"), "w").close()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


as_root = pytest.mark.skipif(not _permissions_apply(), reason="permissions do not apply (root)")


def one_error(capsys, argv, *fragments, status=1):
    """Run the command; check that stderr is exactly one ``error:`` line holding ``fragments``."""
    assert main(argv) == status
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def write_photos(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i}.jpg")
    return folder


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A folder of three photos and its index."""
    root = tmp_path_factory.mktemp("indexed")
    folder = write_photos(root / "photos")
    index = root / "photos.index"
    assert main(["index", str(folder), "-o", str(index), *FAST]) == 0
    return folder, index


# --- skretrieval index ----------------------------------------------------------------------


def test_index_folder_errors(tmp_path, capsys):
    output = str(tmp_path / "x.index")
    missing = str(tmp_path / "nowhere")
    one_error(capsys, ["index", missing, "-o", output, *FAST], "nowhere", "does not exist")
    (tmp_path / "a.jpg").write_bytes(b"")
    line = one_error(capsys, ["index", str(tmp_path / "a.jpg"), "-o", output, *FAST], "a.jpg")
    assert "is a file, not a folder" in line
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    one_error(capsys, ["index", str(tmp_path / "empty"), "-o", output, *FAST], "no image files")
    assert not (tmp_path / "x.index").exists()


@as_root
def test_index_of_an_unreadable_folder(tmp_path, capsys):
    folder = write_photos(tmp_path / "locked")
    folder.chmod(0)
    try:
        argv = ["index", str(folder), "-o", str(tmp_path / "x.index"), *FAST]
        one_error(capsys, argv, "locked", "permission denied")
    finally:
        folder.chmod(0o755)


def test_index_into_an_unwritable_output(tmp_path, capsys, monkeypatch):
    from skretrieval.extraction import CNNFeatureExtractor

    def refuse(self, X):
        raise AssertionError("images were described before the output was checked")

    monkeypatch.setattr(CNNFeatureExtractor, "transform", refuse)
    folder = write_photos(tmp_path / "photos")
    (tmp_path / "out").mkdir()
    argv = ["index", str(folder), "-o", str(tmp_path / "out"), *FAST]
    one_error(capsys, argv, "'" + str(tmp_path / "out") + "' is a folder")
    (tmp_path / "file").write_text("")
    argv = ["index", str(folder), "-o", str(tmp_path / "file" / "x.index"), *FAST]
    one_error(capsys, argv, "is a file; choose another output")


@as_root
def test_index_into_a_read_only_folder(tmp_path, capsys):
    folder = write_photos(tmp_path / "photos")
    (tmp_path / "read_only").mkdir(mode=0o555)
    argv = ["index", str(folder), "-o", str(tmp_path / "read_only" / "x.index"), *FAST]
    one_error(capsys, argv, "read_only", "make the folder writable")


def test_strict_index_stops_at_a_corrupt_file(tmp_path, capsys):
    folder = write_photos(tmp_path / "photos")
    data = (folder / "photo0.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    argv = ["index", str(folder), "-o", str(tmp_path / "x.index"), "--strict", *FAST]
    line = one_error(capsys, argv, "broken.jpg", "could not be decoded", "without --strict")
    assert "cannot read " + str(folder / "broken.jpg") in line
    assert not (tmp_path / "x.index").exists()
    # Without --strict the file is skipped, counted, and listed.
    assert main(argv[:-6] + FAST) == 0
    out = capsys.readouterr().out
    assert "Indexed 3 images" in out and "Skipped 1 files" in out
    assert "x.index.skipped.tsv" in out


# --- skretrieval search ---------------------------------------------------------------------


def test_search_index_file_errors(indexed, tmp_path, capsys):
    folder, index = indexed
    query = str(folder / "photo0.jpg")
    one_error(capsys, ["search", str(tmp_path / "gone.index"), query], "gone.index", "does not")
    one_error(capsys, ["search", str(folder), query], "is a folder, not a file")
    (tmp_path / "garbage.index").write_bytes(os.urandom(2000))
    one_error(capsys, ["search", str(tmp_path / "garbage.index"), query], "garbage.index")
    data = index.read_bytes()
    (tmp_path / "truncated.index").write_bytes(data[: len(data) // 2])
    line = one_error(capsys, ["search", str(tmp_path / "truncated.index"), query], "truncated")
    assert "cannot read the index" in line and "index the images again" in line


def test_search_of_an_old_pickle_index_needs_allow_pickle(indexed, tmp_path, capsys):
    from skretrieval.indexing import load_index

    folder, index = indexed
    current = load_index(index)
    # As skretrieval 0.2 wrote its indexes: a joblib pickle of the header and the object.
    old = tmp_path / "old.index"
    content = {
        "format": "skretrieval.persistence",
        "format_version": 1,
        "skretrieval_version": skretrieval.__version__,
        "sklearn_version": sklearn.__version__,
        "object": {k: current[k] for k in ("extractor", "retriever", "paths")},
    }
    joblib.dump(content, old, compress=3)
    query = str(folder / "photo1.jpg")
    one_error(capsys, ["search", str(old), query], "old.index", "pickle", "--allow-pickle")
    assert main(["search", str(old), query, "-k", "2", "--allow-pickle"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_search_k_must_be_positive(indexed, capsys):
    folder, index = indexed
    for k in ("0", "-3", "two"):
        argv = ["search", str(index), str(folder / "photo0.jpg"), "-k", k]
        one_error(capsys, argv, "argument -k", "positive integer", repr(k), status=2)


def test_search_with_an_unreadable_query(indexed, tmp_path, capsys):
    folder, index = indexed
    one_error(capsys, ["search", str(index), str(tmp_path / "gone.jpg")], "gone.jpg", "not exist")
    data = (folder / "photo0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    one_error(capsys, ["search", str(index), str(tmp_path / "cut.jpg")], "cut.jpg", "decoded")
    (tmp_path / "text.jpg").write_text("a text file")
    line = one_error(capsys, ["search", str(index), str(tmp_path / "text.jpg")], "text.jpg")
    assert "cannot read the query image" in line and "give an image file" in line


def test_debug_shows_the_traceback(indexed, tmp_path):
    from skretrieval.persistence import FileFormatError

    (tmp_path / "garbage.index").write_bytes(b"garbage")
    argv = ["--debug", "search", str(tmp_path / "garbage.index"), str(indexed[0] / "photo0.jpg")]
    with pytest.raises(Exception, match="cannot read the index") as error:
        main(argv)
    assert isinstance(error.value.__cause__, FileFormatError)


# --- skretrieval evaluate -------------------------------------------------------------------


def test_evaluate_rewrites_a_corrupt_cache_entry(tmp_path, capsys):
    for label in ("a", "b"):
        write_photos(tmp_path / "data" / label, n=2)
    cache = tmp_path / "cache"
    argv = ["evaluate", "folder", "--root", str(tmp_path / "data"), "--cache", str(cache), *FAST]
    assert main(argv) == 0
    first = capsys.readouterr().out
    (entry,) = cache.iterdir()
    descriptors = np.load(entry)
    for damage in (entry.read_bytes()[:90], b"garbage " * 40):
        entry.write_bytes(damage)
        assert main(argv) == 0
        captured = capsys.readouterr()
        (line,) = captured.err.splitlines()
        assert line.startswith("warning: the cached descriptors") and entry.name in line
        assert "described again" in line and "images described" in captured.out
        assert captured.out.splitlines()[-2:] == first.splitlines()[-2:]  # the same results
        np.testing.assert_array_equal(np.load(entry), descriptors)  # rewritten whole


def test_evaluate_argument_errors(tmp_path, capsys):
    line = one_error(capsys, ["evaluate", "folder"], "--root", status=2)
    assert "required" in line
    one_error(capsys, ["evaluate", "folder", "--root", str(tmp_path / "no")], "'", "not exist")
    one_error(capsys, ["evaluate", "imagenet", "--root", str(tmp_path)], "invalid choice", status=2)


# --- crafted files: no code runs ------------------------------------------------------------


def test_a_crafted_index_runs_no_code(indexed, tmp_path, capsys):
    import pickle

    from skretrieval.persistence import save

    marker = tmp_path / "payload-ran"
    query = str(next(indexed[0].iterdir()))
    crafted = tmp_path / "crafted.index"
    crafted.write_bytes(pickle.dumps({"retriever": CreatesFile(marker)}))
    one_error(capsys, ["search", str(crafted), query], "crafted.index", "--allow-pickle")
    # The skops format: a type outside skretrieval and scikit-learn is refused, not built.
    save({"extractor": CreatesFile(marker), "retriever": None, "paths": []}, crafted)
    one_error(capsys, ["search", str(crafted), query], "crafted.index", "CreatesFile")
    assert not marker.exists()


def test_a_crafted_ground_truth_runs_no_code(tmp_path, capsys):
    import pickle

    marker = tmp_path / "payload-ran"
    folder = tmp_path / "rparis6k"
    (folder / "jpg").mkdir(parents=True)
    (folder / "gnd_rparis6k.pkl").write_bytes(pickle.dumps(CreatesFile(marker)))
    one_error(
        capsys, ["evaluate", "rparis6k", "--root", str(tmp_path), *FAST], "gnd_rparis6k.pkl"
    )
    assert not marker.exists()
