"""
Scaling out: the same job on a Dask cluster
===========================================

:func:`skretrieval.distributed.transform` describes image files on the workers of a
`Dask <https://docs.dask.org>`_ cluster, chunk by chunk, into a resumable zarr store, and
:class:`~skretrieval.neighbors.ImageRetriever` fitted on the resulting ``dask.array`` searches
each block of the database on the worker that holds it. This example runs a small
copy-detection job on a cluster of two local worker processes, checks that it finds exactly
what the same job finds in one process, and shows which worker described which chunk.
"""

# %%
# The images: files every worker can read
# ---------------------------------------
# :func:`~skretrieval.datasets.make_copydays` makes a Copydays-style set from the photos that
# ship with scikit-image and scikit-learn: each of 10 photos and 5 edited copies of it (a crop,
# a rotation, a tilt, a downscale, a JPEG re-encoding). ``transform`` takes file paths, not
# pixels (a worker cannot read the client's memory), so the images are written to a folder.
# On a real cluster that folder is on storage that every worker mounts under the same path.
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, get_task_stream
from distributed.deploy.subprocess import SubprocessCluster
from PIL import Image

from skretrieval.datasets import make_copydays
from skretrieval.distributed import transform
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.neighbors import ImageRetriever
from skretrieval.plotting import plot_retrieval_grid
from skretrieval.pooling import GeMPooling

copydays = make_copydays(n_copies_per_image=5, max_size=128, random_state=0)
images, target = copydays.images, copydays.target

workdir = tempfile.TemporaryDirectory()
paths = []
for i, (image, family) in enumerate(zip(images, copydays.transform_family, strict=True)):
    # PNG: lossless, so that every process decodes exactly the same pixels.
    paths.append(os.path.join(workdir.name, f"{i:03d}_{family}.png"))
    Image.fromarray(image).save(paths[-1])
print(f"{len(paths)} images of {len(copydays.target_names)} photos written to a temporary folder")

# %%
# The estimator, fitted in this process
# -------------------------------------
# Any fitted transformer or pipeline that maps a list of paths to one row per image will do:
# here the pretrained MobileNetV2 (ImageNet weights, available offline) with fused GeM pooling.
# ``transform`` scatters it to the workers once, not with every chunk.
extractor = CNNFeatureExtractor(
    backbone="mobilenet_v2",
    weights="imagenet",
    max_size=128,
    pooling=GeMPooling(),
    device="cpu",
    verbose=False,
).fit()

# %%
# Start a cluster
# ---------------
# A Dask cluster is a scheduler and workers, and the client (this process) sends them work.
# Here they are two worker processes with one thread each, on this machine, started as
# separate command-line processes (``dask spec``, the program behind ``dask scheduler`` and
# ``dask worker``) by ``distributed.deploy.subprocess.SubprocessCluster``, as they are on
# a real cluster. ``distributed.LocalCluster(n_workers=2, threads_per_worker=1)`` would do the
# same in a notebook, but its worker processes import the script that starts them again, so a
# script must then run everything under ``if __name__ == "__main__":``. (``distributed`` marks
# ``SubprocessCluster`` as experimental; it does not run on Windows.)
#
# The scheduler writes its address to ``scheduler_file``, here in the temporary folder.
# ``idle_timeout`` makes it stop by itself if this script dies before closing it, and the waits
# below have timeouts, so that a broken cluster stops the script rather than hanging it.
cluster = SubprocessCluster(
    n_workers=2,
    threads_per_worker=1,
    dashboard_address=None,
    scheduler_kwargs={
        "scheduler_file": os.path.join(workdir.name, "scheduler.json"),
        "idle_timeout": "5 minutes",
    },
)
client = Client(cluster, timeout="60s")
client.wait_for_workers(2, timeout=120)
n_workers = len(client.scheduler_info()["workers"])
print(f"{n_workers} workers, scheduler at {cluster.scheduler_address}")

# %%
# Describe the images on the cluster
# ----------------------------------
# The 60 images go to the workers in chunks of ``chunk_size``. With ``store=``, each chunk is
# written to a zarr array as soon as it is described, followed by a "done" marker: a job
# stopped half-way (the client killed, the cluster lost) is resumed by the same call, which
# describes only the chunks without a marker. ``get_task_stream`` records where and when each
# task ran.
store = os.path.join(workdir.name, "descriptors.zarr")
start = time.perf_counter()
with get_task_stream(client) as task_stream:
    result = transform(extractor, paths, client=client, chunk_size=8, store=store)
cluster_seconds = time.perf_counter() - start
print(f"described on the cluster in {cluster_seconds:.1f} s: chunks {result.computed_chunks}")
print(f"descriptors: {result.descriptors!r}")

# The same call again finds every chunk done and describes nothing.
again = transform(extractor, paths, client=client, chunk_size=8, store=store)
print(f"second call computed chunks {again.computed_chunks}")

# %%
# Search on the cluster
# ---------------------
# Fitted on a ``dask.array``, the retriever prepares each block (here, L2 normalisation for
# the cosine distance) on the worker that holds it and keeps it there. ``kneighbors()`` with
# no queries queries every image against all the others, block against block on the
# workers; only each query's top ``k`` travels back to the client, never a block.
database = result.descriptors[result.valid]  # all valid here: no unreadable file
retriever = ImageRetriever(n_neighbors=5, metric="cosine").fit(database, target)
distances, indices = retriever.kneighbors()
precision_at_5 = (target[indices] == target[:, None]).mean()
print(f"precision@5 on the cluster: {precision_at_5:.3f} (5 copies of each photo to find)")

# %%
# The same job in one process
# ---------------------------
# The extractor describes the files in this process and the retriever searches a numpy
# array. The descriptors are the same; the distances differ at most by float32 rounding (BLAS
# sums a matrix product in an order that depends on the shapes of the blocks), and the
# neighbours are the same.
start = time.perf_counter()
local_descriptors = extractor.transform(paths)
local_seconds = time.perf_counter() - start
local_distances, local_indices = (
    ImageRetriever(n_neighbors=5, metric="cosine").fit(local_descriptors, target).kneighbors()
)
print(f"described in one process in {local_seconds:.1f} s")
descriptor_gap = np.abs(database.compute() - local_descriptors).max()
print(f"max abs difference of the descriptors: {descriptor_gap:.1e}")
print(f"same neighbours, same order: {np.array_equal(indices, local_indices)}")
print(f"max abs difference of the distances: {np.abs(distances - local_distances).max():.1e}")

# %%
# Which worker described which chunk
# ----------------------------------
# Each bar is one chunk of 8 images: the worker that described it, and for how long. The first
# chunk runs alone, because its result gives the length of the descriptors with which the
# client creates the zarr arrays; the others go to whichever worker is free, dask preferring one
# that already holds the estimator. The bars leave out the start-up: before its first chunk,
# each worker imports torch and receives and rebuilds the network. On a job this small that
# start-up is most of the cluster's time; it does not grow with the number of images.
chunk_tasks = [task for task in task_stream.data if "skretrieval-chunk" in str(task["key"])]
workers = sorted({task["worker"] for task in chunk_tasks})
chunk_seconds = {}
chunk_worker = {}
for task in chunk_tasks:
    chunk = int(str(task["key"]).rsplit("-", 1)[1])
    chunk_worker[chunk] = workers.index(task["worker"])
    chunk_seconds[chunk] = sum(
        span["stop"] - span["start"] for span in task["startstops"] if span["action"] == "compute"
    )
chunks = sorted(chunk_seconds)
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
for number in range(len(workers)):
    mine = [chunk for chunk in chunks if chunk_worker[chunk] == number]
    ax.bar(mine, [chunk_seconds[chunk] for chunk in mine], label=f"worker {number + 1}")
ax.set_xticks(chunks)
ax.set_xlabel("chunk (images 8 i to 8 i + 7)")
ax.set_ylabel("seconds")
ax.set_title("Time to describe each chunk, by worker")
ax.legend()
print(
    f"{sum(chunk_seconds.values()):.1f} s of the cluster's {cluster_seconds:.1f} s went to "
    f"describing chunks; chunks per worker: "
    f"{[list(chunk_worker.values()).count(number) for number in range(len(workers))]}"
)

# %%
# The cluster's rankings
# ----------------------
# One copy of each kind as query, with its five nearest images found on the cluster (each
# image was left out of its own list); green frames mark the original and the other copies of
# the same photo, red frames other photos.
families = copydays.transform_family
kinds = ["crop", "rotate", "tilt", "scale", "jpeg"]
shown = [
    np.flatnonzero((families == kind) & (target == group))[0] for group, kind in enumerate(kinds)
]
fig = plot_retrieval_grid(
    [images[i] for i in shown],
    images,
    indices[shown],
    distances=distances[shown],
    relevant=target[indices[shown]] == target[shown, None],
    query_titles=[f"{families[i]} of {copydays.target_names[target[i]]}" for i in shown],
)

# %%
# Close the cluster
# -----------------
# Closing the client and the cluster stops the scheduler and the worker processes.
client.close()
cluster.close()
workdir.cleanup()

# %%
# On a real cluster
# -----------------
# Only the first lines change. Start a scheduler, then workers on each machine (one process
# per GPU, or per few CPU cores)::
#
#     dask scheduler                                    # listens on tcp://<host>:8786
#     dask worker tcp://scheduler-host:8786 --nworkers 1 --nthreads 1
#
# and connect the client to the scheduler's address, ``Client("tcp://scheduler-host:8786")``;
# or let a cluster manager start them on a batch system, e.g. ``Client(SLURMCluster(...))``
# with `dask-jobqueue <https://jobqueue.dask.org>`_. Then
#
# - the images, and the zarr store, must be on storage that every worker reads (and writes)
#   under the same paths; unreadable files can be skipped and listed with
#   ``on_error="skip"`` (``result.valid``, ``result.skipped``);
# - an extractor with ``device="auto"`` chooses its device again on each worker, so a worker
#   on a GPU machine uses its GPU; pin each worker to one GPU with
#   ``CUDA_VISIBLE_DEVICES=i dask worker ...``;
# - dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, with which extraction and
#   search were measured 1.6 times slower (``benchmarks/bench_distributed.py``); unset it in
#   the workers' dask configuration (``distributed.nanny.pre-spawn-environ``), as
#   ``docs/scaling_out.md`` shows.
#
# On one machine the cluster buys no speed (``benchmarks/README.md`` measured extraction of
# 240 images at 1.45 times the in-process time on a 2-core machine, search at parity); it buys
# the client's memory (a 1,000,000 x 128 database never enters it) and, with more machines,
# more cores and GPUs. From the command line, ``skretrieval index`` and
# ``skretrieval evaluate`` take the scheduler's address::
#
#     skretrieval index /shared/photos -o /shared/photos.index --scheduler tcp://scheduler-host:8786
#     skretrieval evaluate rparis6k --root /shared/data --scheduler tcp://scheduler-host:8786
