"""End-to-end tests of ``skretrieval evaluate`` on tiny benchmark trees (no download)."""

import csv
import pickle

import numpy as np
import pytest
from PIL import Image

from skretrieval.cli import main

# Pretrained MobileNetV2 (shipped offline) on tiny images: the path of a real run, only quicker.
FAST = ["--max-size", "64", "--batch-size", "4", "--quiet"]


def _photo(name, size=(64, 48)):
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB").resize(size)


@pytest.fixture
def roxford(tmp_path):
    """A revisited Oxford tree: two photos, each with a copy, as queries among distractors."""
    jpg = tmp_path / "roxford5k" / "jpg"
    jpg.mkdir(parents=True)
    photos = {
        "astronaut": _photo("astronaut"),
        "coffee": _photo("coffee"),
        "coffee_copy": _photo("coffee").transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "chelsea": _photo("chelsea"),
        "chelsea_copy": _photo("chelsea", size=(56, 48)),
        "rocket": _photo("rocket"),
        "coffee_query": _photo("coffee", size=(80, 60)),
        "chelsea_query": _photo("chelsea", size=(80, 60)),
    }
    for name, image in photos.items():
        image.save(jpg / f"{name}.jpg", quality=90)
    gnd = [
        {"easy": [1], "hard": [2], "junk": [], "bbx": [4.0, 3.0, 76.0, 57.0]},
        {"easy": [3], "hard": [4], "junk": [0], "bbx": [0.0, 0.0, 70.0, 60.0]},
    ]
    ground_truth = {"imlist": list(photos)[:6], "qimlist": list(photos)[6:], "gnd": gnd}
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as file:
        pickle.dump(ground_truth, file)
    return tmp_path


def _table(printed):
    """{protocol: [numbers]} of the printed results table."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("protocol"))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        protocol, *numbers = line.split()
        rows[protocol] = [float(number) for number in numbers]
    return lines[start].split(), rows


def test_evaluate_revisited_table_csv_and_cache(roxford, tmp_path, capsys, monkeypatch):
    output, cache = tmp_path / "out" / "results.csv", tmp_path / "cache"
    argv = ["evaluate", "roxford5k", "--root", str(roxford), "--output", str(output)]
    argv += ["--cache", str(cache), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 queries (cropped to their boxes), 6 database images" in printed
    assert "images described" in printed
    header, table = _table(printed)
    assert header == ["protocol", "queries", "mAP", "mP@1", "mP@5", "mP@10"]
    assert list(table) == ["easy", "medium", "hard"]
    assert [row[0] for row in table.values()] == [2, 2, 2]
    for row in table.values():
        assert all(0.0 <= value <= 1.0 for value in row[1:])
    # The easy positive of each query is the same photo: pretrained features find it first.
    assert table["easy"][1:3] == [1.0, 1.0]

    with open(output, newline="") as file:
        records = list(csv.DictReader(file))
    assert [r["protocol"] for r in records] == ["easy", "medium", "hard"]
    for record in records:
        assert record["dataset"] == "roxford5k" and record["n_database"] == "6"
        assert record["backbone"] == "mobilenet_v2" and record["pooling"] == "gem"
        assert record["whitening"] == "none" and record["metric"] == "cosine"
        assert record["max_size"] == "64" and record["ns_score"] == ""
        # The settings left at their defaults are recorded too.
        assert record["descriptor"] == "global" and record["scales"] == ""
        assert record["query_expansion"] == "none" and record["rerank"] == "none"
        assert record["dba"] == record["whitening_from"] == record["local_dim"] == ""
        numbers = table[record["protocol"]]
        assert float(record["map"]) == pytest.approx(numbers[1], abs=1e-4)
        assert float(record["mp@5"]) == pytest.approx(numbers[3], abs=1e-4)

    # Database and (cropped) query descriptors are cached, written atomically.
    cached = sorted(path.name for path in cache.iterdir())
    assert len(cached) == 2 and all(name.endswith(".npy") for name in cached)
    assert cached[0].startswith("roxford5k-database-mobilenet_v2-gem-64-")
    assert cached[1].startswith("roxford5k-queries-mobilenet_v2-gem-64-")

    # A second run reads the cache and never builds or runs the network.
    from skretrieval.extraction import CNNFeatureExtractor

    def no_extraction(self, *args, **kwargs):
        raise AssertionError("features were extracted although they are cached")

    monkeypatch.setattr(CNNFeatureExtractor, "fit", no_extraction)
    monkeypatch.setattr(CNNFeatureExtractor, "transform", no_extraction)
    # --root may also name the benchmark's own folder.
    argv[3] = str(roxford / "roxford5k")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "database: 6 descriptors read from the cache" in printed
    assert "queries: 2 descriptors read from the cache" in printed
    assert _table(printed)[1] == table
    # Another pooling is another cache entry.
    with pytest.raises(AssertionError, match="extracted"):
        main([*argv, "--pooling", "mac"])


def test_evaluate_ukbench_with_pca_whitening(tmp_path, capsys):
    names = ["astronaut", "coffee"]
    for number in range(8):
        image = _photo(names[number // 4], size=(64 - 4 * (number % 4), 48))
        image.save(tmp_path / f"ukbench{number:05d}.jpg")
    output = tmp_path / "ukbench.csv"
    argv = ["evaluate", "ukbench", "--root", str(tmp_path), "--allow-missing"]
    argv += ["--whitening", "pca", "--metric", "euclidean", "--output", str(output), *FAST]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "10192 database images" in captured.err  # the restriction is reported
    assert "8 queries, 8 database images" in captured.out
    assert "PCA whitening learned on the database" in captured.out
    header, table = _table(captured.out)
    assert header[-1] == "N-S" and list(table) == ["all"]
    n_queries, map_, *precisions, ns_score = table["all"]
    assert n_queries == 8 and 0 <= map_ <= 1 and 1 <= ns_score <= 4
    with open(output, newline="") as file:
        (record,) = list(csv.DictReader(file))
    assert float(record["ns_score"]) == pytest.approx(ns_score, abs=1e-4)
    assert record["whitening"] == "pca" and record["metric"] == "euclidean"
    assert record["mp@10"] == ""  # 10 > 8 database images: not defined


def test_evaluate_image_folder_leave_one_out(tmp_path, capsys):
    flip = Image.Transpose.FLIP_LEFT_RIGHT
    images = {
        "coffee/a.jpg": _photo("coffee"),
        "coffee/b.jpg": _photo("coffee").transpose(flip),
        "cat/a.jpg": _photo("chelsea"),
        "cat/b.jpg": _photo("chelsea", size=(56, 48)),
        "cat/c.jpg": _photo("chelsea").transpose(flip),
    }
    for name, image in images.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        image.save(tmp_path / name)
    assert main(["evaluate", "folder", "--root", str(tmp_path), "--pooling", "spoc", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "folder: 5 queries, 5 database images" in printed
    assert printed.count("images described") == 1  # queries reuse the database descriptors
    header, table = _table(printed)
    assert header == ["protocol", "queries", "mAP", "mP@1", "mP@5", "mP@10"]
    # Each image finds the other versions of its photo first, itself excluded.
    n_queries, map_, p1, p5, p10 = table["all"]
    assert (n_queries, map_, p1) == (5, 1.0, 1.0)
    assert np.isnan(p10)  # 10 > 5 database images


def test_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", "imagenet", "--root", str(tmp_path)]) == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err
    assert main(["evaluate", "roxford5k", "--root", str(tmp_path / "nowhere")]) == 1
    assert "--root '" in capsys.readouterr().err
    assert main(["evaluate", "roxford5k", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: roxford5k: expected the ground truth at")
    assert main(["evaluate", "holidays", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: holidays: expected the 1491 images")
