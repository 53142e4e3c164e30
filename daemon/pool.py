"""Worker process pools (image decoding, rendering) that never outlive the daemon.

A SIGKILLed parent leaves ProcessPoolExecutor workers blocked on their call queue forever
(each holds the queue's write end, so they never see EOF): hundreds of orphans after a
crash loop outside systemd. Each worker asks the kernel for SIGKILL when its parent dies."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Worker initializer: SIGKILL on the parent's death (Linux prctl), else a watcher."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # it died before prctl took effect
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # other systems: notice being reparented
        while os.getppid() == parent:
            threading.Event().wait(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, never fork: the daemon is multi-threaded.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
