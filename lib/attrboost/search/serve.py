"""``attrboost serve``: a search page over a boosted index (the raw backbone beside it) and a JSON API.

:func:`create_app` builds a FastAPI app from a model bundle and its index (and, optionally, an index of the
same backbone's frozen features, ``attrboost index --raw``)::

    GET  /                          the page (attrboost/search/web/: one HTML file, its script and style; nothing external)
    GET  /api/info                  the model (backbone, objective, selection rule, attributes, validation metrics),
                                    the indexes and the filters they offer
    POST /api/search?k=10           multipart field ``image``: an uploaded query image
    GET  /api/search?id=ID&k=10     an indexed item as the query
         ...&filter=ATTR:VALUE      (repeatable, both searches) only results whose predicted ATTR is VALUE
    GET  /api/catalogue?limit=24&seed=0   a seeded random sample of indexed ids, to pick a query from
    GET  /thumb/{id}                a JPEG thumbnail of an indexed item

A search answers ``{"query", "k", "filter", "predicted": {attribute: value}, "boosted": [{"rank", "id", "score",
"thumb", "predicted"}], "raw": [...] or null}``; scores are cosine similarities, best first; a hit's
``predicted`` is ``{attribute: {"value", "confidence"}}`` from the index, or null when the index keeps none.

Filters (:mod:`attrboost.search.predicted`): values of one attribute match any of them, different attributes must
all match; they apply to both columns, after over-fetching (:mod:`attrboost.search.index`: the best ``k`` matching
items, fewer only when fewer match). An unknown attribute or value, or a filter on an index without predicted
attributes, is a 400 that says why; ``/api/info``'s ``filters`` lists the attributes and values (null, with
``filters_note`` saying why, when the index keeps no predictions).

Safe by default: the CLI binds to 127.0.0.1; a request body over ``max_upload_bytes`` (10 MB) gets a 413
before it is read further; an upload that is not an image (415), cannot be decoded or is truncated (400), or
has more than ``max_image_pixels`` pixels (a decompression bomb; PIL's own bomb check too) (413) gets a JSON
``{"detail": message}`` and the server keeps serving. Thumbnails are served only for ids in the indexes (no
part of a request becomes a file path; any other id is a 404). An unexpected error answers a generic 500
(the traceback goes to the server's log, never into a response). Queries run one at a time (a lock around
the forward pass and the faiss search: both use every core already, and torch's thread setting is global).
"""
# no "from __future__ import annotations": FastAPI reads the route signatures of create_app's local functions

import contextlib
import functools
import io
import ipaddress
import logging
import os
import threading
import time
import warnings
from importlib import resources
from urllib.parse import quote

import numpy as np
from PIL import Image, UnidentifiedImageError

from .bundle import load_model
from ..data import DataError, load_image, to_rgb
from .index import VectorIndex
from .predicted import FilterError

__all__ = ["create_app", "running", "decode_image", "QueryError", "is_loopback", "MAX_UPLOAD_BYTES",
           "MAX_IMAGE_PIXELS"]

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000; the backbone sees 224 x 224
MULTIPART_SLACK = 64 * 1024  # request body allowed beyond the file itself (multipart boundaries and headers)
THUMB_SIZE = 192
MAX_K = 100
CSP = ("default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
log = logging.getLogger("attrboost.search.serve")


class QueryError(ValueError):
    """A query the server refuses, with the HTTP status to answer (4xx) and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, ``localhost``)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An uploaded file's bytes -> 8-bit RGB PIL image (:func:`attrboost.data.to_rgb`, as files are read), or a
    :class:`QueryError`: empty or not an image (415), too many pixels / decompression bomb (413), truncated or
    undecodable (400). The pixel count is checked from the header, before anything is decoded."""
    if not data:
        raise QueryError(400, "the upload is empty: expected an image file (JPEG, PNG, WebP, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise QueryError(413, f"the image is {w} x {h} = {w * h:,} pixels; at most {max_pixels:,} "
                                          f"are accepted")
                im.load()
                return to_rgb(im)
    except QueryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise QueryError(413, f"the image was refused as a possible decompression bomb ({exc}); at most "
                              f"{max_pixels:,} pixels are accepted") from None
    except UnidentifiedImageError:
        raise QueryError(415, f"the upload ({len(data):,} bytes) is not an image file this server can read; "
                              f"expected JPEG, PNG, WebP, GIF, BMP or TIFF") from None
    except DataError as exc:
        raise QueryError(400, f"the image cannot be used: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError (truncated), ValueError, SyntaxError, ...
        raise QueryError(400, f"the image cannot be decoded ({type(exc).__name__}: {exc}); is the file complete?") \
            from None


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets a 413 (by its Content-Length, else as soon as
    the streamed body passes it); a body under it is read and replayed to the app."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def _too_large(self, send, size: str) -> None:
        import json

        body = json.dumps({"detail": f"the request body is {size} bytes; uploads are limited to "
                                     f"{self.limit - MULTIPART_SLACK:,} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(send, f"{int(length):,}")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                return await self._too_large(send, f"more than {self.limit:,}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class SearchService:
    """The model, the indexes and the searches the routes call (thread-safe: one query at a time)."""

    def __init__(self, encoder, index: VectorIndex, raw_index: VectorIndex | None, *, max_pixels: int):
        self.encoder, self.index, self.raw_index, self.max_pixels = encoder, index, raw_index, max_pixels
        self.lock = threading.Lock()
        self.thumbnail = functools.lru_cache(maxsize=4096)(self._thumbnail)

    def info(self) -> dict:
        enc = self.encoder

        def describe(ix):
            return None if ix is None else {"n": len(ix), "kind": ix.kind, "width": ix.width,
                                            "predicted": ix.predicted is not None}

        filters, note = self.filters()
        return {"backbone": enc.backbone.name, "objective": enc.objective, "task": enc.objective,
                "selection": enc.selection, "attributes": enc.attributes,
                "width": enc.width, "validation": enc.metrics.get("validation", {}),
                "index": describe(self.index), "raw_index": describe(self.raw_index),
                "filters": filters, "filters_note": note}

    def filters(self) -> tuple[dict | None, str | None]:
        """(attribute -> values the results can be filtered by, None) or (None, why there are none)."""
        if not self.encoder.predicts_attributes:
            return None, (f"the model ({self.encoder.objective}) has no attribute classifiers, so the items have "
                          f"no predicted attributes to filter by")
        missing = [name for name, ix in (("index", self.index), ("raw index", self.raw_index))
                   if ix is not None and ix.predicted is None]
        if missing:
            return None, (f"the {' and the '.join(missing)} keep no predicted attributes (indexed before they were "
                          f"stored); rebuild with attrboost index --overwrite to filter")
        return dict(self.index.predicted.classes), None

    def matchers(self, specs: list[str]) -> dict:
        """index -> its ``keep`` function for ``specs`` (empty: no filter); a :class:`QueryError` (400) says
        what is wrong."""
        if not specs:
            return {}
        available, note = self.filters()
        if available is None:
            raise QueryError(400, f"cannot filter: {note}")
        try:
            return {id(ix): ix.predicted.matcher(ix.predicted.parse(specs))
                    for ix in (self.index, self.raw_index) if ix is not None}
        except FilterError as exc:
            raise QueryError(400, str(exc)) from None

    def _hits(self, index: VectorIndex, vectors: np.ndarray, k: int, keep=None) -> list[dict]:
        ids, scores = index.search(vectors, k, keep=keep)
        found = [(str(i), float(s)) for i, s in zip(ids[0], scores[0]) if i]
        attrs = (index.predicted.at(index.items.positions([i for i, _ in found])) if index.predicted is not None
                 else [None] * len(found))
        return [{"rank": r + 1, "id": i, "score": s, "thumb": f"/thumb/{quote(i, safe='')}", "predicted": a}
                for r, ((i, s), a) in enumerate(zip(found, attrs))]

    def search(self, image: Image.Image, k: int, query: dict, specs: list[str] | None = None) -> dict:
        keep = self.matchers(list(specs or []))  # a bad filter answers before the image is encoded
        with self.lock:
            X = self.encoder.image_features([image])
            predicted = self.encoder.predict_features(X)
            return {"query": query, "k": k, "filter": list(specs or []),
                    "predicted": {c: str(v) for c, v in predicted.iloc[0].items()},
                    "boosted": self._hits(self.index, self.encoder.transform(X), k, keep.get(id(self.index))),
                    "raw": None if self.raw_index is None else self._hits(self.raw_index, X, k,
                                                                          keep.get(id(self.raw_index)))}

    def path_of(self, item_id: str) -> str | None:
        """The path of an indexed item (the boosted index first, then the raw one); None: no such id."""
        for ix in (self.index, self.raw_index):
            if ix is not None:
                pos = ix.items.positions([item_id])[0]
                if pos >= 0:
                    return ix.items.paths_at([pos])[0]
        return None

    def indexed_image(self, item_id: str) -> Image.Image:
        path = self.path_of(item_id)
        if path is None:
            raise QueryError(404, f"no indexed item has id {item_id!r}")
        try:
            return load_image(path)
        except DataError:
            log.exception("indexed item %r cannot be read", item_id)
            raise QueryError(404, f"the image of indexed item {item_id!r} cannot be read on the server") from None

    def _thumbnail(self, item_id: str) -> bytes:
        img = self.indexed_image(item_id)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    def sample(self, limit: int, seed: int) -> list[dict]:
        n = len(self.index)
        pick = np.random.default_rng(seed).choice(n, size=min(limit, n), replace=False)
        return [{"id": str(i), "thumb": f"/thumb/{quote(str(i), safe='')}"} for i in self.index.items.ids_at(pick)]


def _web_file(name: str) -> str:
    return resources.files("attrboost.search").joinpath("web", name).read_text(encoding="utf-8")


def create_app(model_dir: str | os.PathLike, index_dir: str | os.PathLike,
               raw_index_dir: str | os.PathLike | None = None, *, device: str = "cpu", k: int = 10,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_image_pixels: int = MAX_IMAGE_PIXELS,
               encoder=None):
    """The FastAPI app serving ``index_dir`` (made by ``model_dir``) and, beside it, ``raw_index_dir`` (the same
    backbone's frozen features: ``attrboost index --raw``). Both indexes are checked against the model
    (:class:`~attrboost.search.index.IndexMismatchError` otherwise). ``k``: results shown by default (1..100);
    ``encoder``: an already loaded :func:`~attrboost.search.bundle.load_model` of ``model_dir`` (tests)."""
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k}: expected 1..{MAX_K}")
    encoder = encoder if encoder is not None else load_model(model_dir, device=device)
    index = VectorIndex.load(index_dir)
    index.check_model(encoder.identity)
    raw_index = None
    if raw_index_dir is not None:
        raw_index = VectorIndex.load(raw_index_dir)
        raw_index.check_model(encoder.raw_identity)
    encoder.preprocessing()  # builds the backbone now, not in the first request
    service = SearchService(encoder, index, raw_index, max_pixels=max_image_pixels)

    app = FastAPI(title="attrboost search", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + MULTIPART_SLACK)
    page = {name: _web_file(name) for name in ("index.html", "app.js", "app.css")}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update({"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                                 "X-Frame-Options": "DENY", "Content-Security-Policy": CSP})
        return response

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (details in the server's log)"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index_page():
        return HTMLResponse(page["index.html"].replace("{{K}}", str(k)))

    @app.get("/app.js")
    def script():
        return Response(page["app.js"], media_type="text/javascript")

    @app.get("/app.css")
    def style():
        return Response(page["app.css"], media_type="text/css")

    @app.get("/api/info")
    def info():
        return {**service.info(), "k": k, "max_k": MAX_K, "max_upload_bytes": max_upload_bytes}

    @app.post("/api/search")
    async def search_upload(image: UploadFile = File(..., description="the query image"),
                            k: int = Query(k, ge=1, le=MAX_K),
                            filter: list[str] = Query([], description="ATTRIBUTE:VALUE, repeatable")):  # noqa: A002
        service.matchers(filter)  # a bad filter: 400 before the upload is decoded
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise QueryError(413, f"the upload is more than {max_upload_bytes:,} bytes; uploads are limited to "
                                  f"{max_upload_bytes:,} bytes")
        img = decode_image(data, max_pixels=max_image_pixels)
        return await run_in_threadpool(service.search, img, k, {"upload": image.filename or "", "bytes": len(data)},
                                       filter)

    @app.get("/api/search")
    def search_id(id: str = Query(..., description="an indexed id"), k: int = Query(k, ge=1, le=MAX_K),  # noqa: A002
                  filter: list[str] = Query([], description="ATTRIBUTE:VALUE, repeatable")):  # noqa: A002
        service.matchers(filter)
        return service.search(service.indexed_image(id), k, {"id": id, "thumb": f"/thumb/{quote(id, safe='')}"},
                              filter)

    @app.get("/api/catalogue")
    def catalogue(limit: int = Query(24, ge=1, le=200), seed: int = Query(0, ge=0, le=2**32 - 1)):
        return {"n": len(index), "items": service.sample(limit, seed)}

    @app.get("/thumb/{item_id:path}")
    def thumb(item_id: str):
        try:
            data = service.thumbnail(item_id)
        except QueryError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    return app


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning", timeout: float = 30):
    """Serve ``app`` with uvicorn in a background thread for the ``with`` block; yields its base URL
    (``port=0``: a free port, bound before the server starts). For tests, benchmarks and screenshots."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="attrboost-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server did not start within {timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
