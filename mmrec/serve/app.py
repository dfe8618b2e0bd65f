"""The HTTP service (FastAPI): recommend, similar, onboard/remove items, health; OpenAPI at ``/docs``.

Write endpoints (``POST``/``DELETE /items``) need the ``X-API-Key`` header when
a key is configured. Requests are validated by pydantic models with bounds
(422 on a bad payload), bodies over ``max_body_bytes`` get 413, user errors map
to 4xx with the message, and anything unexpected to a plain 500 without a
traceback. Image paths are accepted only inside the configured roots; image
URLs in ``POST /items`` are never treated as paths: the recommender's
:class:`~mmrec.serve.image_urls.ImageURLPolicy` downloads them when enabled
(``mmrec serve --allow-image-urls``), else the item is embedded from its text
with a warning saying so.
Endpoints are synchronous functions, so FastAPI runs them in its thread pool;
the :class:`~mmrec.Recommender`'s readers-writer lock makes queries and
onboarding safe to run concurrently.
"""
from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence, Union

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr,
                      StringConstraints, model_validator)

from mmrec import __version__, contract
from mmrec.errors import DataError, MMRecError
from mmrec.index.errors import UnknownItemError
from mmrec.limits import MAX_HISTORY, MAX_ITEMS_PER_CALL, MAX_K, MAX_REMOVE_PER_CALL
from mmrec.serve.confine import PathNotAllowedError, confine, resolve_roots
from mmrec.serve.content import last_copies
from mmrec.serve.image_urls import is_image_url
from mmrec.serve.results import to_dicts

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 * 1024 * 1024
MAX_ITEMS_PER_REQUEST = MAX_ITEMS_PER_CALL


def _rule(problem_of: Callable[[Any], Optional[str]]) -> AfterValidator:
    """A pydantic validator running one of :mod:`mmrec.contract`'s checks (the loaders' and onboarding's rules)."""
    def check(value: Any) -> Any:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value
    return AfterValidator(check)


def _id_value(value: Any) -> Any:
    """An id as the loaders read it: a string, or an integer written in decimal (bools and other types refused)."""
    s = contract.id_string(value)
    if s is None:
        raise ValueError(f"must be a string, got {type(value).__name__}")
    return s


Id = Annotated[str, BeforeValidator(_id_value), _rule(contract.id_problem)]
Text = Annotated[StrictStr, _rule(contract.text_problem)]
Path_ = Annotated[StrictStr, StringConstraints(min_length=1, max_length=contract.MAX_PATH_CHARS)]
FieldName = Annotated[StrictStr, _rule(contract.field_name_problem)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
K = Annotated[int, Field(ge=1, le=MAX_K, description="how many items to return")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Model):
    """A known user's id and/or a live history (item ids, oldest first); neither gives the fallback."""

    user_id: Optional[Id] = None
    history: Optional[list[Id]] = Field(None, max_length=MAX_HISTORY)
    k: K = 10
    exclude_seen: bool = True
    explain: bool = False
    query_text: Optional[Text] = Field(None, description="fallback query for users with no usable history")


class SimilarRequest(_Model):
    """Exactly one of an item id, a text or an image path (inside the server's image roots)."""

    item_id: Optional[Id] = None
    text: Optional[Annotated[Text, StringConstraints(min_length=1)]] = None
    image: Optional[Path_] = None
    k: K = 10

    @model_validator(mode="after")
    def _exactly_one(self) -> "SimilarRequest":
        if sum(x is not None for x in (self.item_id, self.text, self.image)) != 1:
            raise ValueError("give exactly one of item_id, text or image")
        return self


class ItemIn(_Model):
    """An item to onboard; the fields follow :mod:`mmrec.contract` (the same rules as a catalog file)."""

    item_id: Id
    title: Optional[Text] = None
    description: Optional[Text] = None
    categories: Optional[list[Text]] = Field(None, max_length=contract.MAX_CATEGORIES)
    image: Optional[Path_] = Field(
        None, description="an image path inside the server's image roots, or an https URL (if the server allows)")
    attributes: Optional[dict[FieldName, Union[Text, StrictInt, FiniteFloat]]] = Field(
        None, max_length=contract.MAX_EXTRA_FIELDS,
        description="extra fields a text template may name (e.g. keywords): text or finite numbers")


class ItemsRequest(_Model):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


class DeleteRequest(_Model):
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_REMOVE_PER_CALL)


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes`` (by Content-Length, or counted while streaming)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _reject(self, scope: dict, receive: Any, send: Any) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def _json_safe(error: Any) -> Any:
    """A validation error whose ``input`` is not strict JSON (inf, nan) or is long gets a short repr instead.

    The reply quotes at most ~200 characters of a bad value (a 4 MB id is not echoed back).
    """
    value = error.get("input")
    try:
        shown = json.dumps(value, allow_nan=False)
        if len(shown) <= contract.QUOTE_CHARS:
            return error
    except (TypeError, ValueError):
        pass
    error = {**error, "input": contract.quote(value)}
    if "ctx" in error:
        error["ctx"] = {k: contract.quote(v) if not isinstance(v, (int, float)) else v for k, v in error["ctx"].items()}
    return error


def create_app(recommender: Any, api_key: Optional[str] = None, image_roots: Sequence[str | Path] = (),
               max_body_bytes: int = DEFAULT_MAX_BODY) -> FastAPI:
    """The FastAPI app serving ``recommender``. ``image_roots``: folders image paths may come from."""
    roots = resolve_roots(image_roots)
    rec = recommender
    app = FastAPI(title="mmrec", version=__version__,
                  description="Multimodal foundation-model recommendations: recommend, similar items, onboarding.")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.state.recommender = rec

    def require_key(x_api_key: Annotated[Optional[str], Header(alias="X-API-Key")] = None) -> None:
        if api_key is None:
            return
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key", headers={"WWW-Authenticate": "X-API-Key"})

    def error(status: int, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input, which fails to render (500) for a body like `Infinity` or `NaN`
        return JSONResponse({"detail": jsonable_encoder([_json_safe(e) for e in exc.errors()])}, status_code=422)

    @app.exception_handler(UnknownItemError)
    async def _unknown(request: Request, exc: UnknownItemError) -> JSONResponse:
        return error(404, exc)

    @app.exception_handler(PathNotAllowedError)
    async def _forbidden(request: Request, exc: PathNotAllowedError) -> JSONResponse:
        return error(403, exc)

    @app.exception_handler(MMRecError)
    async def _user_error(request: Request, exc: MMRecError) -> JSONResponse:
        return error(400, exc)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/health", summary="liveness and what is served")
    def health() -> dict:
        info = rec.info()
        info["run"] = Path(info["run"]).name
        return {"status": "ok", "version": __version__, **info}

    @app.post("/recommend", summary="top-k items for a user or a live history")
    def recommend(req: RecommendRequest) -> dict:
        items = rec.recommend(user_id=req.user_id, history=req.history, k=req.k, exclude_seen=req.exclude_seen,
                              explain=req.explain, query_text=req.query_text)
        return {"user_id": req.user_id, "items": to_dicts(items)}

    @app.post("/similar", summary="items similar to an item, a text or an image")
    def similar(req: SimilarRequest) -> dict:
        if is_image_url(req.image):
            raise HTTPException(400, "/similar takes image paths inside the server's image roots, not URLs")
        image = str(confine(req.image, roots)) if req.image is not None else None
        try:
            items = rec.similar_items(item_id=req.item_id, text=req.text, image=image, k=req.k)
        except DataError as exc:  # a corrupt image: name the client's path, not the server's
            raise HTTPException(400, f"cannot read image {req.image!r}") from exc
        return {"items": to_dicts(items)}

    @app.post("/items", summary="onboard (add or replace) items", dependencies=[Depends(require_key)])
    def add_items(req: ItemsRequest) -> dict:
        # an id given twice: the last copy is onboarded, the earlier ones are reported as duplicates (row: index)
        kept, duplicates = last_copies([{"item_id": item.item_id} for item in req.items])
        records, failed = [], []
        for item in (req.items[n] for n in kept):
            rec_ = item.model_dump(exclude_none=True, exclude={"attributes"})
            rec_.update(item.attributes or {})
            # a URL is never a path: it stays as given, and the recommender's URL policy either fetches it
            # or (URLs disabled, refused, failed) embeds the item from its text with a warning saying why
            if item.image is not None and not is_image_url(item.image):
                try:
                    rec_["image"] = str(confine(item.image, roots))
                except PathNotAllowedError as exc:
                    failed.append({"item_id": item.item_id, "reason": str(exc)})
                    continue
            records.append(rec_)
        summary = rec.onboard(records) if records else {"added": [], "replaced": [], "failed": [],
                                                        "duplicates": [], "warnings": [], "persisted": True}
        summary["failed"] = failed + summary["failed"]
        summary["duplicates"] = duplicates + summary.get("duplicates", [])
        summary["items_served"] = len(rec)
        return summary

    @app.delete("/items", summary="remove items from results", dependencies=[Depends(require_key)])
    def delete_items(req: DeleteRequest) -> dict:
        out = rec.remove(req.item_ids)
        out["items_served"] = len(rec)
        return out

    return app
