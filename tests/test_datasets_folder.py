"""Tests of load_image_folder and list_images on class-per-folder image trees."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skretrieval.datasets import list_images, load_image_folder


def _write_image(path, fmt=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (len(path.name) * 20 % 256, 40, 90)
    Image.new("RGB", (4, 3), color).save(path, format=fmt)


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "tree"
    _write_image(root / "dogs" / "b.png")
    _write_image(root / "dogs" / "a.JPG", fmt="JPEG")
    _write_image(root / "dogs" / "puppies" / "c.jpeg", fmt="JPEG")
    _write_image(root / "cats" / "z.png")
    _write_image(root / "cats" / ".hidden.png")
    _write_image(root / "cats" / ".thumbnails" / "t.png")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("a non-image file at the root is fine")
    _write_image(root / ".git" / "x.png")
    return root


def _relative(paths, root):
    return [Path(p).relative_to(root).as_posix() for p in paths]


def test_load_image_folder(image_tree):
    data = load_image_folder(image_tree)
    assert data.target_names.tolist() == ["cats", "dogs"]
    assert _relative(data.filenames, image_tree) == [
        "cats/z.png",
        "dogs/a.JPG",
        "dogs/b.png",
        "dogs/puppies/c.jpeg",
    ]
    assert data.target.tolist() == [0, 1, 1, 1]
    assert data.target.dtype == np.int64
    assert all(isinstance(f, str) for f in data.filenames)
    assert "4 images in 2 classes" in data.DESCR
    # The listed files are readable images.
    for filename in data.filenames:
        with Image.open(filename) as image:
            assert image.size == (4, 3)


def test_load_image_folder_extensions(image_tree):
    data = load_image_folder(image_tree, extensions="png")
    assert _relative(data.filenames, image_tree) == ["cats/z.png", "dogs/b.png"]
    data = load_image_folder(image_tree, extensions=[".JPEG", ".jpg"], allow_empty=True)
    assert data.target.tolist() == [1, 1]
    assert _relative(data.filenames, image_tree) == ["dogs/a.JPG", "dogs/puppies/c.jpeg"]
    with pytest.raises(FileNotFoundError, match=r"cats.*\['\.jpg'\]"):
        load_image_folder(image_tree, extensions=".jpg")
    with pytest.raises(ValueError, match="Invalid file extension"):
        load_image_folder(image_tree, extensions=[".png", ""])
    with pytest.raises(ValueError, match="extensions is empty"):
        load_image_folder(image_tree, extensions=[])
    with pytest.raises(TypeError, match="extensions"):
        load_image_folder(image_tree, extensions=3)


def test_load_image_folder_allow_empty(image_tree):
    (image_tree / "birds").mkdir()
    with pytest.raises(FileNotFoundError, match="birds.*allow_empty=True"):
        load_image_folder(image_tree)
    data = load_image_folder(image_tree, allow_empty=True)
    assert data.target_names.tolist() == ["birds", "cats", "dogs"]
    assert data.target.tolist() == [1, 2, 2, 2]


def test_load_image_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="missing.*does not exist"):
        load_image_folder(missing)
    a_file = tmp_path / "file.png"
    _write_image(a_file)
    with pytest.raises(NotADirectoryError, match="not a directory"):
        load_image_folder(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*no class sub-folders.*\.png"):
        load_image_folder(empty)
    # Class folders exist but none holds an image, even with allow_empty=True.
    (empty / "a").mkdir()
    (empty / "a" / "notes.txt").write_text("text")
    with pytest.raises(FileNotFoundError, match=r"no image file with extensions"):
        load_image_folder(empty, allow_empty=True)
    with pytest.raises(TypeError, match="root must be a path"):
        load_image_folder(3)


def test_load_image_folder_rejects_unlabelled_images(image_tree):
    _write_image(image_tree / "stray.png")
    with pytest.raises(ValueError, match="outside any class sub-folder.*stray.png"):
        load_image_folder(image_tree)


def test_list_images_recursive_and_sorted(image_tree):
    _write_image(image_tree / "a-b.png")
    _write_image(image_tree / "a" / "b.png")
    files = list_images(image_tree)
    assert _relative(files, image_tree) == [
        "a/b.png",
        "a-b.png",
        "cats/z.png",
        "dogs/a.JPG",
        "dogs/b.png",
        "dogs/puppies/c.jpeg",
    ]
    assert list_images(image_tree / "dogs" / "puppies") == [
        str(image_tree / "dogs" / "puppies" / "c.jpeg")
    ]
    assert list_images(str(image_tree), extensions=(".gif",)) == []


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    _write_image(tmp_path / "x.png")
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "x.png")
