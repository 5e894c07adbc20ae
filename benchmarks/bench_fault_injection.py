"""Fault injection: ``skretrieval index`` killed with SIGKILL at random moments, then restarted.

A collection of small images of several kinds (crops of real photos, gradients, checkerboards,
drawn shapes, smoothed noise; JPEG and PNG, 48-64 pixels a side, in sub-folders) is generated,
and about 1% of the files are replaced by corrupt ones: truncated JPEGs, zero-byte files, text
saved as .jpg, random bytes. Then:

1. a clean run: ``skretrieval index`` (the real command, in a subprocess) indexes the folder in
   one go, timed;
2. a faulty run into another output: the same command is started and killed with SIGKILL at a
   random moment (after a random share of the remaining images is checkpointed, plus a random
   delay, so that kills also land between and during chunk writes), ``--kills`` times, then
   started again until it finishes.

Checked: the faulty run's index equals the clean run's (same paths in the same order, largest
absolute difference of the descriptors printed, at most 1e-5), and the list of skipped files of
both runs is exactly the set of corrupt files. Printed: images, corrupt files, each kill (when,
images checkpointed by then), restarts, time lost to the kills, total time against the clean
run's.

The network has random weights (``--weights none``, seeded: the same on every run) and images
are resized to 64 pixels: what is measured is the indexing machinery, not the network, and the
default run takes a few minutes on a 2-core CPU.

Usage::

    python benchmarks/bench_fault_injection.py                        # 3000 images, 3 kills
    python benchmarks/bench_fault_injection.py --n-images 3000 --kills 5 --seed 1
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

from skretrieval.indexing import load_index

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "cat")
KINDS = ("photo", "gradient", "checkerboard", "shapes", "noise")
CORRUPTIONS = ("truncated JPEG", "zero bytes", "text as JPEG", "random bytes")


def _photo(rng, photos, width, height):
    photo = photos[rng.integers(len(photos))]
    scale = rng.uniform(0.3, 1.0)
    crop_w, crop_h = int(photo.width * scale), int(photo.height * scale)
    left = rng.integers(0, photo.width - crop_w + 1)
    top = rng.integers(0, photo.height - crop_h + 1)
    return photo.crop((left, top, left + crop_w, top + crop_h)).resize((width, height))


def _gradient(rng, width, height):
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1) / 2
    start, stop = rng.integers(0, 256, (2, 3))
    return Image.fromarray((start + t[..., None] * (stop - start)).astype(np.uint8))


def _checkerboard(rng, width, height):
    cell = rng.integers(3, 16)
    y, x = np.mgrid[0:height, 0:width]
    mask = ((x // cell + y // cell) % 2).astype(bool)
    colours = rng.integers(0, 256, (2, 3), dtype=np.uint8)
    return Image.fromarray(np.where(mask[..., None], colours[0], colours[1]))


def _shapes(rng, width, height):
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 6)):
        x0, x1 = sorted(rng.integers(0, width, 2))
        y0, y1 = sorted(rng.integers(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1 + 1, y1 + 1), fill=colour)
    return image


def _noise(rng, width, height):
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(rng.uniform(0, 2)))


def make_collection(folder, n_images, corrupt_fraction, rng):
    """Write the images; returns the sorted absolute paths of the good and the corrupt files."""
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    paths = []
    for i in range(n_images):
        kind = KINDS[i % len(KINDS)]
        width, height = (int(side) for side in rng.integers(48, 65, 2))
        if kind == "photo":
            image = _photo(rng, photos, width, height)
        else:
            image = globals()[f"_{kind}"](rng, width, height)
        suffix = ".png" if rng.random() < 0.2 else ".jpg"
        path = folder / f"set{i % 7}" / f"{kind}_{i:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".jpg":
            image.save(path, quality=int(rng.integers(70, 96)))
        else:
            image.save(path)
        paths.append(path)
    n_corrupt = max(len(CORRUPTIONS), round(corrupt_fraction * n_images))
    corrupt = {}
    for number, position in enumerate(rng.choice(n_images, n_corrupt, replace=False)):
        kind = CORRUPTIONS[number % len(CORRUPTIONS)]
        path = paths[position]
        if kind == "truncated JPEG":
            path = path.with_suffix(".jpg")
            if path != paths[position]:
                Image.open(paths[position]).convert("RGB").save(path)
                paths[position].unlink()
            content = path.read_bytes()
            path.write_bytes(content[: int(len(content) * rng.uniform(0.2, 0.7))])
        elif kind == "zero bytes":
            path.write_bytes(b"")
        elif kind == "text as JPEG":
            path.unlink()
            path = path.with_suffix(".jpg")
            path.write_text("Meeting notes, not a photo.\n" * int(rng.integers(1, 50)))
        else:
            path.write_bytes(rng.integers(0, 256, int(rng.integers(10, 5000)), np.uint8).tobytes())
        corrupt[str(path.resolve())] = kind
        paths[position] = path
    good = sorted(str(path.resolve()) for path in paths if str(path.resolve()) not in corrupt)
    return good, corrupt


def _chunks(partial):
    """Images held by the complete checkpoint chunks of ``partial``."""
    total = 0
    for chunk in partial.glob("chunk-*.npz"):
        try:
            with open(chunk, "rb") as file, np.load(file, allow_pickle=False) as arrays:
                total += len(arrays["paths"])
        except (OSError, ValueError, KeyError):  # removed by the run meanwhile
            pass
    return total


def _run(command, partial=None, kill_after_images=None, extra_delay=0.0):
    """Run the command; kill it once ``kill_after_images`` are checkpointed (plus a delay)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at = None
    if kill_after_images is not None:
        while process.poll() is None and _chunks(partial) < kill_after_images:
            time.sleep(0.01)
        deadline = time.perf_counter() + extra_delay
        while process.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter() - start
    out, err = process.communicate()
    elapsed = time.perf_counter() - start
    if killed_at is None and process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{out}\n{err}")
    return elapsed, killed_at, out


def _skipped(index):
    listed = Path(str(index) + ".skipped.tsv")
    lines = listed.read_text(encoding="utf-8").splitlines()[1:]
    return {line.split("\t", 1)[0] for line in lines}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=3000)
    parser.add_argument("--corrupt-fraction", type=float, default=0.01)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs before the run may end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=64)
    parser.add_argument("--keep", help="folder to keep the images and indexes in")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_fault_injection_"))
    try:
        _benchmark(args, rng, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _benchmark(args, rng, work):
    start = time.perf_counter()
    good, corrupt = make_collection(work / "images", args.n_images, args.corrupt_fraction, rng)
    print(
        f"{len(good) + len(corrupt)} images of {len(KINDS)} kinds ({', '.join(KINDS)}), 48-64 px, "
        f"{len(corrupt)} corrupt: "
        + ", ".join(f"{sum(k == kind for k in corrupt.values())} {kind}" for kind in CORRUPTIONS)
        + f" (generated in {time.perf_counter() - start:.1f} s)."
    )
    print(
        f"skretrieval index --backbone resnet18 --weights none --max-size {args.max_size} "
        f"--checkpoint-every {args.checkpoint_every}: random (seeded) weights, the indexing "
        "machinery is measured (resnet18: random MobileNetV2 weights saturate its ReLU6 and "
        "describe every image alike, which would hide a row put in the wrong place)."
    )

    def command(output):
        return [
            sys.executable, "-m", "skretrieval", "index", str(work / "images"), "-o",
            str(output), "--backbone", "resnet18", "--weights", "none",
            "--max-size", str(args.max_size),
            "--checkpoint-every", str(args.checkpoint_every), "--quiet",
        ]  # fmt: skip

    clean, faulty = work / "clean" / "images.index", work / "faulty" / "images.index"
    clean_time, _, _ = _run(command(clean))
    print(f"\nClean run: {clean_time:.1f} s.")

    partial = Path(str(faulty) + ".partial")
    kills, runs, total_time, out = [], 0, 0.0, ""
    n_total = len(good) + len(corrupt)
    while True:
        runs += 1
        target, done = None, _chunks(partial)
        # Kill while at least one chunk is left to describe (then the run may finish).
        if len(kills) < args.kills and n_total - done > args.checkpoint_every:
            target = done + int(rng.uniform(0.1, 0.5) * (n_total - done))
        delay = rng.uniform(0.0, 1.0)
        elapsed, killed_at, out = _run(command(faulty), partial, target, delay)
        total_time += elapsed
        if killed_at is None:
            break
        kills.append((killed_at, _chunks(partial)))
        print(
            f"  run {runs}: killed after {killed_at:.1f} s, {kills[-1][1]} images checkpointed "
            "by then"
        )
    resumed = [line for line in out.splitlines() if line.startswith("Resumed")]
    print(f"  run {runs}: finished in {elapsed:.1f} s. {' '.join(resumed)}")
    if len(kills) < args.kills:
        print(
            f"  (only {len(kills)} kills: the run finished before the next kill moment, or "
            "fewer than --checkpoint-every images were left)"
        )

    ours, reference = load_index(faulty), load_index(clean)
    assert ours.paths == reference.paths == good, "the indexes differ in their images"
    difference = float(np.max(np.abs(ours.descriptors - reference.descriptors)))
    assert difference <= 1e-5, f"descriptors differ by {difference}"
    spread = float(np.ptp(reference.descriptors, axis=0).max())
    assert spread > 1e-3, "every image has the same descriptor: the comparison would prove nothing"
    assert _skipped(faulty) == _skipped(clean) == set(corrupt), "skipped files differ"
    assert not partial.exists()
    print(
        f"\nSame index as the clean run: {len(good)} images in the same order, descriptors "
        f"within {difference:.1e} (max abs diff; they spread over {spread:.2f}); skipped "
        f"files: exactly the {len(corrupt)} corrupt ones, in both runs."
    )
    print(
        f"{len(kills)} kills, {runs - 1} restarts. Total time {total_time:.1f} s against "
        f"{clean_time:.1f} s for the clean run: {total_time - clean_time:.1f} s lost to the kills "
        f"({(total_time - clean_time) / max(1, len(kills)):.1f} s per kill: restarting the "
        "command, and the images described since the last checkpoint)."
    )


if __name__ == "__main__":
    main()
