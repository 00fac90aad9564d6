"""The stored form of a custom concept: versioned JSON, read back exactly as it was written.

The index keeps the string (``ItemIndex.put_concept``) without looking into it; this module
is the only one that writes or reads it.  A document of another version, another SDR size,
or a damaged one is a ``ConceptDocumentError``: the library leaves such a concept out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from typing import Any

import numpy as np

from ..errors import InvalidSdrError
from ..index.values import SEMANTIC
from ..sdr import Sdr
from .concept import SPACES, BackgroundEstimate, ConceptBits, ConceptDocumentError, CustomConcept, Fit, FitReport

__all__ = ["DOCUMENT_VERSION", "from_document", "to_document"]

DOCUMENT_VERSION = 1


def to_document(concept: CustomConcept) -> str:
    """The JSON the index stores (versioned; read back by ``from_document``)."""
    document: dict[str, Any] = {
        "version": DOCUMENT_VERSION,
        "sdr_size": concept.bits[SEMANTIC].sdr.size,
        "active_bits": concept.active_bits,
        "spaces": {
            space: {"positions": bits.sdr.positions.tolist(), "weights": bits.weights.tolist()}
            for space, bits in concept.bits.items()
        },
        "fits": [
            {
                "spaces": list(fit.spaces),
                "weights": list(fit.weights),
                "threshold": fit.threshold,
                "scale": fit.scale,
            }
            for fit in concept.fits
        ],
        "report": {
            "positives": concept.report.positives,
            "negatives": concept.report.negatives,
            "positive_scores": list(concept.report.positive_scores),
            "negative_scores": list(concept.report.negative_scores),
        },
    }
    # Added in place (version 1 still): a document without them reads as fitted on the examples alone.
    background = concept.report.background
    if background is not None:
        document["background"] = dataclasses.asdict(background)
    if concept.suggestions:
        document["suggestions"] = [[item_id, confidence] for item_id, confidence in concept.suggestions]
    if concept.positive_ids or concept.negative_ids:
        document["example_ids"] = {"positives": list(concept.positive_ids), "negatives": list(concept.negative_ids)}
    return json.dumps(document, separators=(",", ":"))


def from_document(name: str, document: str, sdr_size: int) -> CustomConcept:
    """Read a stored concept; ConceptDocumentError if it is of another version, another SDR size, or damaged."""
    try:
        raw = json.loads(document)
    except (TypeError, ValueError) as exc:
        raise ConceptDocumentError(f"concept {name!r}: the stored document is not JSON ({exc})") from None
    if not isinstance(raw, dict) or "version" not in raw:
        raise ConceptDocumentError(f"concept {name!r}: the stored document has no version")
    if raw["version"] != DOCUMENT_VERSION:
        raise ConceptDocumentError(
            f"concept {name!r} was stored as document version {raw['version']!r}; this release reads "
            f"version {DOCUMENT_VERSION}: define it again"
        )
    try:
        return _read(name, raw, sdr_size)
    except ConceptDocumentError:
        raise
    except (KeyError, TypeError, ValueError, InvalidSdrError) as exc:
        raise ConceptDocumentError(f"concept {name!r}: the stored document is damaged ({exc!r})") from None


def _read(name: str, raw: dict[str, Any], sdr_size: int) -> CustomConcept:
    if raw["sdr_size"] != sdr_size:
        raise ConceptDocumentError(
            f"concept {name!r} was defined for SDRs of {raw['sdr_size']} bits; this server makes {sdr_size}: "
            "define it again"
        )
    spaces = raw["spaces"]
    if not isinstance(spaces, dict) or SEMANTIC not in spaces or not set(spaces) <= set(SPACES):
        raise ValueError(f"spaces must hold {SEMANTIC!r} and only {SPACES}")
    bits: dict[str, ConceptBits] = {}
    for space in SPACES:
        if space in spaces:
            positions = spaces[space]["positions"]
            weights = np.array(spaces[space]["weights"], dtype=np.float64)
            sdr = Sdr.from_positions(positions, sdr_size)
            if weights.shape != (sdr.active,) or not np.isfinite(weights).all() or (weights <= 0).any():
                raise ValueError(f"{space} weights must be one positive number per position")
            bits[space] = ConceptBits(sdr, weights)
    fits = tuple(_read_fit(fit, tuple(bits)) for fit in raw["fits"])
    expected = [tuple(bits)] + ([(SEMANTIC,)] if len(bits) > 1 else [])
    if [fit.spaces for fit in fits] != expected:
        raise ValueError(f"the fits must be for the spaces {expected}")
    report = raw["report"]
    positive = tuple(float(s) for s in report["positive_scores"])
    negative = tuple(float(s) for s in report["negative_scores"])
    if len(positive) != int(report["positives"]) or len(negative) != int(report["negatives"]):
        raise ValueError("the report's scores do not match its counts")
    active_bits = int(raw["active_bits"])
    counts = types.MappingProxyType({space: b.sdr.active for space, b in bits.items()})
    background = _read_background(raw.get("background"))
    fit_report = FitReport(len(positive), len(negative), positive, negative, fits[0].threshold, counts, background)
    suggestions = tuple((str(item_id), float(confidence)) for item_id, confidence in raw.get("suggestions", []))
    ids = raw.get("example_ids", {})
    positive_ids, negative_ids = (tuple(str(i) for i in ids.get(kind, [])) for kind in ("positives", "negatives"))
    if len(positive_ids) > len(positive) or len(negative_ids) > len(negative):
        raise ValueError("more example ids than examples")
    return CustomConcept(
        name, types.MappingProxyType(bits), fits, fit_report, active_bits, suggestions, positive_ids, negative_ids
    )


def _read_background(raw: dict[str, Any] | None) -> BackgroundEstimate | None:
    if raw is None:
        return None
    return BackgroundEstimate(
        int(raw["items"]),
        float(raw["flagged"]),
        float(raw["precision"]),
        float(raw["recall"]),
        float(raw["prevalence"]),
    )


def _read_fit(raw: dict[str, Any], spaces: tuple[str, ...]) -> Fit:
    subset = tuple(raw["spaces"])
    weights = tuple(float(weight) for weight in raw["weights"])
    threshold, scale = float(raw["threshold"]), float(raw["scale"])
    if not subset or not set(subset) <= set(spaces) or subset[0] != SEMANTIC:
        raise ValueError(f"a fit's spaces must be some of {spaces}, the semantic first")
    if len(weights) != len(subset) or not all(0.0 <= w <= 1.0 for w in weights) or abs(sum(weights) - 1) > 1e-9:
        raise ValueError("a fit's weights are one share in [0, 1] per space, summing to 1")
    if not math.isfinite(threshold) or not math.isfinite(scale) or scale <= 0:
        raise ValueError("a fit's threshold must be finite and its scale positive")
    return Fit(subset, weights, threshold, scale)
