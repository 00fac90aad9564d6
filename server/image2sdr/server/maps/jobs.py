"""Map jobs: a map is computed in the background, a bounded number at a time, and polled.

``MapJobs.create`` takes the items already chosen (``maps.items``) and answers at
once with the job's id; a worker lays them out (``layout``), draws them
(``render``) and keeps the result until ``maps.keep_finished`` newer jobs have
finished. Jobs live only as long as the process: a map is cheap to make again,
and a result a client never came back for should not outlive the server.

A job's failure is kept as the exception itself; the gRPC edge turns it into
a status in ``GetMap`` as it would for a call.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..config import MapsConfig
from ..errors import LimitExceededError, MapJobNotFoundError, StoppingError, UpstreamError
from ..sdr import Sdr
from .layout import Layout, lay_out
from .render import cell_pixels_for, render

__all__ = ["MapJobs", "MapRequest", "MapResult", "MapState", "MapStatus"]

logger = logging.getLogger(__name__)

# Each stage's share of a job's progress, measured at 4096 items (embedding dominates).
_STAGES = {"queued": (0.0, 0.0), "reading": (0.0, 0.05), "embedding": (0.05, 0.55), "assigning": (0.55, 0.95)}
_STAGES["rendering"] = (0.95, 1.0)


class MapState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class MapRequest:
    """What to lay out: the chosen items, in a stable order, with what is drawn for each."""

    ids: tuple[str, ...]
    sdrs: tuple[Sdr, ...]  # in the space mapped
    space: str
    columns: int
    rows: int
    cell_pixels: int  # 0: the configured map width over the columns
    skipped_without_visual: int = 0
    # Reads the items' thumbnails (id -> bytes) when the job gets to drawing; None: draw SDRs.
    thumbnails: Callable[[Sequence[str]], dict[str, bytes]] | None = None


@dataclass(frozen=True)
class MapResult:
    layout: Layout
    png: bytes
    cell_pixels: int
    drawn: tuple[bool, ...]  # per item: its thumbnail was drawn (False: its SDR)


@dataclass(frozen=True)
class MapStatus:
    """A job as GetMap reports it: a copy, safe to read while the job runs on."""

    id: str
    state: MapState
    stage: str
    progress: float
    request: MapRequest
    created_ms: int
    elapsed_ms: float
    result: MapResult | None = None
    error: Exception | None = None


@dataclass
class _Job:
    id: str
    request: MapRequest
    created_ms: int
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    state: MapState = MapState.QUEUED
    stage: str = "queued"
    progress: float = 0.0
    result: MapResult | None = None
    error: Exception | None = None


class MapJobs:
    """The map jobs of one server: at most ``max_running`` computed at once, ``max_queued`` waiting."""

    def __init__(self, config: MapsConfig, max_png_bytes: int = 1 << 62) -> None:
        self.config = config
        self.max_png_bytes = max_png_bytes  # a PNG larger than a message may carry could never be fetched
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # oldest first, for eviction
        self._pool = ThreadPoolExecutor(max_workers=config.max_running, thread_name_prefix="map")
        self._closed = False

    def create(self, request: MapRequest) -> MapStatus:
        """Queue a job for ``request``; RESOURCE_EXHAUSTED (LimitExceededError) when the queue is full."""
        with self._lock:
            waiting = sum(1 for job in self._jobs.values() if job.state in (MapState.QUEUED, MapState.RUNNING))
            limit = self.config.max_running + self.config.max_queued
            if self._closed or waiting >= limit:
                raise LimitExceededError(
                    f"{waiting} map jobs are queued or running; maps.max_running + maps.max_queued allow {limit}",
                    limit=limit,
                    actual=waiting + 1,
                )
            job = _Job(uuid.uuid4().hex, request, int(time.time() * 1000))
            self._jobs[job.id] = job
            self._pool.submit(self._run, job)
            return self._status(job)

    def get(self, job_id: str) -> MapStatus:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise MapJobNotFoundError(
                    f"no map job {job_id!r}: jobs live in the server that made them, until it stops or "
                    f"maps.keep_finished ({self.config.keep_finished}) newer ones have finished",
                    resource=job_id,
                )
            return self._status(job)

    def close(self) -> None:
        """Stop taking jobs, drop the queued ones and stop the running ones at their next progress report."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the work ---------------------------------------------------------------

    def _run(self, job: _Job) -> None:
        try:
            self._advance(job, "reading", 0.0, MapState.RUNNING)
            result = self._make(job)
        except Exception as exc:  # any failure is the job's, reported by GetMap; the worker goes on
            logger.warning("map job %s failed: %s", job.id, type(exc).__name__, exc_info=True)
            self._end(job, None, exc)
        else:
            self._end(job, result, None)

    def _make(self, job: _Job) -> MapResult:
        request = job.request
        layout = lay_out(
            request.sdrs,
            request.columns,
            request.rows,
            progress=lambda stage, done: self._advance(job, stage, done),
            threads=self.config.threads,
        )
        self._advance(job, "rendering", 0.0)
        found = self._thumbnails(job)
        cell_pixels = request.cell_pixels or cell_pixels_for(layout.columns, layout.rows, self.config.map_pixels)
        thumbnails = [found.get(item_id) for item_id in request.ids]
        png, drawn = render(
            layout.cells, layout.columns, layout.rows, cell_pixels=cell_pixels, thumbnails=thumbnails, sdrs=request.sdrs
        )
        if len(png) > self.max_png_bytes:
            raise LimitExceededError(
                f"the map's PNG is {len(png) / 1e6:.1f} MB, more than a message may carry "
                f"({self.max_png_bytes / 1e6:.1f} MB): ask for smaller cell_pixels",
                limit=self.max_png_bytes,
                actual=len(png),
            )
        return MapResult(layout, png, cell_pixels, tuple(drawn))

    def _thumbnails(self, job: _Job) -> dict[str, bytes]:
        """The items' thumbnails; when a remote engine cannot give them now, the map draws SDRs instead."""
        read = job.request.thumbnails
        if read is None:
            return {}
        try:
            return read(job.request.ids)
        except UpstreamError as exc:  # a damaged or missing thumbnail costs its picture, not the map
            logger.warning("map job %s draws SDRs: thumbnails unavailable (%s)", job.id, type(exc).__name__)
            return {}

    def _advance(self, job: _Job, stage: str, done: float, state: MapState | None = None) -> None:
        start, end = _STAGES[stage]
        with self._lock:
            if self._closed:  # the server is stopping: a map nobody will fetch is not worth finishing
                raise StoppingError("the server stopped before the map was done")
            job.stage = stage
            job.progress = max(job.progress, start + (end - start) * done)
            if state is not None:
                job.state = state
                job.started = time.monotonic()

    def _end(self, job: _Job, result: MapResult | None, error: Exception | None) -> None:
        with self._lock:
            job.ended = time.monotonic()
            job.result, job.error = result, error
            job.state = MapState.DONE if error is None else MapState.FAILED
            if error is None:
                job.stage = "done"  # a failed job keeps the stage it failed in
            job.progress = 1.0 if error is None else job.progress
            self._finished[job.id] = None
            while len(self._finished) > self.config.keep_finished:
                oldest, _ = self._finished.popitem(last=False)
                self._jobs.pop(oldest, None)

    def _status(self, job: _Job) -> MapStatus:
        end = job.ended if job.ended is not None else time.monotonic()
        elapsed = (end - job.started) * 1000 if job.state is not MapState.QUEUED else 0.0
        return MapStatus(
            job.id,
            job.state,
            job.stage,
            job.progress,
            job.request,
            job.created_ms,
            elapsed,
            job.result,
            job.error,
        )
