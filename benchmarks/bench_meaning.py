"""`make bench-meaning`: do neighbours share a kind, and do words find their photos?

Photos: the 228 real photos of ``labelled_photos.json`` (Debian's
``tuxpaint-stamps-default``: animals, fruit, vegetables, flowers, vehicles, cut out on
a transparent background, flattened on white), labelled by kind by looking at each,
with the ImageNet class where one fits.  Every photo goes through a real server
(gRPC on port 0, the FAISS index, the embedded models): Encode with add_to_index.

- **Neighbours**: for every photo of a kind with at least ``MIN_KIND`` photos (not
  "other"), the share of its 10 nearest stored photos (FindSimilar by id, semantic
  space) of the same kind: precision@10, mean over photos.  Anchor: the same with
  the classifier's pooled feature (cosine nearest neighbours), computed from the
  same inference input by ``LocalConceptSource.features``.
- **Words**: for every ImageNet class name a photo is labelled with, FindSimilar by
  text with that name: recall@10 (a photo of that class is in the top 10) and MRR
  (1 / rank of the first such photo, 0 past k = 1000).  "before" is the same words
  as a concept expression, which ranks by SDR overlap alone (what text did before
  it also matched stored concept names); "after" is text.  The WordNet synonyms are
  measured too: each class's other lemmas ("basset hound") as text.

With ``--sweep`` it also tries, in process, the ways to merge the concepts that issue 24
suggested (``VARIANTS``: concepts kept, the confidence power, broad concepts down-weighted,
flip averaging, a visual share) and prints the same-kind precision of each.

Measured (this machine, 2 cores, 2026-12-07; ~60 s, ~140 s with the sweep), before (``--config``
with ``concepts.max_concepts: 10`` and ``sdr.confidence_power: 1.0``) -> after (the defaults):
neighbours' same-kind precision@10 0.472 -> 0.575 (pooled feature 0.537); 84 class names as
text recall@10 / MRR 0.86 / 0.84 -> 0.95 / 0.90; 72 synonyms 0.88 / 0.87 -> 0.96 / 0.91
(docs/benchmarks.md).

Usage: python benchmarks/bench_meaning.py [--config FILE] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).parent))
import real_images

from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, load_config
from image2sdr.server.encoder import Encoder
from image2sdr.server.imaging import decode_image
from image2sdr.server.merge import Merger, WeightedSdr
from image2sdr.server.serve import create_server
from image2sdr.server.terms.base import normalize_term
from image2sdr.server.vocabulary import synonym_names
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

K = 10
DEEP_K = 1000  # how far a word's rank is looked for (the service's max k)
MIN_KIND = 5  # kinds with fewer photos are stored (distractors) but not scored
TIMEOUT = 300


def store(stub: pb_grpc.Image2SdrStub, photos: Sequence[real_images.LabelledPhoto]) -> None:
    for number, photo in enumerate(photos):
        request = pb.EncodeRequest(image=photo.image, add_to_index=pb.AddToIndex(id=str(number)))
        if not stub.Encode(request, timeout=TIMEOUT).indexed:
            raise SystemExit(f"{photo.name} was not stored")


def scored(photos: Sequence[real_images.LabelledPhoto]) -> list[int]:
    counts = Counter(photo.kind for photo in photos)
    return [i for i, photo in enumerate(photos) if photo.kind != "other" and counts[photo.kind] >= MIN_KIND]


def neighbour_precision(stub: pb_grpc.Image2SdrStub, photos: Sequence[real_images.LabelledPhoto]) -> dict[str, float]:
    """Same-kind precision@10 of the SDR neighbours, per kind and over all scored photos ("all")."""
    shares: dict[str, list[float]] = {}
    for i in scored(photos):
        answer = stub.FindSimilar(pb.FindSimilarRequest(id=str(i), k=K), timeout=TIMEOUT)
        same = sum(photos[int(match.id)].kind == photos[i].kind for match in answer.matches)
        shares.setdefault(photos[i].kind, []).append(same / K)
    return _per_kind(shares)


def feature_precision(
    features: npt.NDArray[np.float32], photos: Sequence[real_images.LabelledPhoto]
) -> dict[str, float]:
    """The anchor: same-kind precision@10 of the pooled feature's cosine nearest neighbours."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    shares: dict[str, list[float]] = {}
    for i in scored(photos):
        nearest = np.argsort(-cosine[i], kind="stable")[:K]
        same = sum(photos[int(j)].kind == photos[i].kind for j in nearest)
        shares.setdefault(photos[i].kind, []).append(same / K)
    return _per_kind(shares)


def _per_kind(shares: dict[str, list[float]]) -> dict[str, float]:
    found = {kind: float(np.mean(values)) for kind, values in sorted(shares.items())}
    found["all"] = float(np.mean([value for values in shares.values() for value in values]))
    return found


def pooled_features(
    encoder: Encoder, config: Config, photos: Sequence[real_images.LabelledPhoto]
) -> npt.NDArray[np.float32]:
    """The classifier's pooled feature of each photo, from the server's own encoder (the same inference input)."""
    source = encoder.concept_source
    if not isinstance(source, LocalConceptSource):
        raise SystemExit("the anchor needs the local concept provider (its pooled feature)")
    found = source.features([decode_image(photo.image, config.image) for photo in photos])
    rows = []
    for photo, feature in zip(photos, found, strict=True):
        if isinstance(feature, Exception):
            raise SystemExit(f"{photo.name}: {feature}")
        rows.append(feature)
    return np.asarray(rows, dtype=np.float32)


Search = Callable[[str], list[str]]


def word_ranks(search: Search, queries: dict[str, set[int]]) -> tuple[float, float, dict[str, int]]:
    """recall@10, MRR and each word's rank (0: not in the top DEEP_K) over ``queries`` (word -> its photos)."""
    ranks: dict[str, int] = {}
    for word, wanted in sorted(queries.items()):
        found = search(word)
        ranks[word] = next((r + 1 for r, item in enumerate(found) if int(item) in wanted), 0)
    recall = float(np.mean([0 < rank <= K for rank in ranks.values()]))
    mrr = float(np.mean([1.0 / rank if rank else 0.0 for rank in ranks.values()]))
    return recall, mrr, ranks


def class_queries(photos: Sequence[real_images.LabelledPhoto]) -> dict[str, set[int]]:
    queries: dict[str, set[int]] = {}
    for i, photo in enumerate(photos):
        if photo.imagenet:
            queries.setdefault(photo.imagenet, set()).add(i)
    return queries


def synonym_queries(config: Config, classes: dict[str, set[int]]) -> dict[str, set[int]]:
    """Each class's other WordNet lemmas, each finding that class's photos ("basset hound" -> basset)."""
    found: dict[str, set[int]] = {}
    for lemma, names in synonym_names(config.models_dir).items():
        for name in names:
            if name in classes and lemma not in classes:
                found.setdefault(lemma, set()).update(classes[name])
    return found


def by_text(stub: pb_grpc.Image2SdrStub) -> Search:
    def search(word: str) -> list[str]:
        answer = stub.FindSimilar(pb.FindSimilarRequest(text=word, k=DEEP_K), timeout=TIMEOUT)
        return [match.id for match in answer.matches]

    return search


def by_overlap(stub: pb_grpc.Image2SdrStub) -> Search:
    def search(word: str) -> list[str]:
        expression = pb.ConceptExpression(all=[word])
        answer = stub.FindSimilar(pb.FindSimilarRequest(expression=expression, k=DEEP_K), timeout=TIMEOUT)
        return [match.id for match in answer.matches]

    return search


def report_words(stub: pb_grpc.Image2SdrStub, label: str, queries: dict[str, set[int]]) -> None:
    before = word_ranks(by_overlap(stub), queries)
    after = word_ranks(by_text(stub), queries)
    print(f"\n{label}: {len(queries)} words")
    print(f"  {'':<34} {'recall@10':>9} {'MRR':>6}")
    print(f"  {'before: SDR overlap alone':<34} {before[0]:>9.2f} {before[1]:>6.2f}")
    print(f"  {'after: text (stored concepts too)':<34} {after[0]:>9.2f} {after[1]:>6.2f}")
    misses = [f"{word} ({before[2][word]} -> {rank})" for word, rank in after[2].items() if not 0 < rank <= K]
    up, down = _moved(before[2], after[2])
    print(f"  ranks that rose (before -> after, 0: past {DEEP_K}): {', '.join(up) or 'none'}")
    print(f"  ranks that fell: {', '.join(down) or 'none'}")
    print(f"  still missed after: {', '.join(misses) or 'none'}")


def _moved(before: dict[str, int], after: dict[str, int]) -> tuple[list[str], list[str]]:
    """The words whose rank rose and those whose rank fell (0, not found, is the worst rank)."""
    worst = DEEP_K + 1
    up = [f"{w} ({before[w]} -> {r})" for w, r in after.items() if (r or worst) < (before[w] or worst)]
    down = [f"{w} ({before[w]} -> {r})" for w, r in after.items() if (r or worst) > (before[w] or worst)]
    return up, down


@dataclass(frozen=True)
class Variant:
    """One way to merge the classifier's concepts into SDRs, tried in process by ``--sweep``."""

    label: str
    max_concepts: int = 50
    power: float = 0.25  # sdr.confidence_power
    flip: bool = False  # classify the mirrored image too; concepts from the mean of the two logits
    visual_share: float = 0.0
    specificity: float = 0.0  # each weight times (ImageNet classes beneath the concept) ** -specificity


VARIANTS = (
    Variant("10 concepts, power 1 (before)", 10, 1.0),
    Variant("10 concepts, power 0.25", 10, 0.25),
    Variant("10 concepts, power 1, broad ones / n^0.5", 10, 1.0, specificity=0.5),
    Variant("50 concepts, power 1", 50, 1.0),
    Variant("50 concepts, power 0.5", 50, 0.5),
    Variant("50 concepts, power 0.25 (default)"),
    Variant("  + broad ones / n^0.25", specificity=0.25),
    Variant("  + flip averaging (x2 inference)", flip=True),
    Variant("  + visual_share 0.2", visual_share=0.2),
    Variant("  + visual_share 0.5", visual_share=0.5),
    Variant("100 concepts, power 0.25", 100),
)


def sweep(encoder: Encoder, config: Config, photos: Sequence[real_images.LabelledPhoto]) -> None:
    """Same-kind precision@10 of each ``Variant``, from one inference per photo (and one of its mirror image).

    In process, with the service's own classifier, roll-up, term SDRs and merge; the
    neighbours are ranked by overlap, ties to the lower index (the earlier stored), as
    FindSimilar ranks them.
    """
    source = encoder.concept_source
    if not isinstance(source, LocalConceptSource) or encoder.appearance is None:
        raise SystemExit("the sweep needs the local concept provider and the visual SDR")
    pixels = np.stack([source.prepare(decode_image(photo.image, config.image)).pixels for photo in photos])
    started = time.perf_counter()
    plain = _inferred(source, pixels)
    plain_s = time.perf_counter() - started
    mirrored = _inferred(source, np.ascontiguousarray(pixels[:, :, :, ::-1]))
    flip_s = time.perf_counter() - started - plain_s
    flipped = _mean_of_logits(plain[0], mirrored[0])
    print(
        f"\nSweep (in process): inference {plain_s:.1f} s for {len(photos)} photos, {flip_s:.1f} s more for the mirrors"
    )
    print(f"  {'variant':<42} " + " ".join(f"{kind[:7]:>7}" for kind in feature_precision(plain[1], photos)))
    for variant in VARIANTS:
        probabilities = flipped if variant.flip else plain[0]
        found = precision_of(variant_sdrs(encoder, source, variant, probabilities, plain[1]), photos)
        print(f"  {variant.label:<42} " + " ".join(f"{value:>7.3f}" for value in found.values()))


def _inferred(
    source: LocalConceptSource, pixels: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    parts = [source.infer(pixels[start : start + 16]) for start in range(0, len(pixels), 16)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([f for _, f in parts])


def _mean_of_logits(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """softmax of the mean logits, from two softmax outputs (log p is the logit less a per-row constant)."""
    logits = (np.log(np.maximum(first, 1e-12)) + np.log(np.maximum(second, 1e-12))) / 2
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float32)


def variant_sdrs(
    encoder: Encoder,
    source: LocalConceptSource,
    variant: Variant,
    probabilities: npt.NDArray[np.float32],
    features: npt.NDArray[np.float32],
) -> list[npt.NDArray[np.uint32]]:
    sdr = encoder.config.sdr
    merger = Merger(sdr.size, sdr.dimensions, sdr.tie_break_seed, sdr.normalization, variant.power)
    rollup = source.rollup
    beneath = dict(zip(rollup.names, rollup.matrix.sum(axis=0).tolist(), strict=True))
    visual_bits = round(variant.visual_share * sdr.active_bits)
    visual = encoder.appearance.rank(features, visual_bits) if visual_bits and encoder.appearance else None
    found = []
    for row, probability in enumerate(probabilities):
        weights: dict[str, float] = {}
        for concept in rollup.concepts(probability, variant.max_concepts, 0.0):
            weight = merger.concept_weight(concept.confidence) * beneath[concept.name] ** -variant.specificity
            weights.setdefault(normalize_term(concept.name), weight)  # the first of a term, as Encode merges
        terms = encoder.term_source.term_sdrs(list(weights))
        weighted = [WeightedSdr(term, w) for term, w in zip(terms, weights.values(), strict=True) if term is not None]
        merged = merger.merge(weighted, sdr.active_bits, None if visual is None else visual[row])
        found.append(merged.sdr.positions)
    return found


def precision_of(
    sdrs: Sequence[npt.NDArray[np.uint32]], photos: Sequence[real_images.LabelledPhoto]
) -> dict[str, float]:
    """Same-kind precision@10 of the SDRs' overlap neighbours, per kind and over all scored photos."""
    dense = np.zeros((len(sdrs), max(int(s.max()) for s in sdrs if s.size) + 1), dtype=np.float32)
    for row, positions in enumerate(sdrs):
        dense[row, positions] = 1.0
    overlap = dense @ dense.T
    np.fill_diagonal(overlap, -np.inf)
    shares: dict[str, list[float]] = {}
    for i in scored(photos):
        nearest = np.lexsort((np.arange(len(sdrs)), -overlap[i]))[:K]
        shares.setdefault(photos[i].kind, []).append(sum(photos[int(j)].kind == photos[i].kind for j in nearest) / K)
    return _per_kind(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--sweep", action="store_true", help="also try the merge variants in process (~30 s more)")
    args = parser.parse_args()
    config = load_config(args.config)
    started = time.perf_counter()
    photos = real_images.labelled_photos()
    kinds = Counter(photo.kind for photo in photos)
    print(f"{len(photos)} labelled photos, {len(kinds)} kinds: {dict(kinds.most_common())}")
    with tempfile.TemporaryDirectory() as data_dir:
        served = config.model_copy(
            update={
                "data_dir": Path(data_dir),
                "service": config.service.model_copy(update={"port": 0}),
                "http": config.http.model_copy(update={"enabled": False}),
            }
        )
        server = create_server(served)
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.Image2SdrStub(channel)
                store(stub, photos)
                print(f"stored in {time.perf_counter() - started:.0f} s")
                ours = neighbour_precision(stub, photos)
                anchor = feature_precision(pooled_features(server.encoder, config, photos), photos)
                print(f"\nNeighbours: same-kind precision@{K} ({len(scored(photos))} photos of kinds >= {MIN_KIND})")
                print(f"  {'kind':<22} {'SDR (service)':>13} {'pooled feature':>14}")
                for kind in ours:
                    print(f"  {kind:<22} {ours[kind]:>13.3f} {anchor[kind]:>14.3f}")
                classes = class_queries(photos)
                report_words(stub, "Class names (ImageNet, as the hierarchy names them)", classes)
                report_words(stub, "WordNet synonyms of those classes", synonym_queries(config, classes))
                if args.sweep:
                    sweep(server.encoder, config, photos)
        finally:
            server.stop()
    print(f"\nTotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
