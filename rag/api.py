"""`rag api`: an OpenAI-compatible HTTP face (FastAPI). It parses requests and renders responses; answers,
uploads and removals are the library's, the same calls the chat and the CLI make.

The chat completion carries, beside the OpenAI fields, the answer's `citations` (the records of `rag ask --json`),
`abstained`, `question` (the standalone question answered), `notices`, `retrieved` and `answer` (the checked text);
a stream carries them in its last chunk.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from itertools import chain

from fastapi import Depends, FastAPI, File, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from rag.answer import stream_answer
from rag.documents import Answer, Filters
from rag.errors import FileTooLargeError, LoadError, QuestionError, RagError, StoreError, UnsupportedFileError
from rag.ingest import remove_documents
from rag.settings import Settings
from rag.store import Store
from rag.uploads import ingest_upload

DEFAULT_MODEL = "policy-rag"
ANSWERERS = {DEFAULT_MODEL: None, "policy-rag-extractive": "extractive", "policy-rag-llm": "llm"}
# The status and request field a library error is answered with; the first matching class wins (subclasses first).
STATUSES = ((QuestionError, 400, "messages"), (FileTooLargeError, 413, "file"), (UnsupportedFileError, 415, "file"),
            (LoadError, 422, "file"), (StoreError, 503, None), (RagError, 400, None))
SEE_README = "the endpoints and their fields are in the README's HTTP API section"
ISO_DATE = r"^\d{4}(-\d{2}(-\d{2})?)?$"  # 2026, 2026-01 or 2026-01-09, as the catalog's dates
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 503: "service_unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict] | None = None

    @property
    def text(self) -> str:
        """The content as text; a list of parts (as some clients send) keeps its text parts."""
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # temperature, max_tokens, ... do not apply to these answerers
    model: str = DEFAULT_MODEL
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    doc_ids: list[str] = []
    language: str | None = None
    published_from: str | None = Field(None, pattern=ISO_DATE)
    published_to: str | None = Field(None, pattern=ISO_DATE)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def create_app(settings: Settings, store: Store, *, host: str) -> FastAPI:
    """The API over an open store; `host` is the address it listens on (writes need a token beyond loopback)."""
    token = settings.api_token.get_secret_value().encode() if settings.api_token else None

    def check_token(authorization: str | None = Header(None)) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if not authorization:
            raise ApiError(401, "Missing token: send the header `Authorization: Bearer <RAG_API_TOKEN>`.",
                           code="missing_token")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise ApiError(401, "Wrong token: the bearer token does not match the server's RAG_API_TOKEN.",
                           code="invalid_token")

    def check_writable() -> None:
        if token is None and not is_loopback(host):
            raise ApiError(403, f"Uploads and removals are refused: the server listens on {host}, beyond loopback, "
                                "without RAG_API_TOKEN; set RAG_API_TOKEN or listen on 127.0.0.1.",
                           code="writes_need_token")

    # No /docs or /openapi.json: every request needs the token, and those pages would need a way around it.
    app = FastAPI(title="Policy Q&A", dependencies=[Depends(check_token)], docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(ApiError)
    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.code), exc.status, headers=headers)

    @app.exception_handler(RagError)
    def rag_error(request: Request, exc: RagError) -> JSONResponse:
        status, param = next((code, param) for kind, code, param in STATUSES if isinstance(exc, kind))
        return JSONResponse(error_body(status, str(exc), param, type(exc).__name__), status)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        where = ".".join(str(part) for part in problems[0]["loc"] if part != "body") if problems else None
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                            + (f" (got {e['input']!r})" if isinstance(e.get("input"), (str, int, float)) else "")
                            for e in problems)
        return JSONResponse(error_body(400, f"Invalid request: {message}; {SEE_README}.", where or None,
                                       "invalid_request"), 400)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}; {SEE_README}."
        return JSONResponse(error_body(exc.status_code, message), exc.status_code)

    def models() -> list[str]:
        return [name for name, answerer in ANSWERERS.items() if answerer != "llm" or settings.llm_model]

    @app.get("/v1/models")
    def list_models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "policy-rag"}
                                           for name in models()]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        if request.model not in models():
            raise ApiError(404, f"Unknown model {request.model!r}: use one of {', '.join(models())} (GET /v1/models).",
                           param="model", code="model_not_found")
        if request.messages[-1].role != "user":
            raise ApiError(
                400,
                f"The last message must be the user's question, got role {request.messages[-1].role!r}.",
                param="messages",
            )
        unknown = sorted(set(request.doc_ids) - {doc.doc_id for doc in store.documents()})
        if unknown:
            raise ApiError(404, f"Unknown doc_ids {', '.join(map(repr, unknown))} in the filter; GET /v1/documents "
                                "lists the stored ones.", param="doc_ids", code="document_not_found")
        history = tuple(m.text for m in request.messages[:-1] if m.role == "user")
        filters = Filters(tuple(request.doc_ids), request.language, request.published_from, request.published_to)
        pieces = stream_answer(request.messages[-1].text, settings, store=store, history=history, filters=filters,
                               answerer=ANSWERERS[request.model])
        first = next(pieces)  # asks, so that a bad question is a 400 before any event is sent
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": request.model}
        if request.stream:
            return StreamingResponse(_events(reply, chain([first], pieces)), media_type="text/event-stream")
        result = next(item for item in chain([first], pieces) if isinstance(item, Answer))
        return {**reply, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": "stop"}],
            **_answer_fields(result)}

    @app.get("/v1/documents")
    def list_documents() -> dict:
        return {"object": "list", "data": [_document(doc) for doc in store.documents()]}

    @app.get("/v1/documents/{doc_id:path}")
    def get_document(doc_id: str) -> dict:
        stored = next((doc for doc in store.documents() if doc.doc_id == doc_id), None)
        if stored is None:
            raise _unknown_document(doc_id)
        return {**_document(stored), "text": store.document_text(doc_id)}

    @app.post("/v1/documents", status_code=201, dependencies=[Depends(check_writable)])
    def upload_document(file: UploadFile = File(...)) -> dict:
        outcome = ingest_upload(file.filename or "upload", file.file.read(), settings, store)
        return {"object": "document", "doc_id": outcome.doc_id, "status": outcome.status, "chunks": outcome.chunks}

    @app.delete("/v1/documents/{doc_id:path}", dependencies=[Depends(check_writable)])
    def delete_document(doc_id: str) -> dict:
        removed, _ = remove_documents([doc_id], store)
        if not removed:
            raise _unknown_document(doc_id)
        return {"object": "document", "id": removed[0], "deleted": True}

    return app


def _unknown_document(doc_id: str) -> ApiError:
    return ApiError(404, f"Unknown document {doc_id!r}: it is neither a stored doc_id nor the path of one; "
                         "GET /v1/documents lists them.", param="doc_id", code="document_not_found")


def _answer_fields(result: Answer) -> dict:
    shared = result.to_dict()
    return {"answer": result.text, "question": result.question, "citations": shared["citations"],
            "abstained": result.abstained, "notices": shared["notices"], "retrieved": shared["retrieved"]}


def _events(reply: dict, pieces: Iterator) -> Iterator[str]:
    """Server-sent events: a chunk per text piece, then a last chunk with the citations, then [DONE]."""
    def event(delta: dict, finish_reason: str | None = None, **extra) -> str:
        chunk = {**reply, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
        for item in pieces:
            if isinstance(item, Answer):
                yield event({}, "stop", **_answer_fields(item))
            else:
                yield event({"content": item})
    except RagError as exc:  # after the first event the status is sent: the error becomes an event
        yield f"data: {json.dumps(error_body(500, str(exc), code=type(exc).__name__), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def _document(doc) -> dict:
    return {"doc_id": doc.doc_id, "title": doc.title, "language": doc.language, "published": doc.published,
            "publisher": doc.publisher, "source": doc.source, "chunks": doc.chunks, "chars": doc.chars,
            "sha256": doc.sha256, "ingested_at": doc.ingested_at, "flags": list(doc.flags)}
