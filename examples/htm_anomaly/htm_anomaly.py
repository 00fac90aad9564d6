"""A real video through image2sdr into an HTM model: the anomaly score over time, a foreign clip spliced in.

    python examples/htm_anomaly/htm_anomaly.py [--address HOST:PORT] [--frames N] [--png out.png]

The frames of OpenCV's sample ``vtest.avi`` (a street seen by a fixed camera; Debian's
``opencv-doc``, fetched once with ``apt-get download`` by ``benchmarks/real_images.py``) are
decoded (PyAV), sent as JPEG over one EncodeStream (``encode_frames``: ordered, reconnecting),
and each SDR is fed, as ``HtmSdr`` indices, to a brainblocks ``SequenceLearner`` that learns the
sequence and reports an anomaly score per step.  After the clip has been seen ``--passes``
times, it plays once more with frames of ``Megamind.avi`` (an animation) spliced into its
middle: those steps score high, the learned ones low.  The scores are plotted to a PNG.

Without ``--address`` a server is started in this process (needs image2sdr-server and the
exported models: the repository's ``make example-htm`` does that).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
from brainblocks.blocks import BlankBlock, SequenceLearner

from image2sdr.client import Encoding, HtmSdr, Image2SdrClient, encode_frames

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import real_images  # noqa: E402 - the Debian package fetcher the benchmarks use

VIDEOS = "usr/share/doc/opencv-doc/examples/data"
LEARNED, SPLICED = "vtest.avi", "Megamind.avi"  # 795 frames of a street; 270 of an animation
SPLICE_STEP = 20


class HtmModel:
    """A brainblocks SequenceLearner fed SDRs through a BlankBlock, with the checks brainblocks lacks.

    brainblocks crashes when the input is not exactly ``num_c`` bits, and silently takes an
    index equal to the size: the size is checked here, and an ``HtmSdr`` never holds an
    index outside its size (it refuses one when made).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._input = BlankBlock(num_s=size)
        self._learner = SequenceLearner(num_c=size, always_update=True)
        self._learner.input.add_child(self._input.output, 0)

    def step(self, sdr: HtmSdr, *, learn: bool = True) -> float:
        """Feed one SDR; the anomaly score of this step (0: predicted, 1: not at all)."""
        if sdr.size != self.size:
            raise ValueError(f"the model takes {self.size}-bit SDRs, got {sdr.size} bits ({list(sdr.dimensions)})")
        self._input.output.acts = list(sdr.active)
        self._input.feedforward()
        self._learner.feedforward(learn=learn)
        return float(self._learner.get_anomaly_score())


@dataclass
class Timings:
    """Seconds spent in each stage, from the video file to the anomaly score.

    The stream overlaps decoding with the server's encoding; the time the stream took
    beyond the decoding is counted as the encode stage (the wait for the server).
    """

    decode_s: float = 0.0  # video -> RGB frame -> JPEG
    stream_s: float = 0.0  # wall time of the streams, decoding included
    learn_s: float = 0.0  # brainblocks steps
    frames: int = 0  # frames decoded and encoded
    steps: int = 0  # learner steps (the clip is replayed: more steps than frames)

    @property
    def encode_s(self) -> float:
        return max(0.0, self.stream_s - self.decode_s)


@dataclass
class Report:
    scores: list[float]
    spliced: tuple[int, int]  # [start, end) of the spliced steps in the last pass
    learned: tuple[int, int]  # [start, end) of the last pass's own frames compared against them
    timings: Timings
    frames: dict[str, int] = field(default_factory=dict)

    @property
    def spliced_mean(self) -> float:
        return statistics.fmean(self.scores[self.spliced[0] : self.spliced[1]])

    @property
    def learned_mean(self) -> float:
        return statistics.fmean(self.scores[self.learned[0] : self.learned[1]])

    def summary(self) -> dict[str, Any]:
        t = self.timings
        per_frame = {  # milliseconds
            "decode": 1000 * t.decode_s / t.frames,
            "encode": 1000 * t.encode_s / t.frames,
            "learn": 1000 * t.learn_s / t.steps,
        }
        total = sum(per_frame.values())
        return {
            "frames": self.frames,
            "steps": t.steps,
            "fps": 1000 / total,  # one frame through all three stages, as a live feed would go
            "ms_per_frame": per_frame,
            "share": {stage: ms / total for stage, ms in per_frame.items()},
            "anomaly": {
                "learned_mean": self.learned_mean,
                "spliced_mean": self.spliced_mean,
                "learned_max": max(self.scores[self.learned[0] : self.learned[1]]),
                "spliced_min": min(self.scores[self.spliced[0] : self.spliced[1]]),
                "spliced_max": max(self.scores[self.spliced[0] : self.spliced[1]]),
            },
            "timings": asdict(t) | {"encode_s": t.encode_s},
        }


def video(name: str) -> Path:
    """One of opencv-doc's sample videos (the package is fetched and unpacked once)."""
    (path,) = real_images.debian_files("opencv-doc", f"{VIDEOS}/{name}")
    return path


def jpeg_frames(path: Path, count: int, timings: Timings, *, step: int = 1) -> Iterator[bytes]:
    """``count`` frames, every ``step``-th, as JPEG bytes (the decode stage, timed)."""
    with av.open(str(path)) as container:
        began = time.perf_counter()
        for index, frame in enumerate(container.decode(video=0)):
            if index >= count * step:
                break
            if index % step:
                continue
            buffer = io.BytesIO()
            frame.to_image().save(buffer, "JPEG", quality=90)
            timings.decode_s += time.perf_counter() - began
            yield buffer.getvalue()
            began = time.perf_counter()


def encode(client: Image2SdrClient, frames: Iterator[bytes], timings: Timings) -> list[HtmSdr]:
    """Every frame's SDR, in order, over one reconnecting stream; a frame that fails stops the example."""
    sdrs = []
    began = time.perf_counter()
    for result in encode_frames(client, frames, window=16):
        if not isinstance(result, Encoding):
            raise RuntimeError(f"frame {result.request_id} was not encoded: {result}")
        timings.frames += 1
        sdrs.append(HtmSdr.from_sdr(result.sdr))
    timings.stream_s += time.perf_counter() - began
    return sdrs


def run(client: Image2SdrClient, *, frames: int = 120, splice: int = 12, passes: int = 3) -> Report:
    """Learn ``frames`` frames of the street ``passes`` times, then play them with ``splice`` foreign frames inside."""
    timings = Timings()
    clip = encode(client, jpeg_frames(video(LEARNED), frames, timings), timings)
    # Every 20th frame of the animation: a sequence of scenes the model has never seen follow one another.
    foreign = encode(client, jpeg_frames(video(SPLICED), splice, timings, step=SPLICE_STEP), timings)
    model = HtmModel(clip[0].size)
    timeline = clip * passes
    middle = frames // 2
    last = [*clip[:middle], *foreign, *clip[middle:]]
    scores = []
    learn_began = time.perf_counter()
    for sdr in [*timeline, *last]:
        scores.append(model.step(sdr))
    timings.learn_s = time.perf_counter() - learn_began
    timings.steps = len(scores)
    start = len(timeline) + middle
    return Report(
        scores,
        spliced=(start, start + splice),
        learned=(len(timeline), start),  # the last pass's frames before the splice
        timings=timings,
        frames={LEARNED: frames, SPLICED: splice, "passes": passes},
    )


def plot(report: Report, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(10, 3.2), dpi=120)
    axes.plot(report.scores, linewidth=0.9, color="#1f4e79")
    axes.axvspan(*report.spliced, color="#d62728", alpha=0.25, label=f"{SPLICED} spliced in")
    axes.axvline(report.learned[0], color="grey", linestyle=":", label="last pass begins")
    axes.set(xlabel="step (frame)", ylabel="anomaly score", ylim=(-0.02, 1.02))
    axes.set_title(f"brainblocks SequenceLearner on image2sdr SDRs of {LEARNED}", fontsize=10)
    axes.legend(loc="upper center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


@contextmanager
def local_server() -> Iterator[str]:
    """A server in this process on a free port, with the repository's models and a throwaway data dir."""
    from image2sdr.server.config import Config, HttpConfig, ServiceConfig  # noqa: PLC0415
    from image2sdr.server.serve import create_server  # noqa: PLC0415 - only without --address

    with tempfile.TemporaryDirectory() as data:
        grpc_only = {"service": ServiceConfig(port=0), "http": HttpConfig(enabled=False)}
        config = Config(data_dir=Path(data), models_dir=REPO / "models", **grpc_only)
        server = create_server(config)
        try:
            yield server.address
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="a running image2sdr server (default: start one here)")
    parser.add_argument("--token", default=None)
    parser.add_argument("--frames", type=int, default=120, help="frames of the street clip (default 120)")
    parser.add_argument("--splice", type=int, default=12, help="foreign frames spliced in (default 12, at most 13)")
    parser.add_argument("--passes", type=int, default=3, help="times the clip is learned before the test pass")
    parser.add_argument("--png", type=Path, default=Path("htm-anomaly.png"))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    server = local_server() if args.address is None else _given(args.address)
    with server as address, Image2SdrClient(address, token=args.token) as client:
        report = run(client, frames=args.frames, splice=args.splice, passes=args.passes)
    plot(report, args.png)
    summary = report.summary() | {"png": str(args.png)}
    if args.json is not None:
        args.json.write_text(json.dumps(summary | {"scores": report.scores, "spliced": report.spliced}, indent=1))
    _print(summary)
    return summary


@contextmanager
def _given(address: str) -> Iterator[str]:
    yield address


def _print(summary: dict[str, Any]) -> None:
    ms, share, anomaly = summary["ms_per_frame"], summary["share"], summary["anomaly"]
    print(f"frames: {summary['frames']}, learner steps: {summary['steps']}")
    print(f"video file -> anomaly score: {summary['fps']:.1f} frames/s (decode + encode + learn, per frame)")
    for stage in ("decode", "encode", "learn"):
        print(f"  {stage:<7} {ms[stage]:7.2f} ms per frame  {share[stage]:6.1%}")
    print(
        f"anomaly: learned frames mean {anomaly['learned_mean']:.3f} (max {anomaly['learned_max']:.3f}); "
        f"spliced frames mean {anomaly['spliced_mean']:.3f} (min {anomaly['spliced_min']:.3f}, "
        f"max {anomaly['spliced_max']:.3f})"
    )
    print(f"plot: {summary['png']}")


if __name__ == "__main__":
    main()
