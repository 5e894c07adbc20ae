"""build_index: bad files skipped and reported, resumable after a kill, incremental updates."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from payloads import CreatesFolder
from PIL import Image

from skretrieval.extraction import CNNFeatureExtractor, ImageReadError
from skretrieval.indexing import (
    CheckpointWarning,
    IndexFormatError,
    IndexUpdateError,
    build_index,
    load_index,
)
from skretrieval.persistence import save
from skretrieval.pooling import GeMPooling


def make_extractor(**params):
    """Random but seeded weights on 64-pixel images: fast, and the same on every run."""
    # resnet18: random MobileNetV2 weights saturate its ReLU6 and describe every image alike.
    defaults = dict(
        backbone="resnet18", weights=None, random_state=0, max_size=64, pooling=GeMPooling(),
        verbose=False,
    )
    return CNNFeatureExtractor(**{**defaults, **params})


def write_image(path, seed, size=(40, 32)):
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    """Eight small photos in two folders."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(8):
        write_image(root / ("sub" if i % 2 else ".") / f"img{i}.png", seed=i)
    return root


def add_bad_files(root):
    """A truncated JPEG, a zero-byte file and a text file named .jpg: their paths."""
    write_image(root / "whole.jpg", seed=99, size=(48, 48))
    data = (root / "whole.jpg").read_bytes()
    (root / "whole.jpg").unlink()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "sub" / "notes.jpg").write_text("not an image")
    return sorted(str(root / name) for name in ("truncated.jpg", "empty.jpg", "sub/notes.jpg"))


@pytest.fixture
def described(monkeypatch):
    """The paths given to CNNFeatureExtractor.transform, call after call."""
    calls = []
    transform = CNNFeatureExtractor.transform

    def recording(self, X):
        calls.append([str(x) for x in X])
        return transform(self, X)

    monkeypatch.setattr(CNNFeatureExtractor, "transform", recording)
    return calls


def good_paths(root):
    return sorted(str(path) for path in root.rglob("*.png"))


def reference(paths):
    """Descriptors of the images described in one call, without indexing."""
    return make_extractor().fit().transform(paths)


def assert_same_index(path, other):
    ours, theirs = load_index(path), load_index(other)
    assert ours.paths == theirs.paths
    np.testing.assert_allclose(ours.descriptors, theirs.descriptors, rtol=0, atol=1e-6)
    # The images have descriptors of their own: rows in another order would be seen.
    assert np.ptp(ours.descriptors, axis=0).max() > 1e-3


def test_bad_files_are_skipped_and_listed_with_their_reasons(folder, tmp_path):
    bad = add_bad_files(folder)
    output = tmp_path / "out" / "photos.index"
    report = build_index(folder, output, make_extractor(), on_error="skip", verbose=False)

    good = good_paths(folder)
    assert report.n_indexed == report.n_new == report.n_described == len(good) == 8
    assert [path for path, _ in report.skipped] == bad
    index = load_index(output)
    assert index.paths == good
    np.testing.assert_allclose(index.descriptors, reference(good), rtol=0, atol=1e-6)
    assert index.retriever.n_samples_fit_ == 8

    lines = report.skipped_file.read_text().splitlines()
    assert report.skipped_file == output.with_name("photos.index.skipped.tsv")
    assert lines[0] == "path\treason"
    rows = dict(line.split("\t") for line in lines[1:])
    assert sorted(rows) == bad
    assert "truncated" in rows[str(folder / "truncated.jpg")]
    assert "not an image" in rows[str(folder / "empty.jpg")]
    assert not output.with_name("photos.index.partial").exists()

    # Once the bad files are gone, the list goes too.
    for path in bad:
        os.remove(path)
    report = build_index(folder, output, make_extractor(), on_error="skip", verbose=False)
    assert report.skipped == [] and report.skipped_file is None
    assert not output.with_name("photos.index.skipped.tsv").exists()


def test_raise_mode_names_the_first_bad_file_and_keeps_the_work_done(folder, tmp_path, described):
    (folder / "zz_truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header and nothing else")
    output = tmp_path / "photos.index"
    with pytest.raises(ImageReadError, match="zz_truncated.jpg") as error:
        build_index(folder, output, make_extractor(), checkpoint_every=2, verbose=False)
    assert error.value.path == str(folder / "zz_truncated.jpg")
    assert error.value.index == 8  # its position among the sorted paths
    assert not output.exists()
    # The images described before the error are kept: a second run does not describe them.
    described.clear()
    report = build_index(folder, output, make_extractor(), on_error="skip", verbose=False)
    assert report.n_resumed == 8 and report.n_described == 0
    assert [call for call in described if call] == [[str(folder / "zz_truncated.jpg")]]
    assert [Path(path).name for path, _ in report.skipped] == ["zz_truncated.jpg"]


def test_update_describes_only_new_and_changed_files(folder, tmp_path, described):
    output = tmp_path / "photos.index"
    first = build_index(folder, output, make_extractor(), verbose=False)
    assert (first.n_new, first.n_reused, first.n_described) == (8, 0, 8)

    write_image(folder / "new1.png", seed=20)
    write_image(folder / "sub" / "new2.png", seed=21)
    os.remove(folder / "img0.png")
    changed = folder / "sub" / "img3.png"
    write_image(changed, seed=22)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later change
    described.clear()
    report = build_index(folder, output, make_extractor(), verbose=False)

    expected = sorted(str(p) for p in (folder / "new1.png", folder / "sub/new2.png", changed))
    assert sorted(path for call in described for path in call) == expected
    assert (report.n_new, report.n_changed, report.n_removed, report.n_reused) == (2, 1, 1, 6)
    assert report.n_indexed == 9 and report.n_described == 3
    clean = tmp_path / "clean.index"
    build_index(folder, clean, make_extractor(), verbose=False)
    assert_same_index(output, clean)

    # Nothing changed: nothing is described.
    described.clear()
    report = build_index(folder, output, make_extractor(), verbose=False)
    assert described == [] and report.n_reused == 9

    # Other settings: an error that says which, until rebuild=True.
    with pytest.raises(IndexUpdateError, match=r"max_size: 64 -> 96.*rebuild=True"):
        build_index(folder, output, make_extractor(max_size=96), verbose=False)
    with pytest.raises(IndexUpdateError, match=r"pooling: GeMPooling\(.*p=3"):
        build_index(folder, output, make_extractor(pooling=GeMPooling(p=2)), verbose=False)
    report = build_index(folder, output, make_extractor(max_size=96), rebuild=True, verbose=False)
    assert report.n_described == 9 and load_index(output).settings["max_size"] == "96"


CHILD = """
import sys, time
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.indexing import build_index
from skretrieval.pooling import GeMPooling

transform = CNNFeatureExtractor.transform

def slow(self, X):
    time.sleep(0.3)  # leaves the parent time to kill this run between two chunks
    return transform(self, X)

CNNFeatureExtractor.transform = slow
extractor = CNNFeatureExtractor(
    backbone="resnet18", weights=None, random_state=0, max_size=64, pooling=GeMPooling(),
    verbose=False,
)
build_index(sys.argv[1], sys.argv[2], extractor, checkpoint_every=3, verbose=False)
"""


def test_a_killed_run_resumes_from_its_last_checkpoint(folder, tmp_path, described):
    for i in range(8, 24):
        write_image(folder / f"more{i}.png", seed=i)
    output = tmp_path / "photos.index"
    partial = tmp_path / "photos.index.partial"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.Popen([sys.executable, str(script), str(folder), str(output)])
    try:
        deadline = time.monotonic() + 300
        while len(list(partial.glob("chunk-*.npz"))) < 2 and child.poll() is None:
            assert time.monotonic() < deadline, "the indexing run wrote no checkpoint"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL  # killed, not finished
    assert not output.exists()
    chunks = sorted(partial.glob("chunk-*.npz"))
    assert len(chunks) >= 2
    # What a kill in the middle of a write leaves: a hidden temporary file, never read.
    (partial / ".chunk-000099.npz.0123abcd.tmp").write_bytes(b"half a chunk")

    described.clear()
    report = build_index(folder, output, make_extractor(), checkpoint_every=3, verbose=False)
    n_described = sum(len(call) for call in described)
    assert report.n_resumed >= 6 and report.n_resumed + n_described == report.n_indexed == 24
    assert report.n_described == n_described
    assert not partial.exists()
    clean = tmp_path / "clean.index"
    build_index(folder, clean, make_extractor(), verbose=False)
    assert_same_index(output, clean)


def interrupted_run(folder, output, monkeypatch, n_calls, **params):
    """A run stopped by Ctrl-C at the ``n_calls``-th call of the extractor."""
    transform = CNNFeatureExtractor.transform
    calls = []

    def interrupt(self, X):
        calls.append(len(X))
        if len(calls) == n_calls:
            raise KeyboardInterrupt
        return transform(self, X)

    with monkeypatch.context() as patch:
        patch.setattr(CNNFeatureExtractor, "transform", interrupt)
        with pytest.raises(KeyboardInterrupt):
            build_index(folder, output, make_extractor(**params), checkpoint_every=2,
                        verbose=False)


def test_corrupt_and_stale_checkpoints_are_described_again(folder, tmp_path, monkeypatch):
    output = tmp_path / "photos.index"
    partial = tmp_path / "photos.index.partial"
    clean = tmp_path / "clean.index"
    build_index(folder, clean, make_extractor(), verbose=False)

    interrupted_run(folder, output, monkeypatch, n_calls=4)
    chunks = sorted(partial.glob("chunk-*.npz"))
    assert len(chunks) == 3  # 6 images described in pieces of 2, then interrupted
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # truncated
    marker = tmp_path / "created_by_the_chunk"
    chunks[2].write_bytes(pickle.dumps(CreatesFolder(marker)))  # would create it if unpickled
    with pytest.warns(CheckpointWarning) as record:
        report = build_index(folder, output, make_extractor(), verbose=False)
    messages = sorted(str(warning.message) for warning in record)
    assert len(messages) == 2
    assert "chunk-000001.npz' cannot be read" in messages[0]
    assert "chunk-000002.npz' cannot be read" in messages[1] and "pickled" in messages[1]
    assert report.n_resumed == 2 and report.n_described == 6
    assert not marker.exists()
    assert_same_index(output, clean)

    # A checkpoint made with other settings is not reused, and is said so.
    output.unlink()
    interrupted_run(folder, output, monkeypatch, n_calls=3, max_size=96)
    assert len(list(partial.glob("chunk-*.npz"))) == 2
    with pytest.warns(CheckpointWarning, match=r"other settings \(max_size: 96 -> 64\)"):
        report = build_index(folder, output, make_extractor(), verbose=False)
    assert report.n_resumed == 0 and report.n_described == 8
    assert_same_index(output, clean)


def test_an_unwritable_output_is_found_before_any_image_is_described(
    folder, tmp_path, described
):
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        build_index(folder, tmp_path / "a_folder", make_extractor(), verbose=False)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        build_index(folder, tmp_path / "a_file" / "photos.index", make_extractor())
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:  # root, for one, writes into read-only folders
        (locked / "probe").touch()
    except PermissionError:
        with pytest.raises(PermissionError, match="make the folder writable"):
            build_index(folder, locked / "photos.index", make_extractor())
    assert described == []


def test_argument_checks(folder, tmp_path):
    with pytest.raises(ValueError, match="random_state"):
        build_index(folder, tmp_path / "x", make_extractor(random_state=None))
    with pytest.raises(TypeError, match="with a pooling"):
        build_index(folder, tmp_path / "x", make_extractor(pooling=None))
    with pytest.raises(ValueError, match="on_error"):
        build_index(folder, tmp_path / "x", make_extractor(), on_error="ignore")
    with pytest.raises(ValueError, match="checkpoint_every"):
        build_index(folder, tmp_path / "x", make_extractor(), checkpoint_every=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files under"):
        build_index(tmp_path / "empty", tmp_path / "x", make_extractor())
    # A list of files, one missing: skipped, or raised.
    files = [*good_paths(folder)[:2], str(tmp_path / "gone.png")]
    report = build_index(files, tmp_path / "x", make_extractor(), on_error="skip", verbose=False)
    assert report.n_indexed == 2 and report.skipped == [(files[2], "file not found")]
    with pytest.raises(FileNotFoundError, match="gone.png"):
        build_index(files, tmp_path / "y", make_extractor(), verbose=False)


def test_load_index_and_the_settings(tmp_path):
    save([1, 2, 3], tmp_path / "list.index")
    with pytest.raises(IndexFormatError, match="holds a list, not an index"):
        load_index(tmp_path / "list.index")

    import hashlib

    import torch
    import torchvision

    weights = tmp_path / "weights.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    settings = make_extractor(weights=str(weights), device="cpu").descriptor_settings()
    assert settings["weights"] == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)  # other contents
    changed = make_extractor(weights=str(weights)).descriptor_settings()
    assert changed["weights"] != settings["weights"]
    assert settings["precision"] == "float32"
    assert "batch_size" not in settings and "verbose" not in settings
    seeded = make_extractor(random_state=1).descriptor_settings()["weights"]
    assert seeded.startswith("random, random_state=1, torch ")
