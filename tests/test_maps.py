"""Maps in the core: grid shapes, exact Jaccard neighbours, the layout, the rendering, the job queue.

The SDRs are clustered like real ones (members of a cluster share most of a
prototype's bits), so a good layout must keep clusters together on the grid;
a job's failure is a real one (the index it reads was closed).
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image2sdr.server.config import IndexConfig, MapsConfig
from image2sdr.server.errors import IndexClosedError, InvalidInputError, LimitExceededError, MapJobNotFoundError
from image2sdr.server.index import SdrIndex
from image2sdr.server.maps.jobs import MapJobs, MapRequest, MapState
from image2sdr.server.maps.layout import grid_shape, jaccard_neighbours, lay_out, neighbourhood_kept
from image2sdr.server.maps.render import cell_pixels_for, check_canvas, render
from image2sdr.server.sdr import Sdr

SIZE, ACTIVE = 16384, 328
TIMEOUT = 120
# t-SNE on one thread: under pytest-xdist each worker already has a core, and a t-SNE per core
# in each worker oversubscribes them (256 items: 1 s on one thread, 20-30 s on two, measured on
# the 2-core machine). The layout is the same either way; the servers' map tests run the default.
ONE_THREAD = 1


def clustered(clusters: int, per: int, keep: float = 0.7, seed: int = 0) -> tuple[list[Sdr], np.ndarray]:
    """``clusters`` prototypes; each member keeps ``keep`` of its prototype's bits, the rest random."""
    rng = np.random.default_rng(seed)
    sdrs, labels = [], []
    for cluster in range(clusters):
        prototype = rng.choice(SIZE, ACTIVE, replace=False)
        for _ in range(per):
            kept = rng.choice(prototype, int(ACTIVE * keep), replace=False)
            rest = rng.choice(np.setdiff1d(np.arange(SIZE), kept), ACTIVE - kept.size, replace=False)
            sdrs.append(Sdr.from_positions(np.union1d(kept, rest), SIZE))
            labels.append(cluster)
    return sdrs, np.array(labels)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize(
    ("items", "columns", "rows", "expected"),
    [(1, 0, 0, (1, 1)), (2, 0, 0, (2, 2)), (1024, 0, 0, (32, 32)), (1025, 0, 0, (33, 33)), (10, 5, 0, (5, 2)),
     (10, 0, 3, (4, 3)), (12, 4, 3, (4, 3))],
)  # fmt: skip
def test_grid_shape(items: int, columns: int, rows: int, expected: tuple[int, int]) -> None:
    assert grid_shape(items, columns, rows) == expected


def test_grid_shape_refuses_too_few_cells_and_no_items() -> None:
    with pytest.raises(InvalidInputError) as small:
        grid_shape(10, 3, 3)
    assert small.value.field == "columns" and "9 cells for 10 items" in str(small.value)
    with pytest.raises(InvalidInputError) as empty:
        grid_shape(4096, 300, 300)  # 90000 cells for 4096 items: an empty map that costs gigabytes
    assert empty.value.field == "columns"
    assert grid_shape(2, 4, 4) == (4, 4)  # tiny maps may have 16 cells
    with pytest.raises(InvalidInputError) as none:
        grid_shape(0)
    assert none.value.field == "items"


def test_jaccard_neighbours_are_exact() -> None:
    sdrs, _ = clustered(4, 6, keep=0.5)
    neighbours, distances = jaccard_neighbours(sdrs, 5)
    for row, sdr in enumerate(sdrs):
        brute = sorted(
            (1 - sdr.overlap(other) / (2 * ACTIVE - sdr.overlap(other)), column)
            for column, other in enumerate(sdrs)
            if column != row
        )[:5]
        assert neighbours[row].tolist() == [column for _, column in brute]
        np.testing.assert_allclose(distances[row], [distance for distance, _ in brute])


def test_layout_keeps_clusters_together() -> None:
    sdrs, labels = clustered(8, 32)
    layout = lay_out(sdrs, threads=ONE_THREAD)
    assert (layout.columns, layout.rows) == (16, 16)
    assert sorted(set(layout.cells.tolist())) == sorted(layout.cells.tolist())  # one item per cell
    assert layout.cells.max() < 256
    # Random cells would keep ~24 / 255 of neighbourhoods; clusters of 32 fit in 6 x 6 blocks.
    assert layout.neighbourhood_kept > 0.6
    assert layout.embedding_kept >= 0.5
    positions = np.column_stack([layout.cells % 16, layout.cells // 16])
    same = positions[labels == 0]
    assert np.ptp(same, axis=0).max() <= 10  # cluster 0 is one region, not spread over the grid
    again = lay_out(sdrs, threads=ONE_THREAD)
    assert again.cells.tolist() == layout.cells.tolist()  # the same SDRs give the same map


def test_layout_of_tiny_sets() -> None:
    for count in (1, 2, 3, 4, 5):
        sdrs, _ = clustered(1, count)
        layout = lay_out(sdrs, threads=ONE_THREAD)
        assert len(set(layout.cells.tolist())) == count
        assert layout.columns * layout.rows >= count


def test_neighbourhood_kept_counts_pairs_within_radius() -> None:
    positions = np.array([[0.0, 0.0], [2.0, 2.0], [5.0, 0.0]])
    neighbours = np.array([[1, 2], [0, 2], [0, 1]])
    assert neighbourhood_kept(positions, neighbours) == pytest.approx(2 / 6)


def test_render_draws_thumbnails_and_sdrs() -> None:
    sdrs, _ = clustered(1, 3)
    thumbnail = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(thumbnail, "WEBP")
    cells = np.array([0, 1, 3])
    png, drawn = render(
        cells, 2, 2, cell_pixels=32, thumbnails=[thumbnail.getvalue(), None, b"not an image"], sdrs=sdrs
    )
    assert drawn == [True, False, False]  # a damaged thumbnail costs its picture, not the map
    assert png_size(png) == (64, 64)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert tuple(pixels[16, 16]) == pytest.approx((200, 30, 30), abs=12)  # the thumbnail, centred in cell 0
    assert tuple(pixels[48, 16]) == (24, 24, 28)  # cell 2 is empty: background
    assert cell_pixels_for(32, 32, 2048) == 64 and cell_pixels_for(2, 2, 2048) == 256
    assert cell_pixels_for(1, 4096, 2048) == 8  # a tall grid: by its longer side, not its columns
    check_canvas(64, 64, 256)
    with pytest.raises(InvalidInputError) as huge:
        check_canvas(1, 4096, 8)
    assert huge.value.field == "cell_pixels"


_RENDER_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
import numpy as np
from image2sdr.server.maps.render import render
from image2sdr.server.sdr import Sdr

def status(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) >> 10

rng = np.random.default_rng(0)
sdrs = [Sdr.from_positions(np.sort(rng.choice(16384, 328, replace=False)), 16384) for _ in range(3)]
thumbnail = Path(sys.argv[1]).read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
before = status("VmRSS:")
png, drawn = render(np.array([0, 17, 255]), 16, 16, cell_pixels=256, thumbnails=[None, thumbnail, None], sdrs=sdrs)
Path(sys.argv[2]).write_bytes(png)
print(status("VmHWM:") - before, drawn)
"""


def test_a_large_map_is_drawn_a_row_of_cells_at_a_time(tmp_path: Path) -> None:
    """A 4,096-px map: its canvas alone was 64 MiB in Pillow; a row of cells is 3 MiB.

    Drawn in a fresh process, whose peak is the map's alone (a process that drew before
    may hold freed pages it reuses, and would show no growth whatever the map took).
    """
    thumbnail = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(thumbnail, "WEBP")
    (tmp_path / "thumbnail.webp").write_bytes(thumbnail.getvalue())
    command = [
        sys.executable,
        "-c",
        _RENDER_IN_A_FRESH_PROCESS,
        str(tmp_path / "thumbnail.webp"),
        str(tmp_path / "map.png"),
    ]
    added_mib, drawn = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout.split(
        " ", 1
    )
    assert int(added_mib) < 32
    assert drawn.strip() == "[False, True, False]"
    pixels = np.asarray(Image.open(tmp_path / "map.png").convert("RGB"))
    assert pixels.shape == (4096, 4096, 3)
    assert tuple(pixels[256 + 128, 256 + 128]) == pytest.approx((200, 30, 30), abs=12)  # cell 17: row 1, column 1
    assert tuple(pixels[4095, 0]) == (24, 24, 28)  # the last row's empty first cell: background
    assert tuple(pixels[0, 0]) == (24, 24, 28) and tuple(pixels[4095, 4095]) == (24, 24, 28)  # the 1-px gap
    assert pixels[3840:, 3840:].std() > 0  # the last cell holds an SDR picture


def request_for(sdrs: list[Sdr], **fields: object) -> MapRequest:
    ids = tuple(f"item-{number}" for number in range(len(sdrs)))
    columns, rows = grid_shape(len(sdrs))
    return MapRequest(ids, tuple(sdrs), "semantic", columns, rows, 0, **fields)  # type: ignore[arg-type]


def wait(jobs: MapJobs, job_id: str, timeout_s: float = 120.0) -> MapState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = jobs.get(job_id)
        if status.state in (MapState.DONE, MapState.FAILED):
            return status.state
        time.sleep(0.05)
    raise AssertionError(f"map job {job_id} still {jobs.get(job_id).state} after {timeout_s} s")


def test_job_runs_to_done_with_progress() -> None:
    jobs = MapJobs(MapsConfig(map_pixels=256, threads=ONE_THREAD))
    try:
        sdrs, _ = clustered(4, 16)
        created = jobs.create(request_for(sdrs))
        assert created.state in (MapState.QUEUED, MapState.RUNNING) and created.result is None
        seen = []
        while (status := jobs.get(created.id)).state not in (MapState.DONE, MapState.FAILED):
            seen.append(status.progress)
            time.sleep(0.01)
        assert status.state is MapState.DONE and status.error is None and status.progress == 1.0
        assert seen == sorted(seen)  # progress never goes back
        assert status.result is not None and png_size(status.result.png) == (256, 256)
        assert status.result.cell_pixels == 32 and status.elapsed_ms > 0
    finally:
        jobs.close()


def test_failed_job_says_why(tmp_path: Path) -> None:
    index = SdrIndex(tmp_path / "index", IndexConfig(), SIZE)
    index.close()  # the job reads thumbnails from a closed index: a real failure, reported by GetMap
    jobs = MapJobs(MapsConfig(threads=ONE_THREAD))
    try:
        sdrs, _ = clustered(1, 5)
        job = jobs.create(request_for(sdrs, thumbnails=index.thumbnails))
        assert wait(jobs, job.id) is MapState.FAILED
        failed = jobs.get(job.id)
        assert isinstance(failed.error, IndexClosedError) and failed.result is None
        assert failed.stage == "rendering"  # where it failed: the thumbnails are read to draw the map
    finally:
        jobs.close()


def test_queue_is_bounded_and_finished_jobs_are_dropped_oldest_first() -> None:
    """The first job holds the one running place until the test lets it go: no job's speed decides anything."""
    jobs = MapJobs(MapsConfig(max_running=1, max_queued=1, keep_finished=1, threads=ONE_THREAD))
    drawing, release = threading.Event(), threading.Event()

    def held(ids: Sequence[str]) -> dict[str, bytes]:
        drawing.set()
        assert release.wait(TIMEOUT), "the test never let the first job go"
        return {}  # no thumbnails: SDRs are drawn

    try:
        sdrs, _ = clustered(2, 10)
        first = jobs.create(request_for(sdrs, thumbnails=held))
        assert drawing.wait(TIMEOUT)  # running, at its drawing, until released
        second = jobs.create(request_for(sdrs[:6]))  # queued behind it
        with pytest.raises(LimitExceededError):
            jobs.create(request_for(sdrs[:5]))  # one running, one queued: no room
        release.set()
        assert wait(jobs, first.id) is MapState.DONE
        assert wait(jobs, second.id) is MapState.DONE
        with pytest.raises(MapJobNotFoundError):
            jobs.get(first.id)  # keep_finished 1: the older one is gone
        with pytest.raises(MapJobNotFoundError):
            jobs.get("no-such-job")
    finally:
        release.set()
        jobs.close()
