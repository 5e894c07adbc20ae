import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from skretrieval.cli import main


@pytest.fixture
def photo_folder(tmp_path):
    from skimage import data

    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee", "chelsea"):
        image = Image.fromarray(getattr(data, name)()).resize((96, 72))
        image.save(folder / f"{name}.jpg")
    noise = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "nested" / "noise.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_index_then_search_ranks_the_query_image_first(photo_folder, tmp_path, capsys):
    index = tmp_path / "out" / "photos.index"
    options = ["--max-size", "64", "--quiet"]  # pretrained MobileNetV2, tiny images
    assert main(["index", str(photo_folder), "-o", str(index), *options]) == 0
    assert index.exists()
    assert not list(index.parent.glob("*.tmp"))  # the atomic write left no temporary file
    capsys.readouterr()

    assert main(["search", str(index), str(photo_folder / "coffee.jpg"), "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    rank, distance, path = lines[0].split()
    assert rank == "1" and path.endswith("coffee.jpg")
    assert float(distance) == pytest.approx(0.0, abs=1e-4)


def test_index_is_updated_and_checkpointed(photo_folder, tmp_path, capsys):
    index = tmp_path / "photos.index"
    options = ["--backbone", "resnet18", "--weights", "none", "--max-size", "64", "--quiet"]
    options += ["--checkpoint-every", "2"]
    assert main(["index", str(photo_folder), "-o", str(index), *options]) == 0
    assert "Indexed 4 images" in capsys.readouterr().out
    assert not (tmp_path / "photos.index.partial").exists()  # removed once the index is saved
    Image.open(photo_folder / "coffee.jpg").save(photo_folder / "nested" / "copy.png")
    (photo_folder / "astronaut.jpg").unlink()
    assert main(["index", str(photo_folder), "-o", str(index), *options]) == 0
    out = capsys.readouterr().out
    assert "Indexed 4 images" in out and "(1 new, 3 unchanged, 1 removed)" in out
    # Other settings: refused until --rebuild.
    assert main(["index", str(photo_folder), "-o", str(index), *options, "--pooling", "mac"]) == 1
    assert "--rebuild" in capsys.readouterr().err
    argv = ["index", str(photo_folder), "-o", str(index), *options, "--pooling", "mac"]
    assert main([*argv, "--rebuild"]) == 0
    assert "(4 new)" in capsys.readouterr().out


def test_search_rejects_a_file_that_is_not_an_index(tmp_path, capsys):
    from skretrieval.persistence import save

    save([1, 2, 3], tmp_path / "list.index")
    (tmp_path / "query.jpg").write_bytes(b"")
    assert main(["search", str(tmp_path / "list.index"), str(tmp_path / "query.jpg")]) == 1
    err = capsys.readouterr().err
    assert "list.index' is not an index -- give the file written by 'skretrieval index" in err


def test_demo_prints_the_map_table_and_writes_the_grid(tmp_path, capsys):
    output = tmp_path / "demo"
    # Pretrained weights, small images: the same path as `make demo`, only quicker.
    assert main(["demo", "--output", str(output), "--max-size", "96", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for row in ("SPoC", "MAC", "GeM", "R-MAC", "R-MAC + PCA whitening"):
        assert f"\n{row} " in printed
    assert "mAP" in printed and "Best pipeline" in printed
    grid = Image.open(output / "retrieval_grid.png")
    assert grid.size[0] > 300 and grid.size[1] > 300


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "skretrieval", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("demo", "index", "search", "evaluate"):
        assert command in result.stdout
