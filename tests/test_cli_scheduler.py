"""``skretrieval index`` and ``evaluate`` with ``--scheduler``: the same results on a cluster."""

import numpy as np
import pytest
from PIL import Image

from skretrieval.cli import main
from skretrieval.extraction import CNNFeatureExtractor, ImageReadError
from skretrieval.indexing import build_index, load_index
from skretrieval.pooling import GeMPooling

distributed = pytest.importorskip("distributed")

# resnet18: random MobileNetV2 weights saturate its ReLU6 and describe every image alike.
FAST = ["--backbone", "resnet18", "--weights", "none", "--max-size", "48", "--quiet"]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a two-worker cluster in this process."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def photos(tmp_path):
    """Eleven photos, a truncated JPEG and a text file named like a photo."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(11):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i:02d}.jpg")
    whole = (folder / "photo00.jpg").read_bytes()
    # Named to sort after the photos.
    (folder / "x_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "x_notes.jpg").write_text("not a photo")
    return folder


def test_index_on_a_cluster_equals_the_index_made_here(scheduler, photos, tmp_path, capsys):
    here, there = tmp_path / "here.index", tmp_path / "there.index"
    assert main(["index", str(photos), "-o", str(here), *FAST]) == 0
    argv = ["index", str(photos), "-o", str(there), "--scheduler", scheduler]
    assert main([*argv, "--checkpoint-every", "4", *FAST]) == 0
    assert "Skipped 2 files" in capsys.readouterr().out
    expected, found = load_index(here), load_index(there)
    assert found.paths == expected.paths and len(found.paths) == 11
    np.testing.assert_allclose(found.descriptors, expected.descriptors, rtol=0, atol=1e-6)
    assert np.ptp(expected.descriptors, axis=0).max() > 1e-3  # the images differ
    skipped = (tmp_path / "there.index.skipped.tsv").read_text()
    assert "x_truncated.jpg" in skipped and "x_notes.jpg" in skipped


def test_build_index_on_a_cluster_updates_and_raises_as_here(scheduler, photos, tmp_path):
    extractor = CNNFeatureExtractor(
        backbone="resnet18", weights=None, random_state=0, max_size=48, pooling=GeMPooling(),
        verbose=False,
    )
    output = tmp_path / "photos.index"
    with distributed.Client(scheduler) as client:
        with pytest.raises(ImageReadError, match=r"cannot index .*x_notes\.jpg"):
            build_index(
                photos, output, extractor, checkpoint_every=4, client=client, verbose=False
            )
        first = build_index(
            photos, output, extractor, on_error="skip", client=client, verbose=False
        )
        # The two chunks described before the error were checkpointed and are not redone.
        assert (first.n_indexed, first.n_resumed, first.n_described) == (11, 8, 3)
        Image.new("RGB", (48, 40), (9, 99, 199)).save(photos / "new.png")
        second = build_index(
            photos, output, extractor, on_error="skip", client=client, verbose=False
        )
    assert (second.n_new, second.n_reused, second.n_described) == (1, 11, 1)
    # The settings say the workers made the descriptors: updating here is refused.
    from skretrieval.indexing import IndexUpdateError

    with pytest.raises(IndexUpdateError, match="cluster"):
        build_index(photos, output, extractor, on_error="skip", verbose=False)


def test_evaluate_on_a_cluster_prints_the_same_table(scheduler, tmp_path, capsys):
    from skimage import data

    flip = Image.Transpose.FLIP_LEFT_RIGHT
    for name, image in {
        "coffee/a.jpg": Image.fromarray(data.coffee()).resize((64, 48)),
        "coffee/b.jpg": Image.fromarray(data.coffee()).resize((64, 48)).transpose(flip),
        "cat/a.jpg": Image.fromarray(data.chelsea()).resize((64, 48)),
        "cat/b.jpg": Image.fromarray(data.chelsea()).resize((56, 48)),
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        image.save(tmp_path / name)
    argv = ["evaluate", "folder", "--root", str(tmp_path), *FAST]
    assert main(argv) == 0
    here = capsys.readouterr().out
    assert main([*argv, "--scheduler", scheduler]) == 0
    there = capsys.readouterr().out
    table = [line for line in here.splitlines() if line.startswith(("protocol", "all"))]
    assert len(table) == 2
    assert table == [line for line in there.splitlines() if line.startswith(("protocol", "all"))]


def test_an_unreachable_scheduler_is_one_error_line(photos, tmp_path, capsys, monkeypatch):
    import skretrieval.cli._options as options

    monkeypatch.setattr(options, "SCHEDULER_TIMEOUT", 1)
    argv = ["index", str(photos), "-o", str(tmp_path / "x.index"), *FAST]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:9"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler")
    assert not (tmp_path / "x.index").exists()


def test_without_distributed_the_error_names_the_extra(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    argv = ["index", str(photos), "-o", str(tmp_path / "x.index"), *FAST]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:8786"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --scheduler needs dask.distributed") and "[distributed]" in err
