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

Measured (this machine, 2 cores; ~80 s): neighbours' same-kind precision@10 0.472 (pooled
feature 0.537; flowers 0.37 vs 0.86); 84 class names recall@10 / MRR 0.83 / 0.73 before,
0.86 / 0.84 after; 72 synonyms 0.40 / 0.30 before, 0.88 / 0.87 after (docs/benchmarks.md).

Usage: python benchmarks/bench_meaning.py [--config FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
from image2sdr.server.serve import create_server
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
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
        finally:
            server.stop()
    print(f"\nTotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
