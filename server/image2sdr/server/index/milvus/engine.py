"""``MilvusEngine``: items kept and searched by Milvus: an embedded file, one server, or a cluster.

Where each part lives, by job: ``calls.py`` (the connection, retries, read levels, faults
told by their nature), ``schema.py`` (the collections, checked before anything is created,
and the layout migration), ``repair.py`` (the explicit repair of a missing collection), ``claims.py`` (same-bytes
adds decided one at a time across replicas),
``expressions.py`` (keys,
the filter index, expressions), ``rows.py`` (items read back), ``writes.py``
(versioned writes), ``search.py`` (search plans, copies, blends), ``listing.py``,
``concepts.py`` and ``thumbnails.py`` (the side collections).

Milvus is the source of truth here (no SQLite, no FAISS snapshot), so several
service replicas can share one collection set; only ``milvus.uri`` tells an
embedded file (milvus-lite) from a server or a cluster.

Collections, named ``<prefix>_<what>``:

    semantic   one row per item: key, id, semantic code, seq, concepts, metadata, sha256, phash
    visual     the visual code of each item version that has one, keyed "<key>.<seq>"
    phash      the 64-bit pHash of each item version that has one, as a binary vector, same keys

Three collections, not one, because Milvus 2.3 (the server tested here) allows one
vector field per collection. The primary key is a hash of the item id, never the
id itself: Milvus filter expressions have no escaping that both engines parse the
same (a newline or tab in an id broke milvus-lite's parser), and hex keys need none.

Codes are ``codes.pack_codes`` codes, padded to equal weight, searched with HAMMING:
for every SDR of at most ``equalize_bits`` active bits the Hamming order is then
the overlap order (see ``codes.py``), and an item not yet returned shares at most
``(|q| + equalize_bits - d_last) / 2`` bits with the query. Searches fetch more
candidates until the k-th exact overlap is above that bound (ties to the lower
``seq``: the item added or last replaced earlier), and score the few heavier SDRs
(flagged ``heavy``) exactly in a filtered search of their own.

Writes are versioned by ``seq``. A visual or pHash row belongs to one version of an
item, ``<key>.<seq>``; readers take only the rows whose seq is the one in the item's
semantic row. The side rows are written first and the semantic row last, so a
write that fails part-way leaves the stored item exactly as it was (the new side
rows are ignored), and nothing is acknowledged before Milvus has accepted all of
it. Rows of older versions are deleted after the commit, best effort.

    concepts   custom concepts (``put_concept``): each version of a document in chunks,
               keyed "<name key>.<seq>.<part>", and one meta row recording the layout version
    thumbs     the thumbnail of each item version that has one, base64 in chunks (Milvus
               2.3 has no bytes field), keyed "<key>.<seq>.<part>": a side row like the
               visual ones, written before the semantic row and read only for the current
               seq, so an add without a thumbnail leaves the item none. Collections of the
               release before thumbnails have no ``thumbs``; it is created at open, empty.
    points     the keypoints of each item version that has them (``keypoints.py``), base64,
               keyed "<key>.<seq>" like the visual rows; created by the first keypoints written.

Filters (``where``) are Milvus expressions on the semantic row's ``concepts`` JSON,
which holds, beside the concept terms and scores, a filter index: ``names`` maps a
hash of each concept name to its best confidence (``concepts["names"]["h<hash>"] >=
0.5``), ``meta`` lists a hash of each (key, value) pair (``json_contains_any(
concepts["meta"], [...])``). Filters name hashes, never the strings themselves: the
two engines cannot both address every key in a JSON path nor match every value
(Milvus 2.3.5 splits paths at ``][`` and refuses an empty key; milvus-lite 2.5
misses values with control characters), and hex needs no escaping, so no key or
value can change an expression. Every candidate is checked against the filter
itself too, so a hash collision could only cost time.
Items written by the release before this index existed (layout v1) are migrated in
place when the index opens (``_migrate``): their rows are rewritten with the filter
index, keeping their key, seq and everything else, and the meta row records v2.
The visual and pHash rows have no JSON field (Milvus 2.3 cannot add one): a filtered
search there is restricted to the passing items' keys when few pass, and otherwise
checks the filter on each candidate, with the same proof of exactness (see ``_plan``).
"""

from __future__ import annotations

from .calls import CONCEPTS, PHASH, THUMBS
from .concepts import MilvusConcepts
from .expressions import LAYOUT, item_key
from .listing import MilvusListing
from .thumbnails import MilvusThumbnails
from .writes import MilvusWrites

__all__ = ["CONCEPTS", "LAYOUT", "PHASH", "THUMBS", "MilvusEngine", "item_key"]


class MilvusEngine(MilvusWrites, MilvusListing, MilvusConcepts, MilvusThumbnails):
    """Items by id in Milvus collections, searchable by SDR overlap in each space. Thread-safe.

    Each part of the engine is a module of this package, one class each, stacked on
    ``calls.MilvusCalls``. Across replicas, concurrent adds of the same bytes under
    SKIP or REPLACE are decided one after the other (``claims.py``); near copies are
    serialised within one process only, and one after the other the second finds the
    first, whichever replica stored it (the check reads Strong).
    """
