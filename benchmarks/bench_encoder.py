"""`make bench`: encoder speed on this machine, every figure measured in this run.

Prints
- images/s for ``Encoder.encode_batch`` end to end with a warm term cache
  (``--photos`` real photos of ordinary size from the registries' packages:
  ``real_images.ordinary_photos``, 500 px JPEG q90; and scikit-image photos as 12 MP JPEGs),
- the same with the visual channel off (``visual.enabled: false``), and with
  neither it nor fingerprints (as before issue 11), timed in alternation with the
  default in this run, and the drops,
- the per-image time of each stage and its share (decode, inference, term
  lookup, merge, appearance: fingerprint + visual SDR projection),
- ms per cold term SDR (a fresh cache: one term per call, and batched),
- merges/s for 10 terms x 328 bits in 16384, beside a straight Python port of
  the 2018 prototype's insertion algorithm, measured in the same run;
- the int8 classifier (``concepts.local.precision: int8``) against fp32 over the
  real photos the registries ship (``real_images``: scikit-image, darknet, MATE,
  each also altered five ways): top-1 agreement, the mean overlap of the two SDRs
  of the same photo (semantic and visual, out of w), and images/s of each,
  alternating (``--no-precision`` skips it: it downloads two Debian packages once).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, VisualConfig, load_config
from image2sdr.server.encoder import Encoder, Encoding
from image2sdr.server.encoder import decoding as encoder_module  # where fingerprints are made
from image2sdr.server.merge import Merger, WeightedSdr
from image2sdr.server.sdr import Sdr

sys.path.insert(0, str(Path(__file__).parent))
from prototype_merge import prototype_merge

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry")


def photo_pixels() -> list[np.ndarray]:
    pixels = []
    for name in PHOTOS:
        if name == "motorcycle_left":
            pixels.append(skdata.stereo_motorcycle()[0])
        else:
            pixels.append(getattr(skdata, name)())
    return pixels


def jpeg(pixels: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    image = Image.fromarray(pixels).convert("RGB")
    if size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def median_rate(run: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def bench_encode(
    encoder: Encoder, images: list[bytes], total: int, batch: int, repeats: int
) -> tuple[float, list[Encoding]]:
    stream = [images[i % len(images)] for i in range(total)]
    encoder.encode_batch(images)  # warm the term cache and the thread pools
    kept: list[Encoding] = []

    def run() -> int:
        kept.clear()
        for start in range(0, total, batch):
            for result in encoder.encode_batch(stream[start : start + batch]):
                if isinstance(result, Exception):
                    raise result
                kept.append(result)
        return total

    return median_rate(run, repeats), kept


def print_stage_shares(encodings: list[Encoding]) -> None:
    stages = {
        "decode": [e.timings.decode_ms for e in encodings],
        "inference": [e.timings.concepts_ms for e in encodings],
        "term lookup": [e.timings.terms_ms for e in encodings],
        "merge": [e.timings.merge_ms for e in encodings],
        "appearance": [e.timings.appearance_ms for e in encodings],
    }
    total = sum(sum(values) for values in stages.values())
    print("  stage         ms/image (median)   share of summed stage time")
    for name, values in stages.items():
        print(f"  {name:<13} {statistics.median(values):>8.3f}            {100 * sum(values) / total:5.1f} %")
    print("  (decode runs on image.decode_threads threads and inference on all cores,")
    print("   so their wall-clock cost per image is lower than the per-image figures)")


def bench_appearance_cost(
    config: Config, on: Encoder, images: list[bytes], *, total: int, batch: int, repeats: int
) -> dict[str, float]:
    """images/s with the visual channel on, off, and with neither it nor fingerprints (as before issue 11).

    Runs alternate, so machine noise hits all three alike.  The last has no switch in the
    service (every image gets its fingerprint): it is timed with the fingerprint function
    swapped for one that does nothing, which only a benchmark may do.
    """
    off = Encoder.from_config(config.model_copy(update={"visual": VisualConfig(enabled=False)}))
    rates: dict[str, list[float]] = {"on": [], "off": [], "neither": []}
    for _ in range(repeats):
        for label, encoder in (("neither", off), ("off", off), ("on", on)):
            if label == "neither":
                with _no_fingerprints():
                    rate, _ = bench_encode(encoder, images, total, batch, 1)
            else:
                rate, _ = bench_encode(encoder, images, total, batch, 1)
            rates[label].append(rate)
    off.close()
    return {label: statistics.median(values) for label, values in rates.items()}


@contextlib.contextmanager
def _no_fingerprints() -> Iterator[None]:
    saved = encoder_module.fingerprint
    encoder_module.fingerprint = lambda data, image: None  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        encoder_module.fingerprint = saved


def bench_cold_terms(config: Config, words: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        cold = Encoder.from_config(config.model_copy(update={"data_dir": Path(scratch)}))
        half = len(words) // 2
        started = time.perf_counter()
        for word in words[:half]:
            cold.term_sdr(word)
        single_ms = (time.perf_counter() - started) * 1000 / half
        started = time.perf_counter()
        cold.term_source.term_sdrs(words[half:])
        batched_ms = (time.perf_counter() - started) * 1000 / (len(words) - half)
        cold.close()
    return single_ms, batched_ms


def bench_merge(repeats: int) -> tuple[float, float]:
    rng = np.random.default_rng(2018)
    terms = [
        WeightedSdr(Sdr.trusted(np.sort(rng.choice(16384, 328, replace=False)), 16384), float(rng.uniform(0.5, 1.0)))
        for _ in range(10)
    ]
    merger = Merger(16384, (128, 128), seed=42, normalization="none")
    ours = median_rate(lambda: _repeat(lambda: merger.merge(terms, 328), 20_000), repeats)
    plain = [(t.sdr.positions.tolist(), t.weight) for t in terms]
    seeded = random.Random(42)
    theirs = median_rate(lambda: _repeat(lambda: prototype_merge(plain, 16384, 0.02, seeded), 5), repeats)
    return ours, theirs


def _repeat(call: Callable[[], object], times: int) -> int:
    for _ in range(times):
        call()
    return times


def bench_precision(config: Config, batch: int, repeats: int) -> None:
    """int8 against fp32: what the classifier's answers, the SDRs and the speed become."""
    import real_images  # noqa: PLC0415  (fetches two Debian packages once)

    photos = list(real_images.photos().values())
    images = photos + [real_images.alter(data, name) for data in photos for name in real_images.ALTERATIONS]
    local = config.concepts.local
    encoders = {
        precision: Encoder.from_config(
            config.model_copy(
                update={
                    "concepts": config.concepts.model_copy(
                        update={"local": local.model_copy(update={"precision": precision})}
                    )
                }
            )
        )
        for precision in ("fp32", "int8")
    }
    found = {precision: _encode_all(encoder, images, batch) for precision, encoder in encoders.items()}
    top1 = {precision: _top1(encoder, images) for precision, encoder in encoders.items()}
    agree = float(np.mean(top1["fp32"] == top1["int8"]))
    semantic = [a.sdr.overlap(b.sdr) for a, b in zip(found["fp32"], found["int8"], strict=True)]
    visual = [
        a.visual.overlap(b.visual)
        for a, b in zip(found["fp32"], found["int8"], strict=True)
        if a.visual is not None and b.visual is not None
    ]
    rates: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(repeats):
        for precision, encoder in encoders.items():
            rates[precision].append(bench_encode(encoder, images[:48], len(images), batch, 1)[0])
    for encoder in encoders.values():
        encoder.close()
    w = config.sdr.active_bits
    print(f"\nint8 classifier against fp32, {len(images)} real photos ({len(photos)} and five alterations of each):")
    print(f"  {100 * agree:8.1f} %  top-1 ImageNet class agreement")
    print(f"  {statistics.mean(semantic):8.1f}    mean semantic SDR overlap of a photo's two SDRs, of {w}")
    print(f"  {statistics.mean(visual):8.1f}    mean visual SDR overlap, of {w}")
    fp32, int8 = statistics.median(rates["fp32"]), statistics.median(rates["int8"])
    print(f"  {fp32:8.1f} images/s fp32, {int8:.1f} int8 ({int8 / fp32:.2f} x; {repeats} alternating runs)")


def _encode_all(encoder: Encoder, images: list[bytes], batch: int) -> list[Encoding]:
    found: list[Encoding] = []
    for start in range(0, len(images), batch):
        for result in encoder.encode_batch(images[start : start + batch]):
            if isinstance(result, Exception):
                raise result
            found.append(result)
    return found


def _ordinary(count: int) -> list[bytes]:
    import real_images  # noqa: PLC0415  (fetches Debian packages once)
    from bench_dupes import originals  # noqa: PLC0415

    return list(real_images.ordinary_photos(originals(), count).values())


def _top1(encoder: Encoder, images: list[bytes]) -> np.ndarray:
    from image2sdr.server.imaging import decode_image  # noqa: PLC0415

    source = encoder.concept_source
    assert isinstance(source, LocalConceptSource)
    pixels = np.stack([source.prepare(decode_image(data, encoder.config.image, 256)).pixels for data in images])
    return np.concatenate([source.infer(pixels[i : i + 16])[0].argmax(1) for i in range(0, len(pixels), 16)])


def vocabulary() -> list[str]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "wordsim353.tsv"
    words: list[str] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[0] and not parts[0].startswith("#") and parts[0].lower() != "word 1":
                words.extend(parts[:2])
    words = list(dict.fromkeys(w.lower() for w in words))
    return words[:300] if len(words) >= 100 else [f"term {i}" for i in range(300)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--images", type=int, default=480, help="images per timed run")
    parser.add_argument("--batch", type=int, default=16, help="images per encode_batch call")
    parser.add_argument("--photos", type=int, default=240, help="distinct real photos of ordinary size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is printed")
    parser.add_argument("--no-precision", action="store_true", help="skip the int8 / fp32 comparison")
    parser.add_argument("--only-precision", action="store_true", help="only the int8 / fp32 comparison")
    args = parser.parse_args()
    if args.only_precision:
        with tempfile.TemporaryDirectory() as scratch:
            bench_precision(load_config(args.config).model_copy(update={"data_dir": Path(scratch)}), args.batch, 3)
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        config = load_config(args.config)
        config = config.model_copy(update={"data_dir": Path(scratch)})
        print(f"image2sdr encoder benchmark  ({config.sdr.size} bits, w = {config.sdr.active_bits})")
        encoder = Encoder.from_config(config)
        pixels = photo_pixels()
        small = _ordinary(args.photos)
        large = [jpeg(p, (4000, 3000)) for p in pixels]

        rate, encodings = bench_encode(encoder, small, args.images, args.batch, args.repeats)
        print(f"\nencode, warm term cache, {len(small)} real photos (500 px JPEG q90), batch {args.batch}:")
        print(f"  {rate:8.1f} images/s  (median of {args.repeats} runs of {args.images} images)")
        print_stage_shares(encodings)

        rates = bench_appearance_cost(config, encoder, small, total=args.images, batch=args.batch, repeats=args.repeats)
        on, off, neither = rates["on"], rates["off"], rates["neither"]
        print(f"\nappearance cost, the same photos, {args.repeats} alternating runs each (medians):")
        print(f"  {on:8.1f} images/s  visual SDR + fingerprint (visual.enabled: true, the default)")
        print(f"  {off:8.1f} images/s  fingerprint only (visual.enabled: false)")
        print(f"  {neither:8.1f} images/s  neither (as before issue 11)")
        print(f"  {100 * (1 - on / off):8.1f} %  drop from the visual channel (goal: at most 10 %)")
        print(f"  {100 * (1 - on / neither):8.1f} %  drop from both")

        rate_large, _ = bench_encode(encoder, large, max(args.images // 4, args.batch), args.batch, args.repeats)
        print(f"\nencode, warm term cache, scikit-image photos as 12 MP JPEGs (4000x3000), batch {args.batch}:")
        print(f"  {rate_large:8.1f} images/s")
        encoder.close()

    single_ms, batched_ms = bench_cold_terms(config, vocabulary())
    print("\ncold term SDR (empty cache, local provider):")
    print(f"  {single_ms:8.2f} ms per term, one term per call")
    print(f"  {batched_ms:8.2f} ms per term, batched")

    if not args.no_precision:
        with tempfile.TemporaryDirectory() as scratch:
            bench_precision(config.model_copy(update={"data_dir": Path(scratch)}), args.batch, args.repeats)

    ours, theirs = bench_merge(args.repeats)
    print("\nmerge, 10 terms x 328 bits in 16384 (one core):")
    print(f"  {ours:10.0f} merges/s  image2sdr (numpy, seeded tie-break)")
    print(f"  {theirs:10.1f} merges/s  2018 prototype's insertion algorithm, Python port")
    print(f"  {ours / theirs:10.0f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
