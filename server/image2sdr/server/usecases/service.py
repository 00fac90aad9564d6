"""``UseCases``: what the service does, one method per call, in the core's own types (no transport here).

Both edges (``grpc_api``, ``http_api``) convert their requests with ``messages`` and call
these methods; each takes plain values (the requests of the use-case modules) and returns
the core's values, raising the core's errors (``errors``), which the edges report.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Config
from ..custom_concepts import ConceptLibrary, Defined
from ..encoder import Encoder
from ..explain import Explanation
from ..index.item_index import ItemIndex
from ..index.values import Filter, ItemPage
from ..maps.jobs import MapJobs, MapStatus
from ..queries import QueryBuilder
from ..sdr import Sdr
from ..vocabulary import Vocabulary
from . import custom_concepts, duplicates, explanations, items, maps, search, terms
from . import encode as encoding
from .context import NO_DEADLINE, CallContext
from .health import Health
from .info import ServiceInfo, info
from .parts import Parts
from .slots import LongCalls

__all__ = ["UseCases"]


class UseCases:
    def __init__(self, config: Config, encoder: Encoder, index: ItemIndex, vocabulary: Vocabulary) -> None:
        library = ConceptLibrary(index, config)
        queries = QueryBuilder(encoder.term_source, encoder.merger)
        self.parts = Parts(config, encoder, index, vocabulary, library, queries)
        self.config = config
        # A map's PNG rides in one GetMap answer, beside its cells: leave them 1 MiB.
        self.maps = MapJobs(config.maps, max_png_bytes=config.service.max_message_bytes - (1 << 20))
        self.health = Health()
        # Explain, DefineConcept with images and CreateMap hold a worker for seconds: a share of them.
        self.long_calls = LongCalls(config.service.long_calls)

    def close(self) -> None:
        """Stop the map jobs (they read the index, which closes after this)."""
        self.maps.close()

    # -- encode and store ---------------------------------------------------------

    def encode(self, request: encoding.EncodeRequest) -> encoding.Encoded:
        return encoding.encode(self.parts, request)

    def encode_batch(self, requests: Sequence[encoding.EncodeRequest]) -> list[encoding.Encoded | Exception]:
        return encoding.encode_batch(self.parts, requests)

    def encode_only(self, requests: Sequence[encoding.EncodeRequest]) -> encoding.EncodedBatch:
        """``encode_batch`` without the storing, which ``EncodedBatch.store`` does (a stream overlaps the two)."""
        return encoding.encode_only(self.parts, requests)

    def encode_text(self, text: str) -> tuple[str, Sdr]:
        return terms.encode_text(self.parts, text)

    def similar_terms(self, sdr: Sdr | None, k: int) -> list[tuple[str, int]]:
        return terms.similar_terms(self.parts, sdr, k)

    # -- search -------------------------------------------------------------------

    def find_similar(self, request: search.SimilarRequest) -> search.SimilarAnswer:
        return search.find_similar(self.parts, request)

    def find_duplicates(self, request: duplicates.DuplicatesRequest) -> duplicates.DuplicatesAnswer:
        return duplicates.find_duplicates(self.parts, request)

    # -- items ----------------------------------------------------------------------

    def get_item(self, item_id: str) -> items.StoredItem:
        return items.get_item(self.parts, item_id)

    def remove_item(self, item_id: str) -> None:
        items.remove_item(self.parts, item_id)

    def items_exist(self, ids: Sequence[str]) -> list[bool]:
        return items.items_exist(self.parts, ids)

    def list_items(self, page_size: int, page_token: str, where: Filter | None = None) -> ItemPage:
        return items.list_items(self.parts, page_size, page_token, where)

    # -- custom concepts --------------------------------------------------------------

    def define_concept(self, request: custom_concepts.DefineRequest, call: CallContext = NO_DEADLINE) -> Defined:
        if not any(isinstance(e, custom_concepts.ExampleImage) for e in (*request.positives, *request.negatives)):
            return custom_concepts.define_concept(self.parts, request, call)  # stored items only: a read and a fit
        with self.long_calls.slot("DefineConcept"):
            return custom_concepts.define_concept(self.parts, request, call)

    def get_concept(self, name: str) -> Defined:
        return custom_concepts.get_concept(self.parts, name)

    def list_concepts(self) -> list[Defined]:
        return custom_concepts.list_concepts(self.parts)

    def remove_concept(self, name: str) -> None:
        custom_concepts.remove_concept(self.parts, name)

    # -- maps, explanations, info -------------------------------------------------------

    def create_map(self, asked: maps.MapAsked) -> MapStatus:
        with self.long_calls.slot("CreateMap"):  # it reads every item the map holds before queueing the job
            return maps.create_map(self.parts, self.maps, asked)

    def get_map(self, job_id: str) -> MapStatus:
        return maps.get_map(self.maps, job_id)

    def explain(self, request: explanations.ExplainRequest, call: CallContext = NO_DEADLINE) -> Explanation:
        with self.long_calls.slot("Explain"):
            return explanations.explain_image(self.parts, request, call)

    def info(self) -> ServiceInfo:
        return info(self.parts)
