"""The chat page. Layout only: every behaviour it shows lives in `rag/` (answers, rendering, uploads, feedback)."""

from __future__ import annotations

import streamlit as st

from rag import feedback, render
from rag.answer import stream_answer
from rag.documents import Answer, Filters
from rag.embedding import embedders
from rag.errors import RagError
from rag.ingest import Progress, remove_documents
from rag.settings import load_settings
from rag.store import Store
from rag.uploads import ingest_upload

SAMPLE_QUESTIONS = (
    "How many industrial datasets are to be built by 2027?",
    "What must SMEs do under the plan?",
    "Which departments issued the Implementation Opinions?",
    "到2027年要推广多少个典型应用场景？",
)

st.set_page_config(page_title="Policy Q&A", page_icon="📑", layout="wide")
st.markdown(render.PAGE_CSS, unsafe_allow_html=True)  # a constant stylesheet, no user data


@st.cache_resource(show_spinner="Loading the models and the store…")
def resources():
    settings = load_settings()
    return settings, Store.open(settings, embedders(settings, loaded=True))


try:
    settings, store = resources()
except RagError as exc:
    st.error(f"{exc}\n\nRun `make ingest` to build the store, then reload this page.")
    st.stop()

state = st.session_state
state.setdefault("messages", [])
documents = store.documents()

# ---- sidebar ------------------------------------------------------------------------------------------
with st.sidebar:
    st.header("Documents")
    if documents:
        st.dataframe([{"title": d.title, "language": d.language, "published": d.published or "—", "chunks": d.chunks}
                      for d in documents], hide_index=True, use_container_width=True)
    else:
        st.warning("No documents are stored yet: run `make ingest` or add a file below.")
    titles = {d.doc_id: d.title for d in documents}
    chosen = st.multiselect("Answer only from", options=list(titles), format_func=titles.get, key="doc_filter",
                            placeholder="all documents")
    k = st.slider("Passages to retrieve (k)", 1, 20, settings.k, key="k")
    answerers = ["extractive"] + (["llm"] if settings.llm_model else [])
    answerer = st.radio("Answerer", answerers, key="answerer",
                        format_func=lambda a: "Extractive (no "
                                              "LLM)" if a == "extractive" else f"LLM: {settings.llm_model}")
    if st.button("New chat", use_container_width=True):
        state.messages = []
        st.rerun()

    st.subheader("Add a document")
    upload = st.file_uploader("txt, md, pdf, html or docx", type=["txt", "md", "pdf", "html", "htm", "docx"],
                              key="upload")
    if upload is not None and st.button("Ingest", key="ingest_upload"):
        with st.status(f"Ingesting {upload.name}…", expanded=True) as status:
            bar = st.progress(0.0)
            try:
                outcome = ingest_upload(upload.name, upload.getvalue(), settings, store, progress=Progress(
                    on_change=lambda p: bar.progress(p.files_done / max(1, p.files_total))))
            except RagError as exc:
                status.update(label="Not ingested", state="error")
                st.error(str(exc))
            else:
                state.ingested = f"{outcome.status.capitalize()}: {outcome.doc_id} ({outcome.chunks} chunks)"
                st.rerun()  # so the document list above shows it
    if "ingested" in state:
        st.success(state.pop("ingested"))

    if documents:
        st.subheader("Remove a document")
        doomed = st.selectbox("Document", options=list(titles), format_func=titles.get, key="remove_choice",
                              index=None, placeholder="choose…")

        @st.dialog("Remove this document?")
        def confirm_removal(doc_id: str) -> None:
            st.write(f"“{titles[doc_id]}” and all its passages will be removed from the store.")
            if st.button("Remove", type="primary", key="confirm_remove"):
                remove_documents([doc_id], store)
                st.rerun()

        if doomed and st.button("Remove…", key="remove"):
            confirm_removal(doomed)


# ---- chat -----------------------------------------------------------------------------------------------
def show_answer(answer: Answer, index: int, question: str) -> None:
    for notice in answer.notices:
        st.warning(notice)
    if answer.abstained:
        st.info(answer.text)
        if answer.retrieved:
            with st.expander("Related passages (not sources)"):
                for passage in answer.retrieved:
                    st.caption(f"{passage.chunk.title} — {passage.chunk.section or 'beginning'}")
                    st.markdown(render.passage_html(passage.chunk.text), unsafe_allow_html=True)
    else:
        st.markdown(render.answer_html(answer.text), unsafe_allow_html=True)
        with st.expander(f"Sources ({len(answer.citations)})", expanded=False):
            for citation in answer.citations:
                st.caption(render.source_title(citation))
                located = render.cited_passage(answer, citation)
                text, start, end = located if located else (citation.quote, 0, len(citation.quote))
                st.markdown(render.passage_html(text, start, end), unsafe_allow_html=True)
    vote = st.feedback("thumbs", key=f"vote-{index}")
    if vote is not None and state.get(f"voted-{index}") != vote:
        state[f"voted-{index}"] = vote
        feedback.record(settings.data_dir / "feedback.jsonl", question, answer, "up" if vote == 1 else "down")


st.title("Policy Q&A")
if not state.messages:
    summary = ", ".join(f"“{d.title}”" for d in documents[:3]) + (" and more" if len(documents) > 3 else "")
    st.write(f"Ask about {len(documents)} stored document{'s' if len(documents) != 1 else ''}"
             + (f": {summary}." if documents else "."))
    columns = st.columns(2)
    for number, sample in enumerate(SAMPLE_QUESTIONS):
        if columns[number % 2].button(sample, key=f"sample-{number}", use_container_width=True):
            state.pending = sample
            st.rerun()

for index, message in enumerate(state.messages):
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.text(message["content"])
        else:
            show_answer(message["answer"], index, message["question"])

question = st.chat_input("Ask a question about the documents") or state.pop("pending", None)
if question:
    history = tuple(m["content"] for m in state.messages if m["role"] == "user")
    state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        try:
            stream = stream_answer(question, settings, store=store, history=history, k=k, answerer=answerer,
                                   filters=Filters(doc_ids=tuple(chosen)) if chosen else None)
            final: list[Answer] = []

            def pieces():
                for item in stream:
                    if isinstance(item, Answer):
                        final.append(item)
                    elif answerer == "llm":
                        yield item

            if answerer == "llm":
                placeholder = st.empty()
                with placeholder.container():
                    st.write_stream(pieces())
                placeholder.empty()
            else:
                for _ in pieces():
                    pass
            result = final[-1]
        except RagError as exc:
            st.error(str(exc))
        else:
            state.messages.append({"role": "assistant", "answer": result, "question": question})
            show_answer(result, len(state.messages) - 1, question)
