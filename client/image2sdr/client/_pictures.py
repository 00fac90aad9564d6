"""The calls that answer with a picture: an occlusion heatmap (explain) and a map of stored items."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from image2sdr.v1 import image2sdr_pb2 as pb

from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout, read_image
from ._convert import encode_options_message, explanation_from_pb, filter_to_pb, map_job_from_pb, space_to_pb
from ._query import Filter
from ._types import Explanation, ImageSource, MapJob, Space

__all__ = ["PictureCalls"]


class PictureCalls(Connection):
    """Explain, CreateMap and GetMap as typed calls, and make_map to wait for one."""

    # -- explanations ----------------------------------------------------------------

    def explain(
        self,
        image: ImageSource,
        *,
        concept: str | None = None,
        custom_concept: str | None = None,
        like: str | None = None,
        space: Space = "semantic",
        patch: int | None = None,
        stride: int | None = None,
        max_concepts: int | None = None,
        min_confidence: float | None = None,
        sparsity: float | None = None,
        visual_share: float | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Explanation:
        """Which parts of the image give it exactly one target: an occlusion heatmap and its PNG.

        The target: a ``concept`` the image has (as ``encode`` names it; one it lacks is
        InvalidArgument, field ``concept``), a ``custom_concept`` (unknown: NotFound), or a
        stored item to compare with, ``like=id`` (the score is the overlap of the SDRs in
        ``space``, "semantic" or "visual"; unknown id: NotFound).  A grey square of
        ``patch`` pixels slides in steps of ``stride`` (None: the server's shares of the
        shorter side); a patch larger than the image is InvalidArgument (field ``patch``).
        The encode options shape the encodings behind a custom concept or ``like`` score.
        """
        targets = {"concept": concept, "custom_concept": custom_concept, "like": like}
        given = {name: value for name, value in targets.items() if value is not None}
        if len(given) != 1:
            raise ValueError("explain takes exactly one of concept=, custom_concept=, like=")
        request = pb.ExplainRequest(image=read_image(image), space=space_to_pb(space))
        ((kind, value),) = given.items()
        setattr(request, kind, value)
        if patch is not None:
            request.patch = patch
        if stride is not None:
            request.stride = stride
        options = encode_options_message(max_concepts, min_confidence, sparsity, visual_share, False)
        if options is not None:
            request.options.CopyFrom(options)
        return explanation_from_pb(self._call(self._stub.Explain, request, timeout))

    # -- maps --------------------------------------------------------------------------

    def create_map(
        self,
        *,
        ids: Sequence[str] | None = None,
        where: Filter | None = None,
        concept: str | None = None,
        space: Space = "semantic",
        columns: int = 0,
        rows: int = 0,
        cell_pixels: int = 0,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> MapJob:
        """Start laying stored items out on a grid by similarity; answers at once with the job (poll ``get_map``).

        The items: at most one of ``ids``, ``where`` (a ``Filter``) or ``concept`` (a
        custom concept's name: the items it finds present); none means every stored
        item. At most ``info().limits.max_map_items`` of them (more, or none:
        InvalidArgument naming the field). ``space``: "semantic" or "visual" (items
        without a visual SDR are left out and counted). ``columns``/``rows``: 0 for the
        smallest square; ``cell_pixels``: 0 lets the server pick (a map ~2048 px wide).
        """
        given = [name for name, value in (("ids", ids), ("where", where), ("concept", concept)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"create_map takes at most one of ids=, where=, concept=; got {', '.join(given)}")
        request = pb.CreateMapRequest(space=space_to_pb(space), columns=columns, rows=rows, cell_pixels=cell_pixels)
        if ids is not None:
            if isinstance(ids, str):
                raise TypeError("ids= takes a sequence of ids, not one string")
            request.ids.ids.extend(ids)
        elif where is not None:
            chosen = filter_to_pb(where)
            request.filter.CopyFrom(chosen if chosen is not None else pb.Filter())
        elif concept is not None:
            request.concept = concept
        return map_job_from_pb(self._call(self._stub.CreateMap, request, timeout))

    def get_map(self, id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> MapJob:
        """A map job's progress, and once done its cells and PNG (a failed one carries ``error``)."""
        return map_job_from_pb(self._call(self._stub.GetMap, pb.GetMapRequest(id=id), timeout))

    def make_map(
        self,
        *,
        poll_s: float = 0.25,
        progress: Callable[[MapJob], None] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        **choice: Any,
    ) -> MapJob:
        """``create_map`` (same keywords), then poll until it is done; a failed job raises its error.

        ``progress`` is called with each report while it runs; ``timeout`` applies per call.
        """
        job = self.create_map(timeout=timeout, **choice)
        while not job.finished:
            if progress is not None:
                progress(job)
            time.sleep(poll_s)
            job = self.get_map(job.id, timeout=timeout)
        if progress is not None:
            progress(job)
        if job.error is not None:
            raise job.error
        return job
