"""attrboost serve: the JSON API against independent computations, every refused input, the raw index
(`attrboost index --raw`), concurrent queries on a real server, and the page in a real headless browser
(Debian's chromium driven by Playwright)."""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import attrboost  # noqa: E402
from attrboost.search.cli import main  # noqa: E402
from attrboost.data import load_image  # noqa: E402
from attrboost.search.index import IndexMismatchError  # noqa: E402
from attrboost.search.serve import THUMB_SIZE, create_app, running  # noqa: E402

K = 5
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, shapes_model):
    """A boosted index and a raw (`--raw`) index of the 40 generated images of conftest's shapes_model, made
    with its model (the images and the model are shared: the tests only read them)."""
    root = tmp_path_factory.mktemp("serve")
    images = shapes_model.images
    for out, extra in (("ix", []), ("raw", ["--raw"])):
        assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(root / out),
                     "-q", *extra]) == 0
    return root, images


@pytest.fixture(scope="module")
def encoder(shapes_model):
    return attrboost.load_model(shapes_model.model)


@pytest.fixture(scope="module")
def app(work, shapes_model, encoder):
    root, _ = work
    return create_app(shapes_model.model, root / "ix", root / "raw", k=K, encoder=encoder)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def reference(work, encoder):
    """Independent answers: every indexed image encoded by the file pipeline (batched), cosine by numpy."""
    _, images = work
    gallery = sorted(images.glob("s*.jpg"), key=lambda p: int(p.stem[1:]))
    F = encoder.features(gallery)[0]
    return [p.stem for p in gallery], gallery, F, encoder.transform(F)


def _upload(client, path_or_bytes, k=K, name="q.jpg", **kw):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return client.post(f"/api/search?k={k}", files={"image": (name, data, "application/octet-stream")}, **kw)


def _top(G, q, k):
    S = (G / np.linalg.norm(G, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    top = np.argsort(-S, kind="stable")[:k]
    return top, S[top]


def _check_hits(hits, names, G, q, k):
    top, scores = _top(G, q, k)
    assert [h["id"] for h in hits] == [names[t] for t in top]
    assert [h["rank"] for h in hits] == list(range(1, k + 1))
    np.testing.assert_allclose([h["score"] for h in hits], scores, atol=1e-4)
    assert all(h["thumb"] == f"/thumb/{quote(h['id'], safe='')}" for h in hits)


@pytest.mark.parametrize("q", [0, 7])
def test_upload_search_equals_brute_force(client, encoder, reference, q):
    names, gallery, F, V = reference
    r = _upload(client, gallery[q], name=gallery[q].name)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["k"] == K and out["query"] == {"upload": gallery[q].name, "bytes": gallery[q].stat().st_size}
    _check_hits(out["boosted"], names, V, V[q], K)
    _check_hits(out["raw"], names, F, F[q], K)
    assert out["boosted"][0]["id"] == names[q] and out["raw"][0]["id"] == names[q]  # an indexed image finds itself
    assert out["predicted"] == encoder.predict([gallery[q]]).iloc[0].to_dict()
    assert set(out["predicted"]) == {"colour", "shape"}


def test_query_by_id_equals_upload_and_k(client, reference):
    names, gallery, F, V = reference
    by_id = client.get("/api/search", params={"id": "s3", "k": 7}).json()
    up = _upload(client, gallery[3], k=7).json()
    assert by_id["query"] == {"id": "s3", "thumb": "/thumb/s3"}
    for side in ("boosted", "raw", "predicted"):
        assert by_id[side] == up[side]
    assert len(by_id["boosted"]) == 7
    assert len(client.get("/api/search", params={"id": "s3", "k": 100}).json()["boosted"]) == 40  # all there is
    r = client.get("/api/search", params={"id": "nope"})
    assert r.status_code == 404 and r.json()["detail"] == "no indexed item has id 'nope'"
    for bad_k in (0, 101, "x"):
        assert client.get("/api/search", params={"id": "s3", "k": bad_k}).status_code == 422


def test_info_and_catalogue(client, reference, encoder):
    names = reference[0]
    info = client.get("/api/info").json()
    assert info["backbone"] == "efficientnet_lite0" and info["attributes"] == ["colour", "shape"]
    assert info["index"] == {"n": 40, "kind": "flat", "width": encoder.width, "predicted": True}
    assert info["raw_index"] == {"n": 40, "kind": "flat", "width": 1280, "predicted": True}
    assert info["objective"] == "task1" and info["selection"] == "val_map@r"
    assert info["filters"] == encoder.classes and info["filters_note"] is None
    assert info["validation"] == encoder.metrics["validation"] and info["k"] == K
    a = client.get("/api/catalogue", params={"limit": 12, "seed": 3}).json()
    b = client.get("/api/catalogue", params={"limit": 12, "seed": 3}).json()
    c = client.get("/api/catalogue", params={"limit": 12, "seed": 4}).json()
    ids = [it["id"] for it in a["items"]]
    assert a == b and ids != [it["id"] for it in c["items"]] and a["n"] == 40
    assert len(set(ids)) == 12 and set(ids) <= set(names)
    assert len(client.get("/api/catalogue", params={"limit": 200}).json()["items"]) == 40


def test_results_show_predictions_and_filters_keep_k_matching_items(client, encoder, reference):
    names, _, F, V = reference
    pred = encoder.head.predict_attributes(F)  # the head's own predictions of every indexed item
    got = client.get("/api/search", params={"id": "s3", "k": K}).json()
    for col in ("boosted", "raw"):
        for h in got[col]:
            assert {a: v["value"] for a, v in h["predicted"].items()} == pred.iloc[names.index(h["id"])].to_dict()
    for attr in ("colour", "shape"):
        value = pred[attr].value_counts().index[0]  # the most predicted value: at least K items have it
        assert (pred[attr] == value).sum() >= K
        out = client.get("/api/search", params=[("id", "s3"), ("k", K), ("filter", f"{attr}:{value}")]).json()
        assert out["filter"] == [f"{attr}:{value}"]
        ok = np.flatnonzero((pred[attr] == value).to_numpy())
        for col, G in (("boosted", V), ("raw", F)):
            top = ok[np.argsort(-((G[ok] / np.linalg.norm(G[ok], axis=1, keepdims=True)) @ (G[3] / np.linalg.norm(G[3]))),
                                kind="stable")][:K]
            assert [h["id"] for h in out[col]] == [names[t] for t in top]  # the best K matching, in order
            assert all(h["predicted"][attr]["value"] == value for h in out[col])


@pytest.mark.parametrize("spec, message", [("material:wood", "unknown attribute 'material'"),
                                           ("colour:navy", "colour has no value 'navy'"),
                                           ("colour", "expected ATTRIBUTE:VALUE")])
def test_bad_filters_get_a_400_that_says_why(client, work, spec, message):
    _, images = work
    r = client.get("/api/search", params={"id": "s3", "k": K, "filter": spec})
    assert r.status_code == 400 and message in r.json()["detail"]
    r = _upload(client, images / "s1.jpg", params={"filter": spec})
    assert r.status_code == 400 and message in r.json()["detail"]


def test_thumbnails_only_for_indexed_ids(client, work):
    _, images = work
    r = client.get("/thumb/s4")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    got = Image.open(io.BytesIO(r.content))
    want = load_image(images / "s4.jpg")
    want.thumbnail((THUMB_SIZE, THUMB_SIZE))
    assert got.size == want.size
    assert np.abs(np.asarray(got, float) - np.asarray(want, float)).mean() < 3  # JPEG re-encoding only
    # no part of a request reaches the file system: an existing file's path is not an id
    for bad in ("nope", quote(str(images / "s4.jpg"), safe=""), str(images / "s4.jpg"), "..%2F..%2Fetc%2Fpasswd",
                "zz_broken"):
        r = client.get(f"/thumb/{bad}")
        assert r.status_code == 404 and r.json()["detail"].startswith("no indexed item has id"), bad


def _png_header(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb's signature)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_client(work, shapes_model, encoder):
    """Limits small enough to test cheaply: 20,000-byte uploads, 5,000-pixel images."""
    root, _ = work
    app = create_app(shapes_model.model, root / "ix", encoder=encoder, max_upload_bytes=20_000, max_image_pixels=5_000)
    with TestClient(app) as c:
        yield c


def test_bad_uploads_get_a_4xx_with_a_message_and_the_server_keeps_serving(client, small_client, work):
    _, images = work
    good = (images / "s1.jpg").read_bytes()
    cases = [
        (client, b"", 400, "the upload is empty"),
        (client, b"name,colour\nx,red\n", 415, "is not an image file"),
        (client, good[: len(good) // 2], 400, "cannot be decoded (OSError: image file is truncated"),
        (client, _png_header(20_000, 20_000), 413, "possible decompression bomb"),  # PIL's own check
        (client, _png_header(9_000, 9_000), 413, "9000 x 9000 = 81,000,000 pixels; at most 64,000,000"),
        (small_client, _png(100, 100), 413, "100 x 100 = 10,000 pixels; at most 5,000"),
        (small_client, b"\0" * 20_001, 413, "the upload is more than 20,000 bytes"),  # the file part
        (small_client, b"\0" * 100_000, 413, "the request body is"),  # the whole body, by Content-Length
    ]
    for c, data, status, message in cases:
        r = _upload(c, data)
        assert r.status_code == status, (message, r.text)
        assert message in r.json()["detail"]
        assert "Traceback" not in r.text
        assert _upload(c, good).status_code == 200  # still serving
    assert _upload(small_client, _png(60, 80)).status_code == 200  # under both limits

    def chunks():  # no Content-Length: refused as the streamed body passes the limit
        for _ in range(20):
            yield b"\0" * 10_000
    r = small_client.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "the request body is more than" in r.json()["detail"]
    r = client.post("/api/search", files={"other": ("q.jpg", good)})
    assert r.status_code == 422 and "image" in r.text  # the field is named
    assert _upload(client, good, k=0).status_code == 422


def test_unexpected_errors_answer_a_generic_500(app, work, monkeypatch):
    _, images = work

    def boom(*a, **kw):
        raise RuntimeError("secret detail at /root/somewhere")
    monkeypatch.setattr(app.state.service.encoder, "image_features", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _upload(c, images / "s1.jpg")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error (details in the server's log)"}


def test_page_is_self_contained_with_safe_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'data-k="5"' in r.text and 'id="upload"' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and r.headers["x-content-type-options"] == "nosniff"
    for name in ("/", "/app.js", "/app.css"):
        body = client.get(name).text
        assert "http://" not in body and "https://" not in body and "//cdn" not in body, name
    assert client.get("/app.js").headers["content-type"].startswith("text/javascript")
    for hidden in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(hidden).status_code == 404


def test_raw_index_holds_backbone_features_and_mismatches_are_refused(work, shapes_model, encoder, reference,
                                                                       capsys):
    root, images = work
    names, gallery, F, _ = reference
    meta = json.loads((root / "raw" / "index.json").read_text())
    assert meta["model"]["space"] == "raw" and meta["width"] == 1280 and "head_sha256" not in meta["model"]
    assert meta["model"]["weights_sha256"] == encoder.identity["weights_sha256"]
    capsys.readouterr()
    assert main(["search", "--index", str(root / "raw"), str(gallery[5]), "-k", "4", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["results"]
    top, scores = _top(F, F[5], 4)
    assert [h["id"] for h in hits] == [names[t] for t in top]
    np.testing.assert_allclose([h["score"] for h in hits], scores, atol=1e-5)
    with pytest.raises(IndexMismatchError, match="holds frozen backbone features .* query vectors are boosted"):
        create_app(shapes_model.model, root / "raw", encoder=encoder)
    with pytest.raises(IndexMismatchError, match="holds boosted vectors, but the query vectors are frozen backbone"):
        create_app(shapes_model.model, root / "ix", root / "ix", encoder=encoder)
    # appending raw features to a boosted index is refused too
    assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(root / "ix"),
                 "--add", "--raw", "-q"]) == 2
    assert "holds boosted vectors" in capsys.readouterr().err


def test_cli_serve_defaults_to_localhost_and_needs_the_extra(work, shapes_model, monkeypatch, capsys):
    import uvicorn

    root, _ = work
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", "--model", str(shapes_model.model), "--index", str(root / "ix")]) == 0
    app, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 7860
    assert app.state.service.raw_index is None
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--model", str(shapes_model.model), "--index", str(root / "ix"), "--raw-index",
                 str(root / "raw"), "--host", "0.0.0.0", "--port", "8123", "-k", "3"]) == 0
    app, kw = calls[-1]
    assert (kw["host"], kw["port"]) == ("0.0.0.0", 8123) and len(app.state.service.raw_index) == 40
    assert "warning: --host 0.0.0.0 serves the page to every machine" in capsys.readouterr().err
    assert main(["serve", "--model", str(shapes_model.model), "--index", str(root / "raw")]) == 2
    assert "holds frozen backbone features" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve", "--model", str(shapes_model.model), "--index", str(root / "ix")]) == 2
    assert 'pip install -e ".[serve]"' in capsys.readouterr().err
    assert len(calls) == 2


def test_demo_data_writes_a_catalogue_fit_reads(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--n-groups", "2", "--per-group", "3", "-q"]) == 0
    cat = attrboost.load_csv(out / "styles.csv", out / "images", attributes=["articleType", "baseColour"])
    assert len(cat.items) == len(list((out / "images").glob("*.jpg"))) >= 6
    assert all(os.path.isfile(p) for p in cat.items["image_path"])
    assert main(["demo-data", str(out), "-q"]) == 2
    assert "expected a new or empty folder" in capsys.readouterr().err
    assert main(["demo-data", str(tmp_path / "d2"), "--n-groups", "0", "-q"]) == 2
    assert "--n-groups 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ real server
@pytest.fixture(scope="module")
def server(app):
    with running(app) as url:
        yield url


def test_concurrent_queries_match_sequential_answers(server, client, reference):
    """40 queries (uploads and ids) from 8 threads against the real server: no errors, and every answer is
    the one the same query gets alone (the lock keeps concurrent forward passes and searches apart)."""
    import httpx

    names, gallery, _, _ = reference
    queries = [("upload", i) if n % 2 else ("id", names[i]) for n, i in enumerate(np.arange(40) % 6)]

    def ask(c, q):
        kind, what = q
        if kind == "id":
            return c.get("/api/search", params={"id": what, "k": K})
        return _upload(c, gallery[what])

    expected = {q: ask(client, q).json() for q in set(queries)}

    def worker(chunk):
        with httpx.Client(base_url=server, timeout=60) as c:
            return [(q, ask(c, q)) for q in chunk]

    with ThreadPoolExecutor(8) as pool:
        done = [x for part in pool.map(worker, [queries[i::8] for i in range(8)]) for x in part]
    assert len(done) == 40
    for q, r in done:
        assert r.status_code == 200, r.text
        got, want = r.json(), expected[q]
        assert len(got["boosted"]) == len(got["raw"]) == K
        assert [h["id"] for h in got["boosted"]] == [h["id"] for h in want["boosted"]]
        assert [h["id"] for h in got["raw"]] == [h["id"] for h in want["raw"]]
        np.testing.assert_allclose([h["score"] for h in got["boosted"]], [h["score"] for h in want["boosted"]],
                                   atol=1e-5)
        assert got["predicted"] == want["predicted"]


def _browser_or_skip():
    """Playwright for Python with Debian's chromium; missing locally: skip; missing in CI (CI=true): fail."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the Python package playwright is not installed (pip install -e '.[dev]')"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run under CI: {problem}")
        pytest.skip(problem)


@pytest.mark.slow
def test_page_in_a_real_browser_shows_k_results_side_by_side(server, reference, tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    names, gallery, F, V = reference
    loaded = """([sel, k]) => { const imgs = [...document.querySelectorAll(sel + ' .card img')];
        return imgs.length === k && imgs.every(i => i.complete && i.naturalWidth > 0); }"""

    def ids(page, column):
        return page.eval_on_selector_all(f"#{column} .card", "cs => cs.map(c => c.dataset.id)")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # bypass_csp: Playwright polls wait_for_function predicates with eval, which the page's own CSP
            # (script-src self, tested in test_page_is_self_contained_with_safe_headers) forbids
            page = browser.new_page(bypass_csp=True)
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(server + "/")
            page.wait_for_function("document.querySelector('#model').textContent.includes('40 indexed items')")
            page.wait_for_function(loaded.replace(" .card img", " .pick img"), arg=["#catalogue", 24])
            # upload a query image: k thumbnails in each column, in the brute-force order
            page.set_input_files("#upload", str(gallery[2]))
            page.wait_for_function(loaded, arg=["#boosted", K])
            page.wait_for_function(loaded, arg=["#raw", K])
            assert ids(page, "boosted") == [names[t] for t in _top(V, V[2], K)[0]]
            assert ids(page, "raw") == [names[t] for t in _top(F, F[2], K)[0]]
            assert ids(page, "boosted")[0] == "s2"
            chips = page.inner_text("#predicted")
            assert "colour:" in chips and "shape:" in chips
            assert page.is_hidden("#error")
            # pick from the catalogue: the picked item leads both columns
            pick = page.get_attribute("#catalogue .pick:nth-child(5)", "data-id")
            page.click("#catalogue .pick:nth-child(5)")
            page.wait_for_function(f"document.querySelector('#boosted .card')?.dataset.id === {json.dumps(pick)}")
            page.wait_for_function(loaded, arg=["#boosted", K])
            assert ids(page, "raw")[0] == pick
            # a bad upload: a message on the page, the results stay usable
            bad = tmp_path / "notes.jpg"
            bad.write_text("not an image")
            page.set_input_files("#upload", str(bad))
            page.wait_for_selector("#error:not([hidden])")
            assert "415" in page.inner_text("#error") and "not an image file" in page.inner_text("#error")
            page.select_option("#k", "10")  # re-runs the last query with the new k
            page.wait_for_function(loaded, arg=["#boosted", 10])
            # each result shows its predicted attributes; a filter dropdown re-runs the query with the filter
            assert all("colour: " in t and "shape: " in t
                       for t in page.eval_on_selector_all("#boosted .card .attrs", "as => as.map(a => a.textContent)"))
            shapes = page.eval_on_selector_all("#filter-selects select[data-attribute=shape] option",
                                               "os => os.map(o => o.value)")
            assert shapes[0] == "" and sorted(shapes[1:]) == ["disc", "square"]
            page.select_option("#filter-selects select[data-attribute=shape]", "square")
            page.wait_for_function("document.querySelector('#boosted-note').textContent.includes('filter: shape:square')")
            texts = page.eval_on_selector_all("#boosted .card .attrs, #raw .card .attrs",
                                              "as => as.map(a => a.textContent)")
            assert texts and all("shape: square" in t for t in texts)
            assert page.is_hidden("#filters-note") and page.is_hidden("#error")
            assert not failed, failed
        finally:
            browser.close()
