"""Benchmark CNNFeatureExtractor against a plain one-image-at-a-time torchvision loop.

Both extract the same feature maps from the same JPEG files (real photos from scikit-image and
crops of them, at common aspect ratios): the baseline opens each file with PIL, resizes it,
applies ``ToTensor`` and ``Normalize`` and calls ``model.features(x[None])`` under
``torch.no_grad()``. Throughput is measured in one process, after a warm-up, alternating which
method runs first in each repeat; the median over repeats is reported, with the largest absolute
difference between the two methods' feature maps.

Peak memory is measured in fresh subprocesses, one per method: after setup (imports, network,
file list) the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), and the reported
figure is the peak RSS during one cold extraction minus the RSS just before it. That counts
everything the process had to touch (torch's CPU allocator, oneDNN caches, PIL buffers, thread
stacks, the returned maps), which tracemalloc cannot see. The returned maps' own size is printed
for reference.

``--ablation`` also times variants of the extractor with one optimisation removed at a time.

Usage::

    python benchmarks/bench_extraction.py                     # 48 images, max_size 512
    python benchmarks/bench_extraction.py --n-images 96 --max-size 1024 --repeats 5
    python benchmarks/bench_extraction.py --ablation --no-memory
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision
from _memory import memory_kib, reset_peak
from PIL import Image
from skimage import data
from torchvision import transforms

import skretrieval._utils.devices as devices_module
import skretrieval.extraction._extractor as extractor_module
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.extraction._weights import pretrained_state_dict, torchvision_weights

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "colorwheel",
    "camera",
    "coins",
    "moon",
    "page",
    "cat",
]
# Height:width of the crops: the aspect ratios photos usually come in.
ASPECT_RATIOS = [(3, 4), (4, 3), (1, 1), (9, 16), (2, 3)]


def write_images(directory, n_images, seed=0):
    """Whole photos, then random crops of them at common aspect ratios, as JPEG files."""
    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in PHOTOS]
    paths = []
    for i in range(n_images):
        pixels = photos[i % len(photos)]
        if i >= len(photos):
            height, width = pixels.shape[:2]
            ratio_h, ratio_w = ASPECT_RATIOS[(i // len(photos)) % len(ASPECT_RATIOS)]
            crop_h = int(min(height, width * ratio_h / ratio_w) * rng.uniform(0.6, 1.0))
            crop_w = int(crop_h * ratio_w / ratio_h)
            top = rng.integers(0, height - crop_h + 1)
            left = rng.integers(0, width - crop_w + 1)
            pixels = pixels[top : top + crop_h, left : left + crop_w]
        path = os.path.join(directory, f"{i:04d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def reference_trunk(backbone, state_dict):
    model = torchvision.models.get_model(backbone, weights=None)
    model.load_state_dict(state_dict)
    model.eval()
    if hasattr(model, "features"):
        return model.features
    return torch.nn.Sequential(*list(model.children())[:-2])  # ResNet-like


def load_weights(backbone, weights):
    if weights == "none":
        torch.manual_seed(0)
        return torchvision.models.get_model(backbone, weights=None).state_dict()
    enum = torchvision_weights(backbone, "imagenet")
    state_dict, _ = pretrained_state_dict(backbone, enum, progress=False)
    return state_dict


class Baseline:
    """The plain loop: PIL -> resize -> ToTensor/Normalize -> model(x[None]), one by one."""

    def __init__(self, trunk, max_size):
        self.trunk = trunk
        self.max_size = max_size
        self.to_tensor = transforms.Compose(
            [
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def __call__(self, paths):
        maps = []
        with torch.no_grad():
            for path in paths:
                image = Image.open(path).convert("RGB")
                width, height = image.size
                scale = self.max_size / max(width, height)
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = image.resize(size, Image.Resampling.BILINEAR)
                maps.append(self.trunk(self.to_tensor(image)[None])[0].numpy())
        return maps


def make_methods(args, state_dict):
    weights_file = os.path.join(args.workdir, "weights.pth")
    torch.save(state_dict, weights_file)
    common = {
        "backbone": args.backbone,
        "weights": weights_file,
        "max_size": args.max_size,
        "batch_size": args.batch_size,
        "n_workers": args.workers,
        "verbose": False,
    }
    return {
        "torchvision loop": Baseline(reference_trunk(args.backbone, state_dict), args.max_size),
        "CNNFeatureExtractor": CNNFeatureExtractor(**common).fit().transform,
        "CNNFeatureExtractor + GeM (fused)": _fused(common),
    }


def _fused(common):
    from skretrieval.pooling import GeMPooling

    return CNNFeatureExtractor(**common, pooling=GeMPooling()).fit().transform


def max_difference(maps, reference):
    absolute = max(float(np.abs(a - b).max()) for a, b in zip(maps, reference, strict=True))
    scale = max(float(np.abs(b).max()) for b in reference)
    return absolute, absolute / scale


def time_methods(methods, paths, repeats, chunk=12):
    """Median seconds per method over ``repeats`` passes through ``paths``.

    Each pass goes through the images in chunks, every method running on each chunk in turn
    (the order rotating from chunk to chunk), so that all methods see the same machine load
    even when other processes come and go.
    """
    names = list(methods)
    for name in names:  # warm-up: allocator, oneDNN kernels, file cache
        methods[name](paths[: min(len(paths), 8)])
    times = {name: [] for name in names}
    outputs = {name: [] for name in names}
    step = 0
    for repeat in range(repeats):
        totals = dict.fromkeys(names, 0.0)
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            order = names[step % len(names) :] + names[: step % len(names)]
            step += 1
            for name in order:
                begin = time.perf_counter()
                result = methods[name](part)
                totals[name] += time.perf_counter() - begin
                if repeat == 0:
                    outputs[name].append(result)
        for name in names:
            times[name].append(totals[name])
    outputs = {
        name: [m for part in parts for m in part]
        if isinstance(parts[0], list)
        else np.concatenate(parts)
        for name, parts in outputs.items()
    }
    return {name: statistics.median(values) for name, values in times.items()}, outputs


# --- peak memory, one subprocess per method ---------------------------------------------------


def memory_child(args):
    """Run one method once in this (fresh) process; print its extraction peak RSS in MiB."""
    paths = sorted(os.path.join(args.workdir, f) for f in os.listdir(args.workdir))
    paths = [p for p in paths if p.endswith(".jpg")]
    state_dict = torch.load(os.path.join(args.workdir, "weights.pth"), weights_only=True)
    method = make_methods(args, state_dict)[args.memory_child]
    # Cold: no warm-up, so everything the extraction needs counts, caches included.
    reset_peak()
    before = memory_kib("VmRSS")
    maps = method(paths)
    peak = memory_kib("VmHWM")
    del maps
    print(f"{(peak - before) / 1024:.1f}")


def measure_memory(args, names):
    results = {}
    for name in names:
        command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
        command += ["--workdir", args.workdir, "--memory-child", name]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[name] = float(output.strip().splitlines()[-1])
    return results


# --- ablation: one optimisation removed at a time ---------------------------------------------


@contextlib.contextmanager
def patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def run_ablation(args, state_dict, paths):
    weights_file = os.path.join(args.workdir, "weights.pth")
    common = {
        "backbone": args.backbone,
        "weights": weights_file,
        "max_size": args.max_size,
        "batch_size": args.batch_size,
        "n_workers": args.workers,
        "verbose": False,
    }

    def variant(patches=(), **params):
        with contextlib.ExitStack() as stack:
            for module, name, value in patches:
                stack.enter_context(patched(module, name, value))
            transform = CNNFeatureExtractor(**{**common, **params}).fit().transform

        def run(paths):
            with contextlib.ExitStack() as stack:
                for module, name, value in patches:
                    stack.enter_context(patched(module, name, value))
                return transform(paths)

        return run

    # Where the extractor looks each one up: the trunk's layout is chosen by the extractor, the
    # inputs' by the pixel normalisation.
    no_folding = [(extractor_module, "fold_batchnorm", lambda graph_module: graph_module)]
    nchw = [
        (module, "uses_channels_last", lambda device: False)
        for module in (extractor_module, devices_module)
    ]
    variants = {
        "default": variant(),
        "no BN folding": variant(no_folding),
        "contiguous (NCHW) layout": variant(nchw),
        "no BN folding, NCHW": variant(no_folding + nchw),
        f"batches of {args.batch_size}, no pixel cap": variant(
            [(extractor_module, "_CPU_BATCH_PIXELS", 2**62)]
        ),
        "batch_size=1": variant(batch_size=1),
        "n_workers=0 (calling thread)": variant(n_workers=0),
        "n_workers=1": variant(n_workers=1),
        "n_workers=4": variant(n_workers=4),
    }
    baseline = Baseline(reference_trunk(args.backbone, state_dict), args.max_size)
    variants["torchvision loop"] = baseline
    times, outputs = time_methods(variants, paths, args.repeats)
    reference = outputs["torchvision loop"]
    print(f"\nAblation ({len(paths)} images, max_size={args.max_size}, median of {args.repeats}):")
    print(f"{'variant':34s} {'images/s':>9s} {'vs loop':>8s} {'max |diff|':>11s}")
    for name, seconds in times.items():
        difference, _ = max_difference(outputs[name], reference)
        speedup = times["torchvision loop"] / seconds
        rate = len(paths) / seconds
        print(f"{name:34s} {rate:9.1f} {speedup:7.2f}x {difference:11.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=48)
    parser.add_argument("--max-size", type=int, default=512)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", choices=["imagenet", "none"], default="imagenet")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="n_workers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ablation", action="store_true", help="time optimisations one by one")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        memory_child(args)
        return

    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        paths = write_images(workdir, args.n_images)
        state_dict = load_weights(args.backbone, args.weights)
        methods = make_methods(args, state_dict)
        shapes = {Image.open(p).size for p in paths}
        print(
            f"{args.backbone} ({args.weights} weights), {len(paths)} JPEG photos "
            f"({len(shapes)} distinct sizes), max_size={args.max_size}, "
            f"batch_size={args.batch_size}, n_workers={args.workers}, "
            f"torch threads={torch.get_num_threads()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}"
        )
        times, outputs = time_methods(methods, paths, args.repeats)
        memory = {} if args.no_memory else measure_memory(args, list(methods))
        reference = outputs["torchvision loop"]
        print(
            f"\n{'method':36s} {'images/s':>9s} {'speed-up':>9s} {'peak MiB':>9s} "
            f"{'max |diff| (rel.)':>20s}"
        )
        for name, seconds in times.items():
            rate = len(paths) / seconds
            speedup = times["torchvision loop"] / seconds
            peak = f"{memory[name]:9.1f}" if name in memory else f"{'-':>9s}"
            if isinstance(outputs[name], list):
                absolute, relative = max_difference(outputs[name], reference)
                difference = f"{absolute:.2e} ({relative:.1e})"
            else:
                difference = "pooled"
            print(f"{name:36s} {rate:9.1f} {speedup:8.2f}x {peak} {difference:>20s}")
        output_mib = sum(fmap.nbytes for fmap in reference) / 2**20
        print(f"(the {len(paths)} feature maps themselves take {output_mib:.1f} MiB)")
        if args.ablation:
            run_ablation(args, state_dict, paths)


if __name__ == "__main__":
    main()
