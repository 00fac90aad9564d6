"""The int8 classifier: the exported float32 EfficientNet-Lite0, statically quantized by onnxruntime.

Called by ``export_models.py`` (``make models``); runs on its own too, with
onnxruntime, onnx, Pillow and scikit-image and no torch:
``python server/tools/quantize_classifier.py MODELS_DIR``.

How (``QUANTIZATION``, recorded in the manifest): QOperator (integer kernels,
which onnxruntime runs on VNNI; QDQ kept float kernels and gained nothing in
speed), int8 weights per output channel, uint8 activations calibrated by
min/max over scikit-image's sample photos as the service prepares them, with a
mirrored and a cropped copy of each (54 inputs, all shipped in the
scikit-image wheel, so this runs offline).  The stem convolution (it reads the
raw pixels), the head convolution and the final layer (they make the pooled
feature and the probabilities) stay in float32.  Percentile and entropy
calibration, or leaving the depthwise convolutions in float32, agreed less with
the float32 model on photos the calibration never saw.
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sample_photos import SKIMAGE_PHOTOS

CLASSIFIER_INT8_FILE = "efficientnet_lite0_int8.onnx"
# Kept in float32: the stem reads the raw pixels; the head and the final layer make the outputs.
FLOAT_NODES = ("/_conv_stem/Conv", "/_conv_head/Conv", "/_fc/Gemm")
CALIBRATION_PHOTOS = SKIMAGE_PHOTOS  # calibrated on (sample_photos.py: the benchmarks' list too)
QUANTIZATION = {
    "format": "QOperator",
    "weights": "int8, per channel",
    "activations": "uint8, min/max calibration",
    "calibration": "scikit-image sample photos, each also mirrored and cropped to 85 %",
    "float_nodes": list(FLOAT_NODES),
}
# As the service prepares an image (image2sdr.server.concepts.local.preprocess): short side
# to 256 (bicubic), centre crop 224, (x - 127) / 128, channels first.
RESIZE_SIDE, INPUT_SIDE, PIXEL_MEAN, PIXEL_STD = 256, 224, 127.0, 128.0


def quantize_classifier(source: Path, target: Path) -> None:
    """Write the int8 model of the float32 classifier at ``source`` to ``target``."""
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    class _Photos(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._inputs = ({"pixels": pixels[None]} for pixels in calibration_inputs())

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            return next(self._inputs, None)

    with tempfile.TemporaryDirectory() as scratch:
        folded = Path(scratch) / "folded.onnx"  # constants folded, shapes inferred: what the quantizer expects
        quant_pre_process(str(source), str(folded), skip_symbolic_shape=True)
        quantize_static(
            str(folded),
            str(target),
            _Photos(),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=list(FLOAT_NODES),
        )


def calibration_inputs() -> Iterator[npt.NDArray[np.float32]]:
    from PIL import Image  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415  (the photos ship in its wheel)

    for name in CALIBRATION_PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=90)  # as a caller would send it
        photo = Image.open(buffer).convert("RGB")
        width, height = photo.size
        cropped = photo.crop((width * 3 // 40, height * 3 // 40, width - width * 3 // 40, height - height * 3 // 40))
        for variant in (photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), cropped):
            yield _prepared(variant)


def _prepared(image: object) -> npt.NDArray[np.float32]:
    from PIL import Image  # noqa: PLC0415

    assert isinstance(image, Image.Image)
    width, height = image.size
    scale = RESIZE_SIDE / min(width, height)
    size = (max(INPUT_SIDE, round(width * scale)), max(INPUT_SIDE, round(height * scale)))
    left, top = (size[0] - INPUT_SIDE) // 2, (size[1] - INPUT_SIDE) // 2
    resized = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    crop = resized.crop((left, top, left + INPUT_SIDE, top + INPUT_SIDE))
    pixels = (np.asarray(crop, dtype=np.float32) - PIXEL_MEAN) / PIXEL_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python server/tools/quantize_classifier.py MODELS_DIR", file=sys.stderr)
        return 2
    models = Path(argv[1])
    quantize_classifier(models / "efficientnet_lite0.onnx", models / CLASSIFIER_INT8_FILE)
    print(f"wrote {models / CLASSIFIER_INT8_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
