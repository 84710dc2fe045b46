"""What each vector index embeds for the stored chunks: the texts a bare-encode timing must encode."""

from __future__ import annotations

from collections.abc import Iterable


def index_texts(store, doc_ids: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Per index, the texts of its vectors for the documents `doc_ids` (all when None), in store order."""
    from rag.chunking import sentence_units
    from rag.store import index_entries

    wanted = [d.doc_id for d in store.documents()] if doc_ids is None else list(doc_ids)
    chunks = [c for doc_id in wanted for c in store.document_chunks(doc_id)]
    return {key: [text for c in chunks for _, text in index_entries(key, c, sentence_units(c.text, c.section))]
            for key in store.indexes}
