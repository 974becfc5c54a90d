"""The public HTTP API: OpenAI-compatible chat, feedback, models and health.

    POST /v1/chat/completions   stream true/false; the response id is the stored exchange id. Every
                                field the openai client sends is honoured or refused with 400 and
                                `error.param` (ChatRequest.check_supported)
    GET  /v1/models, /v1/models/{id}
    POST /v1/feedback           {"id", "rating": "up"|"down", "correction"?}: 200, 404, 422 (a correction
                                needs "down")
    DELETE /v1/feedback/{id}    take a rating back (with its correction): 200 {"id", "withdrawn"}, 404
    GET  /healthz               {"status": "ok", "adapter": "<active version or base>", "engine",
                                "engine_serving", "engine_error"?}; 503 with status "unavailable" and
                                the error when the database cannot be reached (not when an external
                                engine fails: the embedded one answers, and engine_error says why)

Errors come back as {"error": {"message", "type"}} with a 4xx or 503 status, never as a 5xx
for anything the client sent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

from bot.engine_api import FinishReason
from feedback_db import store
from feedback_db.db import UNAVAILABLE
from kaizen.errors import ContextLengthError, KaizenError, NotFoundError
from kaizen.prompts import INVALID_CHARS, MAX_CORRECTION_CHARS

if TYPE_CHECKING:
    from bot.chat import Reply
    from bot.services import Kaizen



def _refuse(pattern: re.Pattern[str], what: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and pattern.search(value):
            raise ValueError(f"contains {what}")
        return value

    return check


_LONE_SURROGATE = _refuse(re.compile("[\ud800-\udfff]"), "a lone surrogate")


class ContentPart(BaseModel):
    """One part of a message's content given as a list (OpenAI's content parts): only "text" parts
    are answered; another type is refused by name."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]  # "developer": OpenAI's newer name for system
    content: str | list[ContentPart]

    def text(self, index: int) -> str:
        """The content as text: text parts joined with newlines. Raises KaizenError (400) for another part type."""
        if isinstance(self.content, str):
            return self.content
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise FieldError(f"messages[{index}].content",
                                 f"messages[{index}].content: a part of type {part.type!r} cannot be answered; "
                                 "this model reads text parts only.")
        return "\n".join(part.text or "" for part in self.content)

    # Lone surrogates (JSON allows "\ud800") break the tokenizer. Control characters are refused
    # only in the new user message (clean_message): the bot's own earlier replies may hold them.
    @field_validator("content")
    @classmethod
    def _no_lone_surrogate(cls, value: str | list[ContentPart]) -> str | list[ContentPart]:
        texts = [value] if isinstance(value, str) else [p.text or "" for p in value]
        for text in texts:
            _LONE_SURROGATE(text)
        return value


class StreamOptions(BaseModel):
    """`include_usage`: a last chunk before [DONE] with `choices: []` and the request's usage."""

    include_usage: bool = False


class FieldError(KaizenError):
    """A request field Kaizen cannot honour as OpenAI documents it: 400, naming the field (`param`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


# What each request field may hold when Kaizen cannot do what another value asks. A field not
# listed here and not declared on ChatRequest is unknown and refused.
_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "audio": ((None,), "audio output is not supported: this model writes text"),
    "frequency_penalty": ((None, 0, 0.0), "frequency_penalty is not supported (Kaizen's loop guard ends repeats)"),
    "presence_penalty": ((None, 0, 0.0), "presence_penalty is not supported (Kaizen's loop guard ends repeats)"),
    "function_call": ((None, "none"), "function calling is not supported by this model"),
    "functions": ((None, []), "function calling is not supported by this model"),
    "tools": ((None, []), "tool calling is not supported by this model"),
    "tool_choice": ((None, "none", "auto"), "tool calling is not supported by this model"),
    "parallel_tool_calls": ((None, True, False), ""),
    "logit_bias": ((None, {}), "logit_bias is not supported"),
    "logprobs": ((None, False), "logprobs are not returned by this server"),
    "top_logprobs": ((None, 0), "logprobs are not returned by this server"),
    "modalities": ((None, ["text"]), "only the text modality is supported"),
    "n": ((None, 1), "n must be 1: each reply is one stored exchange that users rate"),
    "prediction": ((None,), "predicted outputs are not supported"),
    "reasoning_effort": ((None,), "reasoning_effort is not supported: this is not a reasoning model"),
    "verbosity": ((None,), "verbosity is not supported"),
    "web_search_options": ((None,), "web search is not supported"),
    "moderation": ((None,), "moderation is not supported"),
    "audio_output": ((None,), "audio output is not supported"),
    "store": ((None, True), "store=false is not possible: Kaizen keeps every exchange to learn from its ratings"),
    "metadata": ((None, {}), "metadata is not kept by this server"),
    "service_tier": ((None, "auto", "default"), "this server has one service tier"),
}
# Hints that change nothing Kaizen does and are safe to accept.
_ACCEPTED = {"user", "safety_identifier", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention"}


class ChatRequest(BaseModel):
    """OpenAI's Chat Completions request. Every field the `openai` client can send is honoured or
    refused with a 400 naming it (`unsupported`); Kaizen's own fields are `conversation_id` and `memory`."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    # A long conversation is trimmed to the context by tokens (oldest turns first), not refused;
    # the cap only bounds the request body.
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    response_format: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream_options: StreamOptions | None = None
    conversation_id: str | None = Field(default=None, max_length=32, pattern=r"^[0-9a-zA-Z_-]+$")
    memory: bool | None = None

    def check_supported(self) -> None:
        """Raise FieldError for the first field whose value Kaizen cannot honour."""
        for name, value in (self.model_extra or {}).items():
            if name in _ACCEPTED:
                continue
            if name not in _ONLY:
                raise FieldError(name, f"Unrecognized request argument supplied: {name}")
            allowed, why = _ONLY[name]
            if not any(value == ok and type(value) is type(ok) or value is ok for ok in allowed):
                raise FieldError(name, f"{why} ({name}={json.dumps(value)[:80]}).")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise FieldError("response_format", "Only response_format {\"type\": \"text\"} is supported: this "
                             "model cannot guarantee JSON output.")
        if self.max_tokens is not None and self.max_completion_tokens not in (None, self.max_tokens):
            raise FieldError("max_completion_tokens", "max_tokens and max_completion_tokens differ; give one.")
        stops = self.stops
        if len(stops) > 4 or any(not s for s in stops):
            raise FieldError("stop", "stop takes up to 4 non-empty strings.")
        if self.stream_options is not None and not self.stream:
            raise FieldError("stream_options", "stream_options is only allowed when stream is true.")

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def reply_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"]
    correction: str | None = Field(default=None, max_length=MAX_CORRECTION_CHARS)

    _check_correction = field_validator("correction")(
        _refuse(INVALID_CHARS, "control characters (such as NUL) or lone surrogates"))


# --- responses --------------------------------------------------------------------------------


def _without_none(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`body` without those of `keys` whose value is None: optional fields OpenAI leaves out when unset."""
    for key in keys:
        if body.get(key) is None:
            body.pop(key, None)
    return body


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None  # the request field at fault, when one is
    code: str | None = None  # a machine-readable code, such as "context_length_exceeded"

    @model_serializer(mode="wrap")
    def _only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "param", "code")


class ErrorResponse(BaseModel):
    """Every error, also the one sent in the middle of a stream: {"error": {"message", "type"}}."""

    error: ErrorDetail


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class CompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason = "stop"  # "length": the reply ran into max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class KaizenExtras(BaseModel):
    """What Kaizen adds to a completion: where the answer came from and what was served."""

    source: str  # memory | rag | model
    memory_item_ids: list[int]
    adapter: str  # the version being served
    adapter_applied: bool = False  # whether its adapter produced this answer (routing by scope)
    preference_applied: bool = False  # whether the version's preference adapter (KTO on ratings) was on for it
    emotion: str


def _extras(reply: Reply) -> KaizenExtras:
    """Where a finished reply came from and what served it."""
    return KaizenExtras(source=reply.source, memory_item_ids=reply.item_ids, adapter=reply.meta["adapter_version"],
                        adapter_applied=reply.meta["adapter_applied"],
                        preference_applied=reply.meta["preference_applied"], emotion=reply.emotion.label)


class ChatCompletion(BaseModel):
    """The non-streamed answer; `id` is the stored exchange's id (rate it with /v1/feedback)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    kaizen: KaizenExtras


class ChunkDelta(BaseModel):
    """A chunk's delta; the fields that are not set are left out ({} in the last chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer; every chunk carries the exchange's id."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None  # only in the stream_options.include_usage chunk, which has no choices
    kaizen: KaizenExtras | None = None  # only in the chunk with the finish_reason, once the reply is known

    @model_serializer(mode="wrap")
    def _only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "usage", "kaizen")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int  # Unix seconds: when this server loaded the model (OpenAI's field, which strict clients require)
    owned_by: str = "kaizen"
    adapter: str  # the adapter version being served


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackAnswer(BaseModel):
    """The stored rating: `id` is the exchange's, `feedback_id` the rating's, `status` pending/approved."""

    id: str
    feedback_id: int
    rating: str
    status: str
    correction: str | None


class Withdrawn(BaseModel):
    """`withdrawn` is false when the exchange had no rating to take back."""

    id: str
    withdrawn: bool


class Health(BaseModel):
    status: Literal["ok", "unavailable"] = "ok"  # unavailable (HTTP 503): the database cannot be reached
    adapter: str  # the active version, or "base"
    error: str | None = None  # why it is unavailable
    engine: str = "embedded"  # the configured engine: embedded, or vllm (an external server)
    engine_serving: str = "embedded"  # the engine answering now: embedded while an external one fails
    engine_error: str | None = None  # why the configured engine is not the one answering


def health(kaizen: Kaizen, problem: str | None = None) -> Health:
    """What /healthz says: the served version, and the engine answering now."""
    engine = kaizen.engine.status()
    return Health(status="ok" if problem is None else "unavailable", adapter=kaizen.engine.adapter_version,
                  error=problem, engine=engine.kind, engine_serving=engine.serving, engine_error=engine.problem)


# `error.type` by HTTP status, in OpenAI's vocabulary, the same for every route (chat, feedback, admin):
# a client tells errors apart by type, and the message says the rest.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    """The `error.type` of an HTTP status: ERROR_TYPES, "server_error" for 5xx."""
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status,
                        headers={"Retry-After": "2"} if status in (429, 503) else None)


def install_error_handlers(app: FastAPI) -> None:
    """Answer Kaizen's, the store's, Starlette's and validation errors as ErrorResponse bodies."""

    @app.exception_handler(KaizenError)
    async def _kaizen(req: Request, exc: KaizenError) -> JSONResponse:
        if isinstance(exc, FieldError):
            return _error(exc.status, exc.message, "invalid_request_error", param=exc.param)
        if req.url.path.startswith("/v1/chat/") and exc.status == 422:
            # OpenAI's shape for a request it cannot answer as sent (vLLM's too): 400, with a code.
            param = "messages" if isinstance(exc, ContextLengthError) else None
            return _error(400, exc.message, "invalid_request_error", param=param, code=exc.code)
        return _error(exc.status, exc.message, error_type(exc.status), code=exc.code)

    @app.exception_handler(UNAVAILABLE[0])
    @app.exception_handler(UNAVAILABLE[1])
    async def _unavailable(_req: Request, _exc: Exception) -> JSONResponse:
        return _error(503, "The database cannot be reached right now; please try again in a moment.", "server_error")

    @app.exception_handler(store.NotFound)
    async def _not_found(_req: Request, exc: store.NotFound) -> JSONResponse:
        return _error(404, str(exc), error_type(404))

    @app.exception_handler(store.Conflict)
    async def _conflict(_req: Request, exc: store.Conflict) -> JSONResponse:
        return _error(409, str(exc), error_type(409))

    @app.exception_handler(store.Invalid)
    async def _invalid(_req: Request, exc: store.Invalid) -> JSONResponse:
        return _error(422, str(exc), error_type(422))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Invalid request."
        response = _error(exc.status_code, message, error_type(exc.status_code))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(req: Request, exc: RequestValidationError) -> JSONResponse:
        parts, fields = [], []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "body"
            parts.append(f"{where}: {err.get('msg')}")
            fields.append(where)
        message = "Invalid request: " + "; ".join(parts)
        if req.url.path.startswith("/v1/chat/"):  # OpenAI's shape: 400, naming the field
            return _error(400, message, "invalid_request_error", param=fields[0] if fields else None)
        return _error(422, message, "invalid_request_error")


def _chunk(reply_id: str, model: str, created: int, delta: ChunkDelta, finish: FinishReason | None = None,
           extras: KaizenExtras | None = None) -> str:
    body = ChatCompletionChunk(id=reply_id, created=created, model=model,
                               choices=[ChunkChoice(delta=delta, finish_reason=finish)], kaizen=extras)
    return f"data: {json.dumps(body.model_dump(), ensure_ascii=False)}\n\n"


def build_router(kaizen: Kaizen) -> APIRouter:
    """The /v1 routes and /healthz over one running Kaizen."""
    router = APIRouter()
    loaded = int(time.time())

    def _start(req: ChatRequest) -> Reply:
        texts = [m.text(i) for i, m in enumerate(req.messages)]
        *history, last = req.messages
        if last.role != "user":
            raise FieldError("messages", "The last message must come from the user.")
        instructions = ("system", "developer")
        system = "\n".join(t for m, t in zip(history, texts, strict=False) if m.role in instructions)
        turns = [{"role": m.role, "content": t} for m, t in zip(history, texts, strict=False)
                 if m.role not in instructions]
        return kaizen.chat.start(
            message=texts[-1],
            history=turns,
            conversation_id=req.conversation_id,
            client="api",
            use_memory=req.memory,
            extra_system=system,
            max_new_tokens=req.reply_limit,
            stop=tuple(req.stops) or None,
            seed=req.seed,
            temperature=req.temperature,
            top_p=req.top_p,
        )

    @router.post("/v1/chat/completions", response_model=ChatCompletion)
    def chat_completions(req: ChatRequest) -> ChatCompletion | Response:
        req.check_supported()
        reply = _start(req)
        model = kaizen.model_name
        created = int(time.time())
        if not req.stream:
            text = reply.read()
            prompt_tokens, completion_tokens = reply.meta["prompt_tokens"], reply.meta["completion_tokens"]
            return ChatCompletion(
                id=reply.exchange_id, created=created, model=model,
                choices=[CompletionChoice(message=AssistantMessage(content=text),
                                          finish_reason=reply.meta["finish_reason"])],
                usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            total_tokens=prompt_tokens + completion_tokens),
                kaizen=_extras(reply))

        def events() -> Iterator[str]:
            yield _chunk(reply.exchange_id, model, created, ChunkDelta(role="assistant", content=""))
            try:
                for piece in reply:
                    yield _chunk(reply.exchange_id, model, created, ChunkDelta(content=piece))
            except KaizenError as exc:
                error = ErrorResponse(error=ErrorDetail(message=exc.message, type=error_type(exc.status),
                                                        code=exc.code))
                yield f"data: {json.dumps(error.model_dump())}\n\n"
                return
            yield _chunk(reply.exchange_id, model, created, ChunkDelta(), reply.meta["finish_reason"], _extras(reply))
            if req.stream_options is not None and req.stream_options.include_usage:
                prompt_tokens, completion_tokens = reply.meta["prompt_tokens"], reply.meta["completion_tokens"]
                usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              total_tokens=prompt_tokens + completion_tokens)
                last = ChatCompletionChunk(id=reply.exchange_id, created=created, model=model, choices=[], usage=usage)
                yield f"data: {json.dumps(last.model_dump(), ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        return ModelList(data=[ModelCard(id=kaizen.model_name, created=loaded, adapter=kaizen.engine.adapter_version)])

    @router.get("/v1/models/{model_id}", response_model=ModelCard)
    def model(model_id: str) -> ModelCard:
        if model_id != kaizen.model_name:
            raise NotFoundError(f"The model {model_id!r} does not exist; GET /v1/models lists the one served.")
        return ModelCard(id=kaizen.model_name, created=loaded, adapter=kaizen.engine.adapter_version)

    @router.post("/v1/feedback", response_model=FeedbackAnswer)
    def feedback(req: FeedbackRequest) -> FeedbackAnswer:
        with kaizen.db.write() as s:
            fb = store.rate_exchange(session=s, exchange_id=req.id, rating=req.rating, correction=req.correction,
                                     auto_approve=kaizen.auto_approve())
            return FeedbackAnswer(id=req.id, feedback_id=fb.id, rating=fb.rating, status=fb.status,
                                  correction=fb.correction)

    @router.delete("/v1/feedback/{exchange_id}", response_model=Withdrawn)
    def withdraw_feedback(exchange_id: str) -> Withdrawn:
        with kaizen.db.write() as s:
            return Withdrawn(id=exchange_id, withdrawn=store.withdraw_rating(session=s, exchange_id=exchange_id))

    @router.api_route("/healthz", methods=["GET", "HEAD"], response_model=Health, response_model_exclude_none=True,
                      responses={503: {"model": Health, "description": "the database cannot be reached"}})
    def healthz() -> Health | JSONResponse:
        problem = kaizen.db.ping()
        if problem is not None:  # a load balancer should send this replica's users elsewhere
            body = health(kaizen, problem)
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "2"})
        # An external engine that fails is no reason to send users elsewhere: the embedded engine answers.
        return health(kaizen)

    @router.api_route("/v1/{rest:path}", methods=list(ANY_METHOD), include_in_schema=False)
    def unknown_route(rest: str, request: Request) -> JSONResponse:
        """Any other /v1 request, answered in OpenAI's error shape (the chat UI mounted at "/" would
        answer it with a bare 404 page): 405 with `Allow` for a known path and another method, else 404."""
        return no_route(request, router.routes)

    return router


ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def no_route(request: Request, routes: Sequence[BaseRoute]) -> JSONResponse:
    """405 (with the `Allow` header) when one of `routes` serves this path with another method, else 404."""
    allowed = sorted({m for r in routes if isinstance(r, Route) and set(r.methods or ()) != set(ANY_METHOD)
                      and r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods or ()} - {"HEAD"})
    where = f"{request.method} {request.url.path}"
    if allowed:
        response = _error(405, f"{where} is not allowed; this path answers {', '.join(allowed)}.", error_type(405))
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return _error(404, f"Unknown endpoint: {where}. The API serves POST /v1/chat/completions, GET /v1/models, "
                       "POST /v1/feedback and DELETE /v1/feedback/{id} (see /docs).", error_type(404))
