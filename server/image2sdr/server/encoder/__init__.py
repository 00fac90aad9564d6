"""The encoder: image bytes -> concepts -> term SDRs -> one merged SDR, and how the image looks.

``Encoder`` ties the stages together and knows nothing of gRPC.  Its
providers are injected (``ConceptSource``, ``TermSource``), so a remote
service can replace either stage; ``Encoder.from_config`` builds the embedded
offline defaults.  Batches are the unit of work: images decode on a thread
pool, the classifier sees the whole batch in one call, every distinct term of
the batch is looked up once, and each image then merges on its own;
``encode_many`` forms such batches from images with options of their own.
A bad image fails only its own slot in a batch, whatever goes wrong with it;
a failure of a whole stage (the classifier, a term provider) fails the images
waiting on it, each in its own slot, and never the call that carries them.

Every image also gets its fingerprint (SHA-256 of the bytes, pHash of the
pixels) and, unless ``visual.enabled`` is off, its visual SDR: the local
classifier's pooled feature projected by ``appearance``.  With the local
concept provider one inference gives both the concepts and the feature; with
Clarifai the local classifier runs once more per image, for the feature alone.
``visual_share`` > 0 gives the merged SDR's first places to the visual SDR's
strongest bits (``merge``).  An image whose encoding will be stored
(``EncodeOptions.thumbnail``, set by the service for ``add_to_index``) also gets
a small thumbnail when ``index.thumbnails`` is above 0 (``thumbnails``), made
on the decode threads from the image already decoded, for the index to keep;
queries, examples and Explain's variants do not pay its ~3 ms.

With ``concepts.nsfw`` the provider gives its ``max_concepts`` as ever and the
"nsfw"/"sfw" pair comes on top (``ConceptUse.label``): reported and stored, never
merged, so the SDR is the one the provider's concepts give without the pair.

The package by job: ``values`` (what it takes and gives), ``settings`` (a request's
options against the config), ``providers`` (building the providers from config),
``decoding`` (the decode threads' work: pixels, fingerprint, thumbnail) and
``pipeline`` (``Encoder`` itself).
"""

from .pipeline import Encoder
from .values import ConceptUse, EncodeOptions, Encoding, Outcome, StageTimings

__all__ = ["ConceptUse", "EncodeOptions", "Encoder", "Encoding", "Outcome", "StageTimings"]
