"""Text → dense vector with all-MiniLM-L6-v2, run by onnxruntime.

The model was exported once by ``server/tools/export_models.py`` with mean
pooling and L2 normalisation inside the graph, so one onnxruntime call returns
the sentence-transformers vector (384 floats, unit length) for each text.

Texts are grouped by token count before batching, so a batch holds no padding:
no work is spent on padded positions, and a text's vector does not depend on
how long its batch neighbours are.  The batch size alone can still move the
last float32 bit of a few values (kernels block the work differently), which
almost never changes an SDR (measured in ``projection.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from ..errors import ModelsMissingError
from ..manifest import file_fingerprint

__all__ = ["MODEL_FILE", "MODEL_NAME", "TOKENIZER_FILE", "TextEmbedder"]

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_FILE = "minilm_l6_v2.onnx"
TOKENIZER_FILE = "tokenizer.json"
# sentence-transformers' max_seq_length for this model; longer input is cut.
MAX_TOKENS = 256


class TextEmbedder:
    """Unit-length 384-d vectors for texts; loads the model once, then reusable."""

    def __init__(self, models_dir: Path, *, batch_size: int = 64, threads: int = 0) -> None:
        model_path = models_dir / MODEL_FILE
        tokenizer_path = models_dir / TOKENIZER_FILE
        missing = [str(path) for path in (model_path, tokenizer_path) if not path.is_file()]
        if missing:
            raise ModelsMissingError(
                f"text model files missing: {', '.join(missing)}; run `make models` "
                f"(or point models_dir / IMAGE2SDR_MODELS_DIR at its output)"
            )
        self._batch_size = batch_size
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelsMissingError(f"cannot read {tokenizer_path}: {exc}; run `make models` again") from exc
        # The shipped file pads every text to 128 tokens and cuts at 128.  Batches
        # are grouped by token count (see ``embed``), so no padding is needed at
        # all, and the cut follows sentence-transformers (256).
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 lets onnxruntime use one per core
        options.inter_op_num_threads = 1  # a BERT graph is a chain; no parallel branches to run
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types are not public API
            raise ModelsMissingError(f"cannot load {model_path}: {exc}; run `make models` again") from exc
        outputs = self._session.get_outputs()
        self._output = outputs[0].name
        self.dimensions = int(outputs[0].shape[-1])
        self.fingerprint = file_fingerprint(models_dir, MODEL_FILE)
        logger.info("loaded %s from %s (%s)", MODEL_NAME, model_path, self.fingerprint)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One unit-length row per text, in input order; shape (len(texts), dimensions)."""
        result = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return result
        encodings = self._tokenizer.encode_batch(list(texts))
        by_length: dict[int, list[int]] = {}
        for index, encoding in enumerate(encodings):
            by_length.setdefault(len(encoding.ids), []).append(index)
        for indices in by_length.values():
            for start in range(0, len(indices), self._batch_size):
                chunk = indices[start : start + self._batch_size]
                result[chunk] = self._run([encodings[i] for i in chunk])
        return result

    def _run(self, encodings: Sequence[Encoding]) -> npt.NDArray[np.float32]:
        # All encodings of a chunk have the same length, so these stack exactly.
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (output,) = self._session.run([self._output], feeds)
        return np.asarray(output, dtype=np.float32)
