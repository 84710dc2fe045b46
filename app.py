"""Streamlit page: the stored documents and the top passages for a query (the chat comes with its own issue)."""

import streamlit as st

from rag.embedding import embedders
from rag.errors import RagError
from rag.retrieval import search
from rag.settings import load_settings
from rag.store import Store

st.set_page_config(page_title="Policy Q&A", layout="wide")


@st.cache_resource
def open_store():
    settings = load_settings()
    return settings, Store.open(settings, embedders(settings))


try:
    settings, store = open_store()
except RagError as exc:
    st.error(f"{exc}\n\nRun `make ingest` first.")
    st.stop()

st.title("Policy documents")
documents = store.documents()
if not documents:
    st.info("No documents stored yet: run `make ingest`.")
st.dataframe(
    [{"title": d.title, "language": d.language, "published": d.published, "chunks": d.chunks} for d in documents],
    hide_index=True,
)
query = st.text_input("Search the documents")
if query.strip():
    for passage in search(store, settings, query).passages:
        with st.container(border=True):
            st.caption(f"{passage.rank}. {passage.chunk.title} — {passage.chunk.section or 'top'}")
            st.text(passage.chunk.text)
