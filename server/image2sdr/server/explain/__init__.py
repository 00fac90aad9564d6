"""Explanations: occlusion heatmaps of a concept, a custom concept or a match (no gRPC here)."""

from .explainer import WORK_PIXELS, WORK_SIDE, Explanation, explain, working_image, working_size
from .occlusion import MAX_CELLS, Grid, heatmap, occluded, plan_grid
from .overlay import render
from .targets import WIDE, ConceptTarget, EncodingTarget, Target, custom_target, like_target, sends_bytes

__all__ = [
    "MAX_CELLS",
    "WIDE",
    "WORK_PIXELS",
    "WORK_SIDE",
    "ConceptTarget",
    "EncodingTarget",
    "Explanation",
    "Grid",
    "Target",
    "custom_target",
    "explain",
    "heatmap",
    "like_target",
    "occluded",
    "plan_grid",
    "render",
    "sends_bytes",
    "working_image",
    "working_size",
]
