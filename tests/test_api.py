"""The HTTP API as other tools use it: real `rag api` processes on loopback ports, driven by clients nobody here
wrote (the `openai` package for answers, httpx for documents and tokens)."""

from __future__ import annotations

import os
import re

import httpx
import openai
import pytest
from conftest import CORPUS, run_rag
from support.api_server import start_api, stop_api
from support.openai_server import Reply, ScriptedChatServer

QUESTION = "How many industrial datasets are to be built by 2027?"
OPINIONS = "gmt-eight-ai-manufacturing-special-action"
TOKEN = "s3cret-token"
ZONES = b"# Pilot zones\n\nThe notice designates 17 robot pilot zones.\n\nEach zone reports monthly to the ministry.\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store of the seed corpus; every server of this module serves it with the same settings."""
    folder = tmp_path_factory.mktemp("api")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("RAG_API_TOKEN", "RAG_LLM_MODEL", "RAG_ANSWERER")}
    environment.update({"RAG_DATA_DIR": str(folder / "data"), "RAG_MULTILINGUAL_MODEL": "none",
                        "RAG_MAX_FILE_MB": "0.05"})  # 50 KB: above the corpus files, so a 413 costs little
    done = run_rag(environment, "ingest", str(CORPUS))
    assert done.returncode == 0, done.stderr
    return environment


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    process, url = start_api(env, tmp_path_factory.mktemp("api-log") / "api.log")
    yield url
    stop_api(process)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def extra(response) -> dict:
    """The fields beyond the OpenAI schema, as the openai package keeps them."""
    return response.model_extra


def document_text(server: str, doc_id: str) -> str:
    reply = httpx.get(f"{server}/v1/documents/{doc_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()["text"]


def test_models_are_the_answerers(client):
    assert [model.id for model in client.models.list()] == ["policy-rag", "policy-rag-extractive"]


def test_whole_answer_carries_verbatim_citations(client, server):
    completion = client.chat.completions.create(model="policy-rag", messages=[{"role": "user", "content": QUESTION}])
    content = completion.choices[0].message.content
    fields = extra(completion)
    assert "100 high-quality industrial datasets" in content and fields["abstained"] is False
    assert fields["citations"], fields
    for citation in fields["citations"]:
        assert f"[{citation['marker']}]" in content
        assert document_text(server, citation["doc_id"])[citation["start"]:citation["end"]] == citation["quote"]
        assert set(citation) >= {"marker", "doc_id", "title", "section", "quote", "start", "end", "published"}


def test_stream_sends_the_text_then_the_citations_in_the_last_chunk(client):
    whole = client.chat.completions.create(model="policy-rag-extractive",
                                           messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client.chat.completions.create(model="policy-rag-extractive", stream=True,
                                                 messages=[{"role": "user", "content": QUESTION}]))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert extra(chunks[-1])["citations"] == extra(whole)["citations"]
    assert all("citations" not in extra(chunk) for chunk in chunks[:-1])


def test_absent_topic_abstains_without_citations(client):
    completion = client.chat.completions.create(
        model="policy-rag", messages=[{"role": "user", "content": "What is the population of France?"}])
    assert extra(completion)["abstained"] is True and extra(completion)["citations"] == []
    assert "do not answer" in completion.choices[0].message.content


def test_follow_up_uses_the_earlier_user_turns(client):
    first = "Which departments issued the Implementation Opinions?"
    follow_up = client.chat.completions.create(model="policy-rag", messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": first},
        {"role": "assistant", "content": "The Ministry of Industry and Information Technology and seven others [1]."},
        {"role": "user", "content": "When was it issued?"}])
    alone = client.chat.completions.create(model="policy-rag",
                                           messages=[{"role": "user", "content": "When was it issued?"}])
    assert "Implementation Opinions" in extra(follow_up)["question"]
    assert extra(alone)["question"] == "When was it issued?"
    # Both articles date the Opinions: the answer quotes one of them, with the date.
    assert extra(follow_up)["citations"] and re.search(r"December 25, 2025|10/01/2026|2026",
                                                        follow_up.choices[0].message.content)


def test_filters_come_as_extra_body_fields(client):
    completion = client.chat.completions.create(model="policy-rag", messages=[{"role": "user", "content": QUESTION}],
                                                extra_body={"doc_ids": [OPINIONS]})
    assert {c["doc_id"] for c in extra(completion)["citations"]} == {OPINIONS}
    assert {r["doc_id"] for r in extra(completion)["retrieved"]} == {OPINIONS}


@pytest.mark.parametrize("messages, error, words", [
    ([{"role": "user", "content": "   "}], openai.BadRequestError, "question is empty"),
    ([{"role": "user", "content": "why " * 600}], openai.BadRequestError, "over the limit of 2,000"),
    ([], openai.BadRequestError, "messages"),
    ([{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "100 [1]."}], openai.BadRequestError,
     "last message must be the user's question"),
])
def test_bad_requests_are_openai_errors(client, messages, error, words):
    with pytest.raises(error) as raised:
        client.chat.completions.create(model="policy-rag", messages=messages)
    assert words in raised.value.body["message"] and raised.value.status_code == 400


def test_bad_filters_are_refused_naming_the_field(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="policy-rag", messages=[{"role": "user", "content": QUESTION}],
                                       extra_body={"doc_ids": [OPINIONS, "no-such-doc"]})
    assert "'no-such-doc'" in raised.value.body["message"] and raised.value.body["param"] == "doc_ids"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="policy-rag", messages=[{"role": "user", "content": QUESTION}],
                                       extra_body={"published_from": "last year"})
    assert raised.value.body["param"] == "published_from" and "got 'last year'" in raised.value.body["message"]


def test_unknown_model_is_404_naming_the_models(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert "'gpt-4o'" in raised.value.body["message"] and "policy-rag-extractive" in raised.value.body["message"]
    assert raised.value.body["param"] == "model"


def test_upload_ask_and_remove(server, client):
    uploaded = httpx.post(f"{server}/v1/documents", files={"file": ("zones.md", ZONES, "text/markdown")})
    assert uploaded.status_code == 201, uploaded.text
    doc_id = uploaded.json()["doc_id"]
    assert uploaded.json()["status"] == "added" and uploaded.json()["chunks"] >= 1
    listed = httpx.get(f"{server}/v1/documents").json()["data"]
    assert doc_id in {d["doc_id"] for d in listed} and len(listed) == 3

    question = [{"role": "user", "content": "How many robot pilot zones are designated?"}]
    completion = client.chat.completions.create(model="policy-rag", messages=question)
    assert "17 robot pilot zones" in completion.choices[0].message.content
    assert extra(completion)["citations"][0]["doc_id"] == doc_id

    removed = httpx.delete(f"{server}/v1/documents/{doc_id}")
    assert removed.status_code == 200 and removed.json() == {"object": "document", "id": doc_id, "deleted": True}
    assert doc_id not in {d["doc_id"] for d in httpx.get(f"{server}/v1/documents").json()["data"]}
    after = client.chat.completions.create(model="policy-rag", messages=question)
    assert doc_id not in {c["doc_id"] for c in extra(after)["citations"]}
    again = httpx.delete(f"{server}/v1/documents/{doc_id}")
    assert again.status_code == 404 and doc_id in again.json()["error"]["message"]


@pytest.mark.parametrize("name, data, status, words", [
    ("tool.exe", b"MZ", 415, "unsupported file type '.exe'"),
    ("big.txt", b"policy text. " * 5000, 413, "over the limit RAG_MAX_FILE_MB=0.05"),
    ("empty.md", b"", 422, "is empty"),
])
def test_refused_uploads_change_nothing(server, name, data, status, words):
    before = httpx.get(f"{server}/v1/documents").json()
    reply = httpx.post(f"{server}/v1/documents", files={"file": (name, data)})
    assert reply.status_code == status and words in reply.json()["error"]["message"], reply.text
    assert reply.json()["error"]["param"] == "file"
    assert httpx.get(f"{server}/v1/documents").json() == before


def test_unknown_document_is_404(server):
    reply = httpx.get(f"{server}/v1/documents/no-such-doc")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "document_not_found"
    assert "'no-such-doc'" in reply.json()["error"]["message"]


def test_token_is_required_on_every_request(env, tmp_path):
    process, url = start_api({**env, "RAG_API_TOKEN": TOKEN}, tmp_path / "api.log", host="0.0.0.0")
    try:
        missing = httpx.get(f"{url}/v1/models")
        wrong = httpx.get(f"{url}/v1/documents", headers={"Authorization": "Bearer nope"})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert "RAG_API_TOKEN" in missing.json()["error"]["message"] and missing.headers["www-authenticate"] == "Bearer"
        assert wrong.json()["error"]["code"] == "invalid_token"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
        denied = httpx.post(f"{url}/v1/documents", files={"file": ("zones.md", ZONES)})
        assert denied.status_code == 401

        good = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/v1/documents", headers=good).status_code == 200
        answered = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0).chat.completions.create(
            model="policy-rag", messages=[{"role": "user", "content": QUESTION}])
        assert "100" in answered.choices[0].message.content
        # Beyond loopback, writes are allowed with the token.
        uploaded = httpx.post(f"{url}/v1/documents", files={"file": ("zones.md", ZONES)}, headers=good)
        assert uploaded.status_code == 201, uploaded.text
        assert httpx.delete(f"{url}/v1/documents/{uploaded.json()['doc_id']}", headers=good).status_code == 200
    finally:
        stop_api(process)


def test_without_a_token_writes_need_loopback(env, tmp_path):
    process, url = start_api(env, tmp_path / "api.log", host="0.0.0.0")
    try:
        assert httpx.get(f"{url}/v1/documents").status_code == 200
        upload = httpx.post(f"{url}/v1/documents", files={"file": ("zones.md", ZONES)})
        removal = httpx.delete(f"{url}/v1/documents/{OPINIONS}")
        assert (upload.status_code, removal.status_code) == (403, 403)
        assert "0.0.0.0" in upload.json()["error"]["message"] and "RAG_API_TOKEN" in upload.json()["error"]["message"]
        assert OPINIONS in {d["doc_id"] for d in httpx.get(f"{url}/v1/documents").json()["data"]}
    finally:
        stop_api(process)


def test_llm_answerer_streams_its_tokens_and_ends_with_the_checked_answer(env, tmp_path):
    """A scripted OpenAI-protocol server stands in for the LLM; the sentence it makes up reaches the stream, and
    the last chunk carries the answer without it, with citations resolved in code."""
    with ScriptedChatServer() as llm:
        llm.default(Reply.from_fn(lambda request: "The plan creates 100 high-quality industrial datasets [1]. "
                                                  "It also names 40 chip fabs [1]."))
        process, url = start_api({**env, "RAG_LLM_MODEL": "openai:scripted-model", "RAG_LLM_BASE_URL": llm.base_url,
                                  "OPENAI_API_KEY": "test", "RAG_LLM_TIMEOUT_S": "10"}, tmp_path / "api.log")
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            assert "policy-rag-llm" in [model.id for model in client.models.list()]
            chunks = list(client.chat.completions.create(model="policy-rag-llm", stream=True, messages=[
                {"role": "user", "content": QUESTION}], extra_body={"doc_ids": [OPINIONS]}))
        finally:
            stop_api(process)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    last = extra(chunks[-1])
    assert "40 chip fabs" in streamed and len(chunks) > 4
    assert "100 high-quality industrial datasets" in last["answer"] and "40 chip fabs" not in last["answer"]
    assert last["citations"][0]["doc_id"] == OPINIONS and "100" in last["citations"][0]["quote"]
    assert any("unsupported sentence" in notice for notice in last["notices"])
