"""The drop folder: watchfiles events, start-up and periodic scans, the settle check, and
turning a settled file into a job (or a failed job that says why).

watchfiles misses files moved in as a whole folder and races mkdir + immediate writes, and
never reports queue overflow; so every directory that appears is scanned at once, and a
slow full rescan is the safety net. A file already known (being ingested, or the source of
a live job) is never queued twice, however many events it produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath
from typing import Any

from daemon import files
from daemon.async_store import AsyncStore
from daemon.batcher import Batcher
from daemon.config import Settings
from daemon.errors import DiskFull
from daemon.intake import (
    InvalidImage,
    Prepared,
    SettleTracker,
    is_candidate,
    is_own_folder,
    prepare_many,
    preset_of,
    read_sidecar,
)
from daemon.recorder import Recorder
from state.clock import Clock
from state.errors import DuplicateIntake
from state.lifecycle import JobState
from state.params import ParamError, effective
from state.store import Existing, JobRecord, NewJob

log = logging.getLogger("dropreel.intake")
SMALL_READ = 64 * 1024
DEDUPE_STATES = (*(s.value for s in JobState if not s.is_final), JobState.SUCCEED.value)


class Intake:
    def __init__(
        self,
        settings: Settings,
        store: AsyncStore,
        clock: Clock,
        make_pool: Callable[[], Executor],
        provider_name: str,
        on_job: Callable[[], None],
        on_end_fail: Callable[[Any], Awaitable[None]],
        is_disk_full: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.make_pool = make_pool
        self._pool: Executor | None = None
        self.provider_name = provider_name
        self.on_job = on_job
        self.on_end_fail = on_end_fail
        self.is_disk_full = is_disk_full
        self.tracker = SettleTracker(settings.settle_seconds)
        self.known: set[str] = set()  # sources of live jobs (relative paths)
        self.ingesting: set[str] = set()
        self.skipped: dict[str, tuple[int, int]] = {}  # logged once per (size, mtime)
        # Files another daemon (same shared folder) made a job of: (size, mtime) seen.
        self.others: dict[str, tuple[int, int]] = {}
        self.shared = False  # other daemons may watch the same folder (shared table)
        self.tasks: set[asyncio.Task[None]] = set()
        self.recorder = Recorder(store)
        # One decode call per batch, as many batches at once as there are workers.
        self.decoder: Batcher[tuple[bytes, str], Prepared] = Batcher(
            self._prepare_batch, max_batch=32, concurrency=2, name="intake-decoder"
        )
        self.noticed = asyncio.Event()  # a file entered the settle check

    @property
    def drop(self) -> Path:
        return self.settings.drop

    def busy(self) -> bool:
        return bool(self.tracker.pending() or self.ingesting)

    # -- discovery -------------------------------------------------------------------------

    def rel(self, path: Path) -> PurePosixPath | None:
        try:
            return PurePosixPath(path.relative_to(self.drop).as_posix())
        except ValueError:
            return None

    def notice(self, path: Path) -> None:
        rel = self.rel(path)
        if rel is None or not is_candidate(rel):
            return
        key = str(rel)
        if key in self.known or key in self.ingesting:
            return
        try:
            st = path.lstat()
        except FileNotFoundError:
            self.tracker.forget(key)
            return
        self.tracker.observe(key, st.st_size, st.st_mtime_ns, self.clock.monotonic())
        self.noticed.set()

    def scan(self, top: Path | None = None) -> int:
        """Walk `top` (default: the whole drop folder) without following symlinks; every
        candidate file enters the settle check. Returns how many files were seen."""
        if top is None:  # a full scan: forget files that have gone (moved aside by a
            # daemon sharing the folder, for a job it took from us or made itself)
            self.others = {k: v for k, v in self.others.items() if (self.drop / k).exists()}
            self.known = {k for k in self.known if (self.drop / k).exists()}
        top = top or self.drop
        seen = 0
        for root, dirs, names in os.walk(top, followlinks=False):
            here = Path(root)
            rel_dir = self.rel(here)
            dirs[:] = [
                d
                for d in dirs
                if not d.startswith(".")
                and not (rel_dir is not None and is_own_folder(rel_dir / d))
            ]
            for name in names:
                self.notice(here / name)
                seen += 1
        return seen

    async def watch(self, stop: asyncio.Event) -> None:
        from watchfiles import Change, awatch

        self.drop.mkdir(parents=True, exist_ok=True)
        async for changes in awatch(
            self.drop,
            stop_event=stop,
            step=self.settings.watch_step_ms,
            debounce=self.settings.watch_step_ms * 4,
            recursive=True,
            ignore_permission_denied=True,
        ):
            for change, raw in changes:
                path = Path(raw)
                if change == Change.deleted:
                    rel = self.rel(path)
                    if rel is not None:
                        self.tracker.forget(str(rel))
                    continue
                try:
                    is_dir = stat.S_ISDIR(path.lstat().st_mode)
                except FileNotFoundError:
                    continue
                if is_dir:
                    rel = self.rel(path)
                    if rel is not None and not is_own_folder(rel):
                        self.scan(path)  # a folder moved in reports no files: look inside
                else:
                    self.notice(path)

    async def rescan_forever(self, stop: asyncio.Event) -> None:
        # The first rescan comes soon: a file written between the start-up scan and the
        # moment inotify watches are in place has no event, and would otherwise wait for
        # the periodic rescan (minutes).
        timeout = min(2.0, self.settings.rescan_seconds)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=timeout)
            except TimeoutError:
                self.scan()
            timeout = self.settings.rescan_seconds

    async def settle_forever(self, stop: asyncio.Event) -> None:
        interval = max(0.05, min(0.5, self.settings.settle_seconds / 4))
        while not stop.is_set():
            self.check_settled()
            # Nothing settling: sleep until a file is noticed (an idle daemon stays idle).
            idle = not self.tracker.pending()
            if idle:
                self.noticed.clear()
            waiter = self.noticed if idle else stop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=60.0 if idle else interval)

    def check_settled(self) -> None:
        if self.is_disk_full():
            return  # intake holds while the disk is full
        now = self.clock.monotonic()
        for key in self.tracker.pending():
            path = self.drop / key
            try:
                st = path.lstat()
            except FileNotFoundError:
                self.tracker.forget(key)
                log.info("skipped %s: deleted before it could be read", key)
                continue
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                self.tracker.forget(key)
                self._skip_once(
                    key,
                    st,
                    "symlinks are not followed"
                    if stat.S_ISLNK(st.st_mode)
                    else "not a regular file",
                )
                continue
            if self.others.get(key) == (st.st_size, st.st_mtime_ns):
                self.tracker.forget(key)  # another daemon's job: not ours to touch
                continue
            if self.tracker.observe(key, st.st_size, st.st_mtime_ns, now):
                self.tracker.forget(key)
                self.ingesting.add(key)
                task = asyncio.create_task(self._ingest(key, st), name=f"ingest:{key}")
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def _skip_once(self, key: str, st: os.stat_result, why: str) -> None:
        sig = (st.st_size, st.st_mtime_ns)
        if self.skipped.get(key) != sig:
            self.skipped[key] = sig
            log.warning("skipped %s: %s", key, why)

    # -- ingest ----------------------------------------------------------------------------

    async def _ingest(self, key: str, st: os.stat_result) -> None:
        try:
            await self._ingest_file(key, st)
        except DuplicateIntake:
            # A daemon sharing this folder recorded the same file first: one job.
            self.others[key] = (st.st_size, st.st_mtime_ns)
            log.info("skipped %s: another daemon sharing this folder made it a job", key)
        except DiskFull as exc:
            log.error("intake of %s held: %s; retrying in 30s", key, exc)
            asyncio.get_running_loop().call_later(30, self.notice, self.drop / key)
        except Exception:
            log.exception("intake of %s failed unexpectedly; retrying in 30s", key)
            asyncio.get_running_loop().call_later(30, self.notice, self.drop / key)
        finally:
            self.ingesting.discard(key)

    async def _ingest_file(self, key: str, st: os.stat_result) -> None:
        path = self.drop / key
        limit = int(self.settings.max_input_mb * 1024 * 1024)
        if st.st_size > limit:
            await self._reject(
                key,
                st,
                b"",
                "too_large",
                f"{key} is {st.st_size / 1e6:.1f} MB; the limit is "
                f"{self.settings.max_input_mb:g} MB (max_input_mb)",
                {},
            )
            return
        try:
            # A small file is read on the loop: that costs less than the hop to a thread
            # (a tenth of a millisecond, in the burst-ingest profile); a big one is not.
            if st.st_size <= SMALL_READ:
                data = path.read_bytes()
            else:
                data = await asyncio.to_thread(path.read_bytes)
            after = path.lstat()
        except FileNotFoundError:
            log.info("skipped %s: deleted before it could be read", key)
            return
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or len(
            data
        ) != after.st_size:
            self.notice(path)  # still being written after all: settle again
            return
        ikey = self.intake_key(key, st)
        if self.shared and await self.store.intake_key_in_place(ikey):
            # Another daemon watching this folder got there first: spare the decode.
            raise DuplicateIntake(ikey)
        rel = PurePosixPath(key)
        preset = preset_of(rel)
        try:
            sidecar, _ = read_sidecar(path)
            params = effective(
                self.settings.defaults,
                self.settings.presets.get(preset or "") if preset else None,
                sidecar,
            )
        except (ValueError, ParamError) as exc:
            await self._reject(key, st, data, "bad_parameters", f"{key}: {exc}", {})
            return
        try:
            prepared = await self._prepare(data, key)
        except InvalidImage as exc:
            await self._reject(key, st, data, exc.code, str(exc), params)
            return
        detail: dict[str, Any] = {
            "size": len(data),
            "width": prepared.width,
            "height": prepared.height,
        }
        if prepared.conformed:
            detail["conformed"] = prepared.conformed
        if preset:
            detail["preset"] = preset
        result = await self.recorder.record(
            NewJob(
                source_path=key,
                data=prepared.data,
                media_type=prepared.media_type,
                params=params,
                provider=self.provider_name,
                detail=detail,
                intake_key=ikey,
                dedupe_states=DEDUPE_STATES,
                drop_folder=str(self.drop),
            )
        )
        if isinstance(result, Existing):
            other = result.job
            if other.source_path == key and other.source_done_at is None:
                raise DuplicateIntake(ikey)
            await self._skip_duplicate(key, st, other)
            return
        job = result
        self.known.add(key)
        log.info(
            "job %s created from %s%s",
            job.id[:8],
            key,
            f" ({'; '.join(prepared.conformed)})" if prepared.conformed else "",
        )
        self.on_job()

    async def _skip_duplicate(self, key: str, st: os.stat_result, other: JobRecord) -> None:
        path = self.drop / key
        try:
            now = path.lstat()
        except FileNotFoundError:
            return  # a daemon sharing the folder moved it aside first
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.notice(path)
            return
        note = (
            f"Not submitted: the same image with the same parameters is already job "
            f"{other.id} ({other.state}, from {other.source_path})."
        )
        log.info("skipped %s: duplicate of job %s (%s)", key, other.id[:8], other.state)
        await asyncio.to_thread(files.move_aside, self.drop, key, "done", note=note)

    @staticmethod
    def intake_key(key: str, st: os.stat_result) -> str:
        """The file as every daemon sharing the folder sees it; unique among jobs whose
        source is still in place, so the same file dropped again later is a new job."""
        return f"{key}|{st.st_size}|{st.st_mtime_ns}"

    def pool(self) -> Executor:
        if self._pool is None:
            self._pool = self.make_pool()
        return self._pool

    def close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _prepare(self, data: bytes, key: str) -> Prepared:
        return await self.decoder.submit((data, key))

    async def _prepare_batch(
        self, items: list[tuple[bytes, str]]
    ) -> list[Prepared | BaseException]:
        loop = asyncio.get_running_loop()
        pool = self.pool()
        try:
            return list(
                await loop.run_in_executor(pool, prepare_many, items, self.settings.conform_ratio)
            )
        except BrokenProcessPool:
            # The decoder died (a hostile file can crash a C library): the next call gets
            # a fresh pool, and a batch is retried file by file so only that file fails.
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=False)
            if len(items) > 1:
                results: list[Prepared | BaseException] = []
                for item in items:
                    results.extend(await self._prepare_batch([item]))
                return results
            return [
                InvalidImage(
                    "decoder_crashed",
                    f"{items[0][1]}: the image decoder crashed on this file; "
                    "it is probably malformed",
                )
            ]

    async def _reject(
        self,
        key: str,
        st: os.stat_result,
        data: bytes,
        code: str,
        message: str,
        params: dict[str, Any],
    ) -> None:
        job = await self.store.create_job(
            source_path=key,
            data=data,
            media_type="application/octet-stream",
            params=params,
            provider=self.provider_name,
            fail=(code, message),
            intake_key=self.intake_key(key, st),
            drop_folder=str(self.drop),
        )
        log.warning("job %s failed at intake: %s", job.id[:8], message)
        await self.on_end_fail(job)
