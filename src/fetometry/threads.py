"""Overlapping the stages of a measurement on the cores there are.

Decoding (OpenCV, pydicom), the network (onnxruntime, PyTorch) and the ellipse fit
(NumPy, OpenCV) release the GIL for most of their time, so plain threads overlap
them: ``prefetch`` reads ahead of the consumer, ``fit_pool`` fits the images of a batch
side by side, and ``beside_pool`` runs the plane check beside the segmenter (it needs
only the pixels). Results keep their input order.
"""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

_END = object()


def prefetch(items: Iterable, depth: int = 8) -> Iterator:
    """Produce ``items`` in a background thread, ``depth`` ahead of the consumer; an
    exception in the producer is raised in the consumer, at its place in the order."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def producer() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            buffer.put(error)

    thread = threading.Thread(target=producer, name="fetometry-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count() -> int:
    """Threads for per-image work: the cores this process may use (at most 8)."""
    return max(1, min(usable_cores(), 8))


@functools.lru_cache(maxsize=1)
def fit_pool() -> ThreadPoolExecutor:
    """The process's pool for per-image work (one per process, its threads reused)."""
    return ThreadPoolExecutor(max_workers=worker_count(), thread_name_prefix="fetometry-fit")


@functools.lru_cache(maxsize=1)
def beside_pool() -> ThreadPoolExecutor:
    """The process's pool for a second network run beside the caller's: the plane check
    while the segmenter and the fits run. Its jobs wait on no other pool, so a fit that
    waits on one of them cannot deadlock."""
    return ThreadPoolExecutor(max_workers=worker_count(), thread_name_prefix="fetometry-beside")


def network_threads() -> int:
    """Intra-op threads for a network: PyTorch's setting where PyTorch is loaded (so
    onnxruntime and PyTorch use the same cores, and ``torch.set_num_threads`` governs
    both), else ``OMP_NUM_THREADS``, else the cores this process may use."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return usable_cores()


def beside_threads() -> int:
    """Intra-op threads for a network run in ``beside_pool``: half of ``network_threads``.
    The segmenter and the ellipse fit after it are the longer path (about twice the plane
    check's time per image), so the segmenter keeps every core and the plane check takes
    half of them (the splits compared: benchmarks/plane_beside.py, docs/BENCHMARKS.md)."""
    return max(1, network_threads() // 2)


def set_network_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads for the networks of this process: onnxruntime
    sessions made from now on (``network_threads``) and PyTorch, loaded or not."""
    os.environ["OMP_NUM_THREADS"] = str(int(threads))  # PyTorch reads it when it loads
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(threads))
