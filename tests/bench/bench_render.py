"""Render benchmark: seconds of one CPU core per 5 s 720×1280 clip, for each motion, and
the whole-machine throughput with one render per core. Not a test: run
`python -m tests.bench.bench_render [--repeat N]`. Target: at most 3 s per clip per core."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from daemon.render import MOTIONS, render
from tests.integration.test_render import subject

PARAMS = {"aspect_ratio": "9:16", "duration": 5}


def one(motion: str, dest: str) -> float:
    started = time.process_time()
    render(subject(), {**PARAMS, "motion": motion}, dest)
    return time.process_time() - started  # CPU seconds of this process: per core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for motion in MOTIONS:
            runs = [one(motion, str(Path(tmp) / f"{motion}.mp4")) for _ in range(args.repeat)]
            results[motion] = round(min(runs), 2)
            print(f"{motion:10s} {min(runs):5.2f} s CPU per 5 s clip (best of {args.repeat})")
        cores = os.cpu_count() or 1
        started = time.perf_counter()
        with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
            jobs = [
                pool.submit(one, "turntable", str(Path(tmp) / f"par{i}.mp4"))
                for i in range(cores * 2)
            ]
            for job in jobs:
                job.result()
        wall = time.perf_counter() - started
        print(
            f"{cores} cores: {cores * 2} turntable clips in {wall:.1f} s wall "
            f"({wall / (cores * 2):.2f} s per clip)"
        )
    print(
        json.dumps({"cpu_seconds_per_clip": results, "parallel_wall_per_clip": wall / (cores * 2)})
    )


if __name__ == "__main__":
    main()
