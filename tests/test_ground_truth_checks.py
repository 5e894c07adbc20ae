"""Ground truth read safely and checked: the revisited ``gnd_*.pkl`` goes through a restricted
unpickler (a tampered file runs no code), and a malformed index or box is an error naming the
query and the field, in the loaders and in the revisited metrics."""

import os
import pickle
import pickletools

import numpy as np
import pytest
from payloads import CreatesFile, RunsShell
from PIL import Image

from skretrieval.datasets import ground_truth_masks, load_oxford_paris, load_revisited
from skretrieval.metrics import evaluate_revisited

IMLIST = ["a", "b", "c", "d", "e"]
QIMLIST = ["q1", "q2"]


def _write_images(folder, names):
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (40, 30), (20, 40, 60)).save(folder / "jpg" / f"{name}.jpg")


def _realistic_gnd():
    """Two queries as the published files hold them: numpy int64 arrays, numpy scalars and
    lists; boxes as arrays and as lists."""
    return [
        {
            "easy": np.array([1, 3], dtype=np.int64),
            "hard": np.array([4], dtype=np.int64),
            "junk": np.array([0], dtype=np.int64),
            "bbx": np.array([5.2, 4.0, 25.0, 29.0]),
        },
        {
            "easy": [np.int64(2)],
            "hard": [],
            "junk": np.array([3], dtype=np.int32),
            "bbx": [np.float64(0.0), 0.0, 10.0, 10],
        },
    ]


def _write_gnd(root, content, name="roxford5k", protocol=pickle.DEFAULT_PROTOCOL):
    folder = root / name
    _write_images(folder, IMLIST + QIMLIST)
    data = content if isinstance(content, bytes) else pickle.dumps(content, protocol=protocol)
    (folder / f"gnd_{name}.pkl").write_bytes(data)
    return folder / f"gnd_{name}.pkl"


def _as_written_by_numpy1(data):
    """The pickle ``data`` with its numpy globals in ``numpy.core``, as numpy 1.x writes them.

    Rewritten opcode by opcode (frames dropped, as their lengths change), so that the
    result is a valid pickle of any protocol.
    """
    ops = list(pickletools.genops(data))
    ends = [position for _, _, position in ops[1:]] + [len(data)]
    out = bytearray()
    for (opcode, argument, start), end in zip(ops, ends, strict=True):
        raw = data[start:end]
        if opcode.name == "FRAME":
            continue
        if opcode.name == "SHORT_BINUNICODE" and argument.startswith("numpy._core"):
            text = argument.replace("numpy._core", "numpy.core", 1).encode()
            raw = b"\x8c" + bytes([len(text)]) + text
        elif opcode.name == "GLOBAL":
            raw = raw.replace(b"numpy._core", b"numpy.core")
        out += raw
    return bytes(out)


def _globals_of(data):
    """Module names that a pickle refers to (GLOBAL and the strings STACK_GLOBAL takes)."""
    names = set()
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            names.add(argument.split()[0])
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            names.add(argument)
    return names


# ---------------------------------------------------------------------------------------------
# Restricted unpickler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2", "numpy1"])
def test_realistic_ground_truth_reads_back(tmp_path, protocol, numpy1):
    content = {"imlist": IMLIST, "qimlist": QIMLIST, "gnd": _realistic_gnd()}
    data = pickle.dumps(content, protocol=protocol)
    if numpy1:
        data = _as_written_by_numpy1(data)
        assert "numpy.core.multiarray" in " ".join(_globals_of(data))
        assert "numpy._core" not in " ".join(_globals_of(data))
    _write_gnd(tmp_path, data)
    loaded = load_revisited(tmp_path, "roxford5k")
    assert [entry["easy"].tolist() for entry in loaded.gnd] == [[1, 3], [2]]
    assert [entry["hard"].tolist() for entry in loaded.gnd] == [[4], []]
    assert [entry["junk"].tolist() for entry in loaded.gnd] == [[0], [3]]
    assert all(entry[key].dtype == np.int64 for entry in loaded.gnd for key in ("easy", "junk"))
    assert loaded.query_boxes.tolist() == [[5.2, 4.0, 25.0, 29.0], [0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("payload", [CreatesFile, RunsShell])
@pytest.mark.parametrize("where", ["top", "inside an entry"])
def test_a_planted_payload_never_runs(tmp_path, protocol, payload, where):
    marker = tmp_path / "marker"
    gnd = _realistic_gnd()
    content = {"imlist": IMLIST, "qimlist": QIMLIST, "gnd": gnd}
    if where == "top":
        content["extra"] = payload(marker)
    else:
        gnd[1]["junk"] = [payload(marker)]
    path = _write_gnd(tmp_path, content, protocol=protocol)
    function = open if payload is CreatesFile else os.system
    refused = f"{function.__module__}.{function.__name__}"
    with pytest.raises(ValueError, match="not the published gnd") as info:
        load_revisited(tmp_path, "roxford5k")
    message = str(info.value)
    assert str(path) in message and refused in message
    assert not marker.exists()


def test_a_codec_other_than_latin1_is_refused(tmp_path):
    # Protocol 2 stores bytes as _codecs.encode(text, "latin1"): only that codec is allowed.
    data = pickle.dumps({"imlist": b"ab"}, protocol=2).replace(b"latin1", b"rot13_")
    assert b"rot13_" in data
    _write_gnd(tmp_path, data)
    with pytest.raises(ValueError, match="not a readable pickle file"):
        load_revisited(tmp_path, "roxford5k")


def test_a_damaged_pickle_is_a_clear_error(tmp_path):
    path = _write_gnd(tmp_path, b"\x80\x05\x95garbage")
    with pytest.raises(ValueError, match="not a readable pickle file") as info:
        load_revisited(tmp_path, "roxford5k")
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Malformed revisited ground truth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("easy", [-1], "index -1, outside the 5 database images"),
        ("hard", np.array([5]), "index 5, outside the 5 database images"),
        ("junk", [0, 99], "index 99, outside"),
        ("easy", [1.0], "must be a list of integer database indices"),
        ("hard", [1.5], "must be a list of integer database indices"),
        ("junk", ["1"], "must be a list of integer database indices"),
        ("easy", [True], "must be a list of integer database indices"),
        ("hard", [[1], [2, 3]], "must be a list of integer database indices"),
        ("bbx", [0, 0, 10], "'bbx' must be four finite numbers"),
        ("bbx", [0, 0, 10, np.nan], "'bbx' must be four finite numbers"),
        ("bbx", [0, 0, np.inf, 10], "'bbx' must be four finite numbers"),
        ("bbx", ["0", "0", "1", "1"], "'bbx' must be four finite numbers"),
        ("bbx", [0, 0, 10, 10, 20], "'bbx' must be four finite numbers"),
    ],
)
def test_malformed_revisited_entries_name_the_query_and_the_field(tmp_path, key, value, problem):
    gnd = _realistic_gnd()
    gnd[1][key] = value
    _write_gnd(tmp_path, {"imlist": IMLIST, "qimlist": QIMLIST, "gnd": gnd})
    with pytest.raises(ValueError) as info:
        load_revisited(tmp_path, "roxford5k")
    message = str(info.value)
    assert "query 1 ('q2')" in message
    assert problem in message
    if key != "bbx":
        assert f"'{key}'" in message


def test_a_negative_index_is_never_the_last_image(tmp_path):
    # Before the check, -1 silently meant image "e"; with allow_missing it must still fail.
    gnd = _realistic_gnd()
    gnd[0]["easy"] = np.array([-1], dtype=np.int64)
    _write_gnd(tmp_path, {"imlist": IMLIST, "qimlist": QIMLIST, "gnd": gnd})
    (tmp_path / "roxford5k" / "jpg" / "b.jpg").unlink()
    with pytest.raises(ValueError, match=r"query 0 \('q1'\).*'easy'.*index -1"):
        load_revisited(tmp_path, "roxford5k", allow_missing=True)


def test_an_entry_that_is_not_a_dict(tmp_path):
    gnd = _realistic_gnd()
    gnd[0] = [1, 2, 3]
    _write_gnd(tmp_path, {"imlist": IMLIST, "qimlist": QIMLIST, "gnd": gnd})
    with pytest.raises(ValueError, match=r"query 0 \('q1'\): gnd\[0\] is a list, not a dict"):
        load_revisited(tmp_path, "roxford5k")


# ---------------------------------------------------------------------------------------------
# Oxford5k / Paris6k boxes, ground_truth_masks, evaluate_revisited
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", ["0 0 nan 5", "0 0 inf 5", "0 zero 5 5"])
def test_oxford_query_box_must_be_four_finite_numbers(tmp_path, box):
    folder = tmp_path / "oxford5k"
    _write_images(folder, ["all_souls_000001", "all_souls_000002", "radcliffe_000001"])
    gt = folder / "gt"
    gt.mkdir()
    for query, image, query_box in [
        ("all_souls_1", "all_souls_000001", "0 0 5 5"),
        ("radcliffe_1", "radcliffe_000001", box),
    ]:
        (gt / f"{query}_query.txt").write_text(f"oxc1_{image} {query_box}\n")
        (gt / f"{query}_good.txt").write_text("all_souls_000002\n")
        (gt / f"{query}_ok.txt").write_text("")
        (gt / f"{query}_junk.txt").write_text("")
    with pytest.raises(ValueError) as info:
        load_oxford_paris(tmp_path, "oxford5k")
    message = str(info.value)
    assert "query 1 ('radcliffe_1')" in message
    assert "'bbx' must be four finite numbers" in message


@pytest.mark.parametrize(
    "value, problem",
    [([-1], "index -1, outside"), ([4], "index 4, outside"), ([0.5], "integer database indices")],
)
def test_ground_truth_masks_name_the_query_and_the_key(value, problem):
    gnd = [{"ok": [0], "junk": []}, {"ok": [1], "junk": value}]
    with pytest.raises(ValueError) as info:
        ground_truth_masks(gnd, 4)
    assert "gnd[1] (query 1)" in str(info.value) and "'junk'" in str(info.value)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "value, problem",
    [
        ([-1], "database index -1, out of range"),
        ([1.0], "integer database indices"),
        (["a"], "integer database indices"),
        ([[0], [1, 2]], "integer database indices"),
    ],
)
def test_evaluate_revisited_names_the_query_and_the_key(value, problem):
    ranks = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [1], "hard": value, "junk": []}]
    with pytest.raises(ValueError) as info:
        evaluate_revisited(ranks, gnd)
    message = str(info.value)
    assert "query 1: gnd[1]['hard']" in message and problem in message


def test_evaluate_revisited_checks_the_range_given_the_database_size():
    ranks = np.array([[0, 1, 2, 3]])
    gnd = [{"easy": [0], "hard": [7], "junk": []}]
    # Without n_database a larger index is a database image absent from truncated ranks.
    assert evaluate_revisited(ranks, gnd)["medium"]["ap"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"query 0: gnd\[0\]\['hard'\] holds database index 7"):
        evaluate_revisited(ranks, gnd, n_database=4)
    with pytest.raises(ValueError, match="ranks holds database index 3"):
        evaluate_revisited(ranks, [{"easy": [0], "hard": [], "junk": []}], n_database=3)
    full = evaluate_revisited(ranks, [{"easy": [0], "hard": [2], "junk": []}], n_database=4)
    assert full["medium"]["map"] == pytest.approx(
        evaluate_revisited(ranks, [{"easy": [0], "hard": [2], "junk": []}])["medium"]["map"]
    )
