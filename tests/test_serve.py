"""The HTTP service over real HTTP on 127.0.0.1 (uvicorn in a thread), on a copy of the tiny run."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from mmrec import Recommender  # noqa: E402
from mmrec.serve.app import create_app  # noqa: E402
from mmrec.serve.confine import PathNotAllowedError, confine, resolve_roots  # noqa: E402

KEY = "s3cret-key"
NEW = {"item_id": "api-knit", "title": "Quantum Knitting Adventures",
       "description": "A documentary about knitting wool sweaters in quantum physics laboratories."}
NEW_TEXT = f"{NEW['title']}. {NEW['description']}"
AUTH = {"X-API-Key": KEY}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    base = tmp_path_factory.mktemp("serve")
    run = shutil.copytree(tiny_run, base / "run", ignore=shutil.ignore_patterns("checkpoints", "serving"))
    rec = Recommender.from_run(run)
    roots = base / "images"
    roots.mkdir()
    app = create_app(rec, api_key=KEY, image_roots=[roots], max_body_bytes=64 * 1024)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield SimpleNamespace(client=client, rec=rec, roots=roots, base=base)
    srv.should_exit = True
    thread.join(timeout=15)


def test_health_and_openapi(server: SimpleNamespace) -> None:
    c = server.client
    health = c.get("/health").json()
    assert health["status"] == "ok" and health["items"] == 1682 and health["users"] == 943
    assert "/" not in health["run"]  # no server paths
    assert c.get("/docs").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/health", "/recommend", "/similar", "/items"} <= set(paths) and "delete" in paths["/items"]


def test_recommend_and_similar(server: SimpleNamespace) -> None:
    c = server.client
    r = c.post("/recommend", json={"user_id": "1", "k": 5, "explain": True})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 5 and all(it["because"] for it in items)
    assert not set(server.rec.history("1")) & {it["item_id"] for it in items}
    pop = c.post("/recommend", json={"user_id": "stranger"}).json()["items"]
    assert len(pop) == 10 and pop[0]["source"] == "popularity"
    assert c.post("/recommend", json={"history": ["nope", "1"], "k": 3}).json()["items"][0]["source"] == "history"
    sim = c.post("/similar", json={"item_id": "1", "k": 4})
    assert sim.status_code == 200 and len(sim.json()["items"]) == 4
    missing = c.post("/similar", json={"item_id": "no-such-item"})
    assert missing.status_code == 404 and "no-such-item" in missing.json()["detail"]


@pytest.mark.parametrize("path,payload", [
    ("/recommend", {"user_id": "1", "k": 0}),
    ("/recommend", {"user_id": "1", "k": 1001}),
    ("/recommend", {"user_id": "1", "k": "many"}),
    ("/recommend", {"user_id": "1", "surprise": True}),
    ("/recommend", {"history": "1,2,3"}),
    ("/recommend", {"query_text": "x" * 20_001}),
    ("/similar", {"k": 3}),
    ("/similar", {"item_id": "1", "text": "both"}),
    ("/items", {"items": []}),
    ("/items", {"items": [{"title": "no id"}]}),
])
def test_bad_payloads_get_422(server: SimpleNamespace, path: str, payload: dict) -> None:
    r = server.client.post(path, json=payload, headers=AUTH)
    assert r.status_code == 422, r.text
    assert "Traceback" not in r.text


def test_invalid_json_and_oversize_bodies(server: SimpleNamespace) -> None:
    c = server.client
    bad = c.post("/recommend", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422
    big = {"history": [f"item-{i:06d}" for i in range(8000)]}  # ~130 kB > the 64 kB limit
    assert c.post("/recommend", json=big).status_code == 413
    chunks = (b'{"history": [' + b'"x",' * 20_000 + b'"y"]}',)  # streamed (chunked), no Content-Length
    r = c.post("/recommend", content=iter(chunks), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_onboard_needs_key_and_is_immediately_recommendable(server: SimpleNamespace) -> None:
    c = server.client
    assert c.post("/items", json={"items": [NEW]}).status_code == 401
    assert c.post("/items", json={"items": [NEW]}, headers={"X-API-Key": "wrong"}).status_code == 401
    r = c.post("/items", json={"items": [NEW]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["added"] == ["api-knit"] and r.json()["items_served"] == 1683
    top = c.post("/similar", json={"text": NEW_TEXT, "k": 3}).json()["items"]
    assert top[0]["item_id"] == "api-knit"
    # a user whose history is about it: a clone of the user's best match is recommended with it
    best = c.post("/recommend", json={"user_id": "7", "k": 1}).json()["items"][0]
    from mmrec.data.prepare import load_prepared

    row = load_prepared("ml-100k").catalog.df.set_index("item_id").loc[best["item_id"]]
    clone = {"item_id": "api-clone", "title": row["title"], "description": row["description"],
             "categories": list(row["categories"])}
    assert c.post("/items", json={"items": [clone]}, headers=AUTH).json()["added"] == ["api-clone"]
    recs = c.post("/recommend", json={"user_id": "7", "k": 10}).json()["items"]  # tiny model: scores within 0.01
    assert "api-clone" in {it["item_id"] for it in recs}
    assert c.post("/recommend", json={"history": ["api-knit"], "k": 3}).json()["items"][0]["source"] == "history"
    # removal
    assert c.request("DELETE", "/items", json={"item_ids": ["api-knit"]}).status_code == 401
    d = c.request("DELETE", "/items", json={"item_ids": ["api-knit", "ghost"]}, headers=AUTH)
    assert d.status_code == 200 and d.json()["removed"] == ["api-knit"] and d.json()["missing"] == ["ghost"]
    top = c.post("/similar", json={"text": NEW_TEXT, "k": 10}).json()["items"]
    assert "api-knit" not in {it["item_id"] for it in top}


def test_image_paths_are_confined(server: SimpleNamespace, tmp_path: Path) -> None:
    c = server.client
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not really a png")
    (server.roots / "escape.png").symlink_to(outside)
    (server.roots / "inside.png").write_bytes(b"not really a png")
    for path in ("../secret.png", str(outside), "escape.png", "/etc/passwd"):
        r = c.post("/similar", json={"image": path})
        assert r.status_code == 403, (path, r.text)
    inside = c.post("/similar", json={"image": "inside.png"})  # allowed path; this run is text-only
    assert inside.status_code == 400 and "image" in inside.json()["detail"]
    r = c.post("/items", json={"items": [{"item_id": "img-out", "title": "x", "image": str(outside)}]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["failed"][0]["item_id"] == "img-out" and r.json()["added"] == []


def test_confine_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    roots = resolve_roots([root])
    assert confine("sub/a.png", roots) == (root / "sub" / "a.png").resolve()
    assert confine(str(root / "sub" / "a.png"), roots).name == "a.png"
    for bad in ("sub/../sub/a.png", "missing.png", "sub", ""):
        with pytest.raises(PathNotAllowedError):
            confine(bad, roots)
    with pytest.raises(PathNotAllowedError, match="disabled"):
        confine("sub/a.png", [])


def test_concurrent_queries_and_onboarding(server: SimpleNamespace) -> None:
    c = server.client

    def query(i: int) -> int:
        return c.post("/recommend", json={"user_id": str(1 + i % 50), "k": 10}).status_code

    def onboard(i: int) -> int:
        item = {"item_id": f"conc-{i}", "title": f"Concurrent film number {i}", "categories": ["Drama"]}
        return c.post("/items", json={"items": [item]}, headers=AUTH).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(query, i) for i in range(24)] + [pool.submit(onboard, i) for i in range(4)]
        codes = [f.result(timeout=180) for f in futures]
    assert codes == [200] * 28
    assert all(f"conc-{i}" in server.rec for i in range(4))


def test_internal_errors_are_plain_500(server: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**kwargs: object) -> None:
        raise RuntimeError("secret internals at /srv/model.py line 3")

    monkeypatch.setattr(server.rec, "recommend", boom)
    r = server.client.post("/recommend", json={"user_id": "1"})
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
