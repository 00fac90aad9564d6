"""The Milvus engine: Milvus both stores and searches the items (``index.backend: milvus``).

``engine.MilvusEngine`` is the entry; its docstring says where each part lives.
"""

from .engine import CONCEPTS, LAYOUT, PHASH, THUMBS, MilvusEngine, item_key

__all__ = ["CONCEPTS", "LAYOUT", "PHASH", "THUMBS", "MilvusEngine", "item_key"]
