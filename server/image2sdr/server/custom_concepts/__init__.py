"""Custom concepts: notions taught by a handful of example images, kept as SDRs, with no training run.

"Concept" alone means the classifier's concepts (``concepts/``: image -> names); a *custom*
concept is one a caller defines from examples ("storefront"), and this package is all of it:

    concept.py   CustomConcept, Example, Fit, FitReport: the value, and how it scores one image
    fit.py       define(): the bits, space weights, threshold and scale from the examples (the method)
    background.py  the stored collection as background: the threshold moved there, what it flags
    scoring.py   ConceptSet: every concept scored against images in one sparse product per space
    document.py  the stored JSON (versioned): to_document, from_document
    library.py   ConceptLibrary: the definitions kept in the index, a copy in step across replicas
"""

from .concept import (
    MIN_POSITIVES,
    BackgroundEstimate,
    ConceptBits,
    ConceptDocumentError,
    CustomConcept,
    Example,
    Fit,
    FitReport,
)
from .document import DOCUMENT_VERSION, from_document, to_document
from .fit import define
from .library import ConceptLibrary, Defined, Detection
from .scoring import ConceptSet

__all__ = [
    "DOCUMENT_VERSION",
    "MIN_POSITIVES",
    "BackgroundEstimate",
    "ConceptBits",
    "ConceptDocumentError",
    "ConceptLibrary",
    "ConceptSet",
    "CustomConcept",
    "Defined",
    "Detection",
    "Example",
    "Fit",
    "FitReport",
    "define",
    "from_document",
    "to_document",
]
