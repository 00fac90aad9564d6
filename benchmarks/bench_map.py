"""Maps: time to lay out 1024 and 4096 stored items through a real server, and how well neighbourhoods survive.

The collection: real photos (scikit-image, Debian's darknet and MATE wallpapers)
and openclipart drawings, distinct by content, encoded once by the real encoder
(cached) and stored with their thumbnails in a real index on disk. A real
server on port 0 answers CreateMap / GetMap; the time is from CreateMap to the
job's DONE, as a caller sees it.

Neighbourhood preservation: the share of each item's 10 nearest items by SDR
overlap that land within grid distance 2 (Chebyshev, a 5 x 5 block), for the
map, for the 2-D embedding before snapping (scaled to the grid) and for random
layouts (mean of 5).

Then the choices the layout rests on, on the same items: openTSNE against UMAP
(both from the same exact Jaccard neighbours), and ``lapjv`` (the one used)
against SciPy's linear_sum_assignment and ``lap`` on the same cost matrix, with
the points spread by rank and as embedded (UMAP and lap come from the ``bench``
extra that ``make bench-map`` installs; they are not serving dependencies).

Also writes docs/images/map-1024.jpg, the README's picture.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_images

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import EncodeOptions, Encoder
from image2sdr.server.index.values import VISUAL, Item
from image2sdr.server.maps import layout as core
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

SIZES = (1024, 4096)
ROOT = Path(__file__).resolve().parent.parent
PICTURE = ROOT / "docs" / "images" / "map-1024.jpg"
ENCODE_BATCH = 32


# -- the collection, encoded once ---------------------------------------------------------


def collection(count: int) -> dict[str, bytes]:
    """``count`` distinct images: every real photo, then drawings spread over openclipart."""
    found: dict[str, bytes] = {}
    seen: set[str] = set()
    for name, data in [*real_images.photos().items(), *real_images.clipart(count * 2).items()]:
        digest = hashlib.sha1(data).hexdigest()
        if digest not in seen and len(found) < count:
            seen.add(digest)
            found[name] = data
    return found


def encoded(config: Config, images: dict[str, bytes]) -> list[Item]:
    """Each image as the item Encode + add_to_index would store: SDRs, concepts, thumbnail (cached on disk)."""
    key = hashlib.sha256(
        "\x00".join([(config.models_dir / "manifest.json").read_text(), config.model_dump_json(), *images]).encode()
    ).hexdigest()[:16]
    path = real_images.cache_dir() / f"map-{key}.npz"
    if not path.is_file():
        _encode_to(path, config, images)
    with np.load(path, allow_pickle=False) as arrays:
        return _items(arrays, config.sdr.size)


def _encode_to(path: Path, config: Config, images: dict[str, bytes]) -> None:
    names, data = list(images), list(images.values())
    semantic, visual, thumbnails = [], [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        encoder = Encoder.from_config(config.model_copy(update={"data_dir": Path(scratch)}))
        try:
            for first in range(0, len(data), ENCODE_BATCH):
                batch = data[first : first + ENCODE_BATCH]
                for outcome in encoder.encode_batch(batch, EncodeOptions(thumbnail=True)):  # as if stored
                    if isinstance(outcome, Exception):
                        raise outcome
                    assert outcome.visual is not None and outcome.thumbnail is not None
                    semantic.append(outcome.sdr.positions)
                    visual.append(outcome.visual.positions)
                    thumbnails.append(np.frombuffer(outcome.thumbnail, dtype=np.uint8))
                if first // ENCODE_BATCH % 20 == 0:
                    print(f"  encoded {len(semantic)}/{len(data)} in {time.perf_counter() - started:.0f} s", flush=True)
        finally:
            encoder.close()
    arrays = {"names": np.array(names)}
    for label, parts in (("semantic", semantic), ("visual", visual), ("thumbnails", thumbnails)):
        arrays[label] = np.concatenate(parts)
        arrays[f"{label}_counts"] = np.array([part.size for part in parts], dtype=np.int64)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays)
    Path(handle.name).replace(path)


def _split(arrays: np.lib.npyio.NpzFile, label: str) -> list[np.ndarray]:
    return np.split(arrays[label], np.cumsum(arrays[f"{label}_counts"])[:-1])


def _items(arrays: np.lib.npyio.NpzFile, size: int) -> list[Item]:
    names = [str(name) for name in arrays["names"]]
    semantic, visual, thumbnails = (_split(arrays, label) for label in ("semantic", "visual", "thumbnails"))
    return [
        Item(
            name,
            Sdr.trusted(sem, size),
            spaces={VISUAL: Sdr.trusted(vis, size)},
            thumbnail=thumb.tobytes(),
        )
        for name, sem, vis, thumb in zip(names, semantic, visual, thumbnails, strict=True)
    ]


# -- the service ---------------------------------------------------------------------------


def timed_map(stub: pb_grpc.Image2SdrStub, ids: list[str], space: pb.Space) -> tuple[float, pb.MapJob]:
    """Seconds from CreateMap to DONE, and the finished job."""
    started = time.perf_counter()
    job = stub.CreateMap(pb.CreateMapRequest(ids=pb.ItemIds(ids=ids), space=space), timeout=60)
    while job.state in (pb.MAP_STATE_QUEUED, pb.MAP_STATE_RUNNING):
        time.sleep(0.05)
        job = stub.GetMap(pb.GetMapRequest(id=job.id), timeout=60)
    seconds = time.perf_counter() - started
    if job.state != pb.MAP_STATE_DONE:
        raise SystemExit(f"map job failed: {job.error.message}")
    return seconds, job


def random_kept(neighbours: np.ndarray, columns: int, rows: int, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(repeats):
        cells = rng.permutation(columns * rows)[: len(neighbours)]
        shares.append(core.neighbourhood_kept(core.cell_positions(cells, columns), neighbours))
    return statistics.fmean(shares)


def measure_service(config: Config, items: list[Item]) -> dict[tuple[int, str], dict[str, float]]:
    figures: dict[tuple[int, str], dict[str, float]] = {}
    server = create_server(config)
    try:
        server.index.add_many(items)
        with grpc.insecure_channel(server.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            for count in SIZES:
                ids = [item.id for item in items[:count]]
                for space, label in ((pb.SPACE_SEMANTIC, "semantic"), (pb.SPACE_VISUAL, "visual")):
                    seconds, job = timed_map(stub, ids, space)
                    sdrs = [item.in_space(label) for item in items[:count]]
                    laid = core.lay_out(sdrs)  # the same seeds: the job's own layout, with its embedding
                    cells = np.array([cell.row * job.columns + cell.column for cell in job.cells])
                    same = bool(np.array_equal(cells, laid.cells))
                    neighbours, _ = core.jaccard_neighbours(sdrs, core.NEIGHBOURS)
                    figures[count, label] = {
                        "seconds": seconds,
                        "job_s": job.elapsed_ms / 1000,
                        "grid": job.neighbourhood_kept,
                        "embedding": laid.embedding_kept,
                        "random": random_kept(neighbours, job.columns, job.rows),
                        "same": float(same),
                        "png_mb": len(job.png) / 1e6,
                    }
                    print(
                        f"  {count} {label}: {seconds:.1f} s, kept {job.neighbourhood_kept:.3f}"
                        f" (embedding {laid.embedding_kept:.3f}), job's cells = in-process cells: {same}",
                        flush=True,
                    )
                    if count == 1024 and label == "semantic":
                        save_picture(job.png)
    finally:
        server.stop()
    return figures


def save_picture(png: bytes) -> None:
    """The README's picture: the 1024-item map at half size (1024 px wide), as a JPEG to keep the repository small."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(io.BytesIO(png)) as drawn:
        small = drawn.resize((drawn.width // 2, drawn.height // 2), Image.Resampling.LANCZOS)
    PICTURE.parent.mkdir(parents=True, exist_ok=True)
    small.convert("RGB").save(PICTURE, "JPEG", quality=85, optimize=True)


# -- the alternatives -----------------------------------------------------------------------


def umap_embedding(neighbours: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """UMAP on the same exact Jaccard neighbours (its own default of 15)."""
    import umap  # noqa: PLC0415 - the bench extra
    from scipy import sparse  # noqa: PLC0415

    count = len(neighbours)
    knn = (
        np.column_stack([np.arange(count), neighbours[:, :14]]),
        np.column_stack([np.zeros(count), distances[:, :14]]),
    )
    reducer = umap.UMAP(n_neighbors=15, metric="precomputed", precomputed_knn=knn, random_state=42, init="spectral")
    return np.asarray(reducer.fit_transform(sparse.csr_matrix((count, count))), dtype=np.float64)


def assignment(cost: np.ndarray, solver: str) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

        rows, cells = linear_sum_assignment(cost)
        found = np.empty(len(cost), dtype=np.intp)
        found[rows] = cells
    elif solver == "lap":
        import lap  # noqa: PLC0415

        _, found, _ = lap.lapjv(cost, extend_cost=True)
    else:
        import lapjv  # noqa: PLC0415

        square = np.zeros((cost.shape[1], cost.shape[1]))
        square[: len(cost)] = cost
        found = lapjv.lapjv(square)[0][: len(cost)]
    return time.perf_counter() - started, np.asarray(found, dtype=np.intp)


def measure_choices(items: list[Item]) -> None:
    print("\nThe choices, on the same items (semantic SDRs):")
    print(f"{'items':>6} {'method':<32} {'seconds':>8} {'kept (grid)':>12} {'kept (2-D)':>11}")
    for count in SIZES:
        sdrs = [item.sdr for item in items[:count]]
        columns, rows = core.grid_shape(count)
        neighbours, distances = core.jaccard_neighbours(sdrs, 90)
        judged = neighbours[:, : core.NEIGHBOURS]
        embeddings = {}
        for name, make in (("openTSNE", core.embed), ("UMAP", umap_embedding)):
            started = time.perf_counter()
            embeddings[name] = make(neighbours, distances)
            seconds = time.perf_counter() - started
            if name == "UMAP" and count == SIZES[0]:  # the first call compiles numba's kernels
                started = time.perf_counter()
                embeddings[name] = make(neighbours, distances)
                print(f"{count:>6} {'UMAP, first call (numba JIT)':<32} {seconds:>8.1f}")
                seconds = time.perf_counter() - started
            cells = core.snap(embeddings[name], columns, rows)
            grid = core.neighbourhood_kept(core.cell_positions(cells, columns), judged)
            plane = core.neighbourhood_kept(core._to_grid(embeddings[name], columns, rows), judged)
            print(f"{count:>6} {name + ' (snapped)':<32} {seconds:>8.1f} {grid:>12.3f} {plane:>11.3f}")
        centres = np.column_stack([np.tile(np.arange(columns), rows), np.repeat(np.arange(rows), columns)])
        for spread, place in ((True, core._spread), (False, core._to_grid)):
            scaled = place(embeddings["openTSNE"], columns, rows)
            cost = ((scaled[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
            for solver in ("scipy", "lapjv", "lap") if spread else ("scipy",):
                seconds, cells = assignment(cost, solver)
                total = float(cost[np.arange(count), cells].sum())
                grid = core.neighbourhood_kept(core.cell_positions(cells, columns), judged)
                label = f"assign {solver}{', spread by rank' if spread else ', as embedded'}"
                print(f"{count:>6} {label:<32} {seconds:>8.1f} {grid:>12.3f}   cost {total:.0f}")


def main() -> None:
    warnings.filterwarnings("ignore", module="umap")  # it warns that a precomputed kNN cannot transform new data
    config = Config(service=ServiceConfig(port=0), http=HttpConfig(enabled=False), models_dir=ROOT / "models")
    images = collection(max(SIZES))
    photos = sum(1 for name in images if not name.startswith("clipart/"))
    print(f"{len(images)} images: {photos} photos, {len(images) - photos} drawings")
    items = encoded(config, images)
    # Photos and drawings mixed through the first 1024, as a collection grows: interleave them.
    order = np.random.default_rng(1).permutation(len(items))
    items = [items[position] for position in order]
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure_service(config.model_copy(update={"data_dir": Path(scratch)}), items)
    print("\nCreateMap -> DONE through a real server (ids given; thumbnails drawn):")
    print(f"{'items':>6} {'space':<9} {'seconds':>8} {'kept: grid':>11} {'2-D':>6} {'random':>7} {'PNG MB':>7}")
    for (count, label), found in figures.items():
        print(
            f"{count:>6} {label:<9} {found['seconds']:>8.1f} {found['grid']:>11.3f} {found['embedding']:>6.3f}"
            f" {found['random']:>7.3f} {found['png_mb']:>7.2f}"
        )
    print("goals: 1024 items <= 10 s, 4096 items <= 60 s")
    measure_choices(items)
    print(f"\nwrote {PICTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
