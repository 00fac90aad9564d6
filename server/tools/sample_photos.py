"""The scikit-image sample photos the project measures and calibrates on: one list for both.

``quantize_classifier.py`` calibrates the int8 classifier on them (in the export venv,
which cannot import ``benchmarks``); ``benchmarks/real_images.py`` encodes them.
Colour and greyscale photos of distinct scenes, by scikit-image's own names
(motorcycle_right is left out: it is the other half of a stereo pair, a near-duplicate of
motorcycle_left, which the benchmarks add by hand).
"""

SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
