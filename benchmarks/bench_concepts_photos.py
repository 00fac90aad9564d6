"""`make bench-concepts` on photos (``bench_concepts.py --photos``): custom concepts taught by 10 + 10 photos, refined.

Photos: the 228 labelled real photos of ``labelled_photos.json`` (Debian's
``tuxpaint-stamps-default``, cut-outs flattened on white; see bench_meaning.py), every
one stored in a real server (gRPC on port 0, the FAISS index, the embedded models) by
Encode with add_to_index.  The stored collection is the background every definition
is fitted against, as a catalog's would be.

For each kind with at least ``MIN_KIND`` photos (bird 35, fruit 27, flower 26, other
hoofed mammal 18, vegetable 18, bovid 16), 5 draws (seeds 0-4) of 10 photos of the kind
and 10 of other kinds, given to DefineConcept as stored ids; the concept is judged on
every photo that is not an example: precision, recall, F1, false-positive rate and
average precision (the ranking alone).  A photo of a close kind (a horse for "bovid",
a carrot for "fruit") is a negative, as a catalog's tagger would be judged.

Anchors on the same examples, on the classifier's L2-normalised pooled feature (the
dense vector the visual SDR is projected from, read from the server's own encoder):
logistic regression (scikit-learn's, C = 1, class weights balanced; scikit-learn is
installed with openTSNE, a server dependency) and nearest centroid (nearer by cosine
to the positives' mean than to the negatives').

The same positives are also given alone (no negatives: the service's stand-ins, 32 stored
items, and the background carry the definition), judged on the same photos.

Refinement: ``ROUNDS`` rounds in which the definition's own suggestions (the
``SUGGESTIONS`` stored items it returned) are labelled by their kind and added as
positive or negative ids, and DefineConcept is called again; the anchors are refitted
on the same labelled photos.  After each round the concept is judged on the photos not
labelled so far.

Columns: P / R / F1 / FPR / AP, then (ours) the share of the stored collection the
definition's report says it flags, its estimated precision there, and its
leave-one-out F1 on the examples.  Means over kinds of the mean over draws; a draw whose
suggestions labelled every positive left is not judged (NaN, left out).

Measured (this machine, 2 cores shared; ~50 s, most of it storing the photos):

==========================  ===================================  ===================  ================
                            ours P / R / F1 (AP)                 logistic regression  nearest centroid
==========================  ===================================  ===================  ================
10 + 10 examples            0.55 / 0.79 / **0.58** (0.66)        0.50 (0.61)          0.26 (0.61)
10 positives, no negatives  0.58 / 0.75 / 0.57 (0.65)            -                    -
after 1 round of 10 labels  0.57 / 0.83 / **0.61** (0.66)        0.54 (0.63)          0.24 (0.62)
after 2 rounds              0.57 / 0.83 / **0.62** (0.69)        0.59 (0.66)          0.27 (0.65)
==========================  ===================================  ===================  ================

(anchors: F1, AP.)  By kind, F1 before -> after two rounds: bird 0.90 -> 0.94, flower
0.87 -> 0.98, fruit 0.60 -> 0.67, other hoofed mammal 0.44 -> 0.51, vegetable 0.29 ->
0.31, bovid 0.40 -> 0.33.  The goal (P >= 0.85 at R >= 0.85; F1 >= 0.92 after two rounds)
holds for birds and flowers (P 1.00, R 0.78-0.82 from the examples), not for the close
kinds, where the ranking itself does not separate them: the best threshold read off the
truth gives F1 0.43-0.71 there (0.95-0.97 for birds and flowers), and no threshold gives
P >= 0.85 at R >= 0.85 (best P there 0.19-0.39).  Before the threshold became the lower
of the examples' rule and the background's (``custom_concepts/background.py``): F1 0.54
/ 0.56 / 0.54 over the rounds (bird 0.73 -> 0.56: the PU bound set it above most birds).
The report's flagged share (11 %, 8-9 % after refinement) is a count on the stored
collection; its precision bound says 0.75 (0.96-0.98 after refinement) where 0.55 (0.57)
was measured, and the examples' leave-one-out F1 says 0.88 where 0.58.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).parent))
import real_images
from bench_concepts import judge
from bench_meaning import pooled_features

from image2sdr.server.config import Config
from image2sdr.server.custom_concepts import ConceptSet
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

MIN_KIND = 16  # kinds with fewer photos leave too few held out after 10 positives
POSITIVES = 10
NEGATIVES = 10
ROUNDS = 2
TIMEOUT = 300
COLUMNS = ("P", "R", "F1", "FPR", "AP", "flag", "estP", "LOO-F1")


@dataclass
class Stored:
    """The photos as the server stored them (id = position), with their kinds and pooled features."""

    kinds: list[str]
    sdrs: list[dict[str, Sdr]]  # semantic and visual, as Encode returned them
    features: npt.NDArray[np.float32]  # (n, 1280), L2-normalised


def store(server: Server, stub: pb_grpc.Image2SdrStub, config: Config) -> Stored:
    photos = real_images.labelled_photos()
    sdrs = []
    for number, photo in enumerate(photos):
        request = pb.EncodeRequest(image=photo.image, add_to_index=pb.AddToIndex(id=str(number)))
        answer = stub.Encode(request, timeout=TIMEOUT)
        if not answer.indexed or not answer.HasField("visual"):
            raise SystemExit(f"{photo.name} was not stored with a visual SDR")
        sdrs.append({"semantic": _sdr(answer.sdr), "visual": _sdr(answer.visual)})
    features = pooled_features(server.encoder, config, photos)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return Stored([photo.kind for photo in photos], sdrs, features)


def _sdr(message: pb.Sdr) -> Sdr:
    return Sdr.trusted(np.array(message.active, dtype=np.uint32), message.size)


# -- one draw, refined ------------------------------------------------------------------


def rounds(
    server: Server, stub: pb_grpc.Image2SdrStub, stored: Stored, kind: str, seed: int
) -> list[dict[str, np.ndarray]]:
    """Per round (0: the examples alone): each method's row of COLUMNS."""
    rng = np.random.default_rng([seed, sorted(set(stored.kinds)).index(kind)])
    truth = np.array([k == kind for k in stored.kinds])
    pos = [int(i) for i in rng.choice(np.flatnonzero(truth), POSITIVES, replace=False)]
    neg = [int(i) for i in rng.choice(np.flatnonzero(~truth), NEGATIVES, replace=False)]
    name = f"{kind} {seed}"
    alone = _without_negatives(server, stub, stored, name, pos, held=_held(truth, pos, neg), truth=truth)
    found = []
    for _ in range(ROUNDS + 1):
        request = pb.DefineConceptRequest(
            name=name,
            positives=[pb.ConceptExample(id=str(i)) for i in pos],
            negatives=[pb.ConceptExample(id=str(i)) for i in neg],
        )
        answer = stub.DefineConcept(request, timeout=TIMEOUT)
        held = _held(truth, pos, neg)
        found.append(_judged(server, stored, name, answer, held=held, truth=truth, examples=(pos, neg)))
        for suggestion in answer.suggestions:
            (pos if truth[int(suggestion.id)] else neg).append(int(suggestion.id))
    stub.RemoveConcept(pb.RemoveConceptRequest(name=name), timeout=TIMEOUT)
    found[0]["ours, no negatives"] = alone
    return found


def _held(truth: npt.NDArray[np.bool_], pos: list[int], neg: list[int]) -> npt.NDArray[np.intp]:
    return np.array(sorted(set(range(len(truth))) - set(pos) - set(neg)))


def _without_negatives(
    server: Server,
    stub: pb_grpc.Image2SdrStub,
    stored: Stored,
    name: str,
    pos: list[int],
    *,
    held: npt.NDArray[np.intp],
    truth: npt.NDArray[np.bool_],
) -> np.ndarray:
    """The same positives and no negatives (the service's stand-ins), judged on the same photos."""
    request = pb.DefineConceptRequest(name=f"{name} alone", positives=[pb.ConceptExample(id=str(i)) for i in pos])
    answer = stub.DefineConcept(request, timeout=TIMEOUT)
    judged = _judged(server, stored, request.name, answer, held=held, truth=truth, examples=(pos, []))["ours"]
    stub.RemoveConcept(pb.RemoveConceptRequest(name=request.name), timeout=TIMEOUT)
    return judged


def _judged(
    server: Server,
    stored: Stored,
    name: str,
    answer: pb.CustomConcept,
    *,
    held: npt.NDArray[np.intp],
    truth: npt.NDArray[np.bool_],
    examples: tuple[list[int], list[int]],
) -> dict[str, np.ndarray]:
    concept = server.cases.get_concept(name).concept  # the fitted concept, as Encode scores by it
    scores = ConceptSet([concept], stored.sdrs[0]["semantic"].size)
    values = scores.scores_many([stored.sdrs[i] for i in held])[:, 0]
    told = answer.background
    claims = [told.flagged, told.precision] if answer.HasField("background") else [np.nan, np.nan]
    ours = np.concatenate([judge(values >= concept.threshold, values, truth[held]), claims, [answer.fit.f1]])
    pos, neg = examples
    if not neg:  # the anchors need negatives
        return {"ours": ours}
    return {
        "ours": ours,
        "logistic regression": _padded(_logistic(stored, pos, neg, held, truth)),
        "nearest centroid": _padded(_centroid(stored, pos, neg, held, truth)),
    }


def _padded(row: np.ndarray) -> np.ndarray:
    return np.concatenate([row, [np.nan] * (len(COLUMNS) - len(row))])


def _logistic(
    stored: Stored, pos: list[int], neg: list[int], held: npt.NDArray[np.intp], truth: npt.NDArray[np.bool_]
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 (installed with openTSNE)

    rows = pos + neg
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    model.fit(stored.features[rows], truth[rows])
    margin = model.decision_function(stored.features[held])
    return judge(margin > 0, margin, truth[held])


def _centroid(
    stored: Stored, pos: list[int], neg: list[int], held: npt.NDArray[np.intp], truth: npt.NDArray[np.bool_]
) -> np.ndarray:
    features = stored.features[held]
    margin = features @ stored.features[pos].mean(axis=0) - features @ stored.features[neg].mean(axis=0)
    return judge(margin > 0, margin, truth[held])


# -- the run ---------------------------------------------------------------------------------


def measure(config: Config, repeats: int) -> None:
    started = time.perf_counter()
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
                stored = store(server, stub, config)
                print(f"{len(stored.kinds)} photos stored in {time.perf_counter() - started:.0f} s")
                counts = Counter(stored.kinds)
                kinds = [k for k, n in counts.most_common() if k != "other" and n >= MIN_KIND]
                results = {
                    kind: [rounds(server, stub, stored, kind, seed) for seed in range(repeats)] for kind in kinds
                }
        finally:
            server.stop()
    report(results, counts, repeats)
    print(f"\nTotal {time.perf_counter() - started:.0f} s")


def report(results: dict[str, list[list[dict[str, np.ndarray]]]], counts: Counter[str], repeats: int) -> None:
    print(f"\n{POSITIVES} positives + {NEGATIVES} negatives (other kinds), {repeats} draws; then {ROUNDS} rounds")
    print(f"{'':<40} " + " ".join(f"{c:>6}" for c in COLUMNS))
    for number in range(ROUNDS + 1):
        label = "examples" if number == 0 else f"after round {number}"
        for method in ("ours", "logistic regression", "nearest centroid"):
            print(f"{label + ': ' + method:<40} {_row(_mean_over_kinds(results, number, method))}")
        if number == 0:
            method = "ours, no negatives"
            print(f"{'  the same positives, no negatives':<40} {_row(_mean_over_kinds(results, 0, method))}")
    print("\nBy kind (ours, F1 before -> after each round; P / R at the examples)")
    for kind, draws in results.items():
        f1 = [np.nanmean([d[n]["ours"][2] for d in draws]) for n in range(ROUNDS + 1)]
        p, r = (np.nanmean([d[0]["ours"][c] for d in draws]) for c in (0, 1))
        print(f"  {kind:<22} {counts[kind]:>3} photos  F1 {' -> '.join(f'{v:.2f}' for v in f1)}   P {p:.2f} R {r:.2f}")


def _mean_over_kinds(results: dict[str, list[list[dict[str, np.ndarray]]]], number: int, method: str) -> np.ndarray:
    # NaN: the anchors' claim columns, and a draw whose refinement labelled every positive left.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_kind = [np.nanmean([d[number][method] for d in draws], axis=0) for draws in results.values()]
        return np.asarray(np.nanmean(per_kind, axis=0))


def _row(values: Sequence[float]) -> str:
    return " ".join(f"{v:6.2f}" if not np.isnan(v) else "     -" for v in values)
