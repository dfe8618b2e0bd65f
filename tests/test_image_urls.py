"""Item images from URLs: off by default, size- and time-capped, no private hosts, in the library, CLI and API.

A local ``http.server`` on 127.0.0.1 plays the remote host (so tests that
download allow private hosts and plain http); a small text+image run trained
on a 12-item generic catalog of generated pictures does the embedding.
"""
from __future__ import annotations

import io
import ipaddress
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from mmrec import Recommender
from mmrec.commands._serving import image_url_policy
from mmrec.errors import MMRecError
from mmrec.serve import image_urls
from mmrec.serve.image_urls import ImageFetchError, ImageURLPolicy, fetch_image, is_image_url

LIMIT = 100_000
# the local test server is on 127.0.0.1 over http: allowed only by these policies
LOCAL = ImageURLPolicy(enabled=True, schemes=("http",), allow_private_hosts=True, max_bytes=LIMIT, timeout_s=5)
FAST = ImageURLPolicy(enabled=True, schemes=("http",), allow_private_hosts=True, max_bytes=LIMIT, timeout_s=0.5)
TEXT = {"title": "Sunset gradient poster", "description": "A warm orange gradient print for the living room."}


def _png() -> bytes:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    arr = np.stack([np.tile(x, (64, 1)), np.tile(x[:, None], (1, 64)), np.full((64, 64), 90, np.uint8)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: one request per connection, a body without Content-Length ends when the server closes."""

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, ctype="text/plain", Location=location)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        route = self.path.split("?", 1)[0]
        try:
            if route == "/poster.png":
                self._send(200, PNG)
            elif route == "/huge":  # says 50 MB up front
                self.send_response(200)
                self.send_header("Content-Length", str(50_000_000))
                self.end_headers()
                self.wfile.write(b"\0" * 1000)
            elif route == "/stream":  # no Content-Length: only counting while reading catches it
                self.send_response(200)
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            elif route == "/slow":  # headers only after 2 s
                time.sleep(2.0)
                self._send(200, PNG)
            elif route == "/drip":  # a byte every 50 ms: no single read times out, the total does
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(60):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif route == "/to-private":  # the classic: the cloud metadata service
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif route == "/to-https":
                self._redirect(f"https://127.0.0.1:{self.server.server_port}/poster.png")
            elif route == "/to-poster":
                self._redirect("/poster.png")
            elif route == "/loop":
                self._redirect("/loop")
            elif route == "/page":
                self._send(200, b"<html>not an image</html>", ctype="text/html")
            else:
                self._send(404, b"not found", ctype="text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


@pytest.fixture(scope="module")
def server() -> Iterator[SimpleNamespace]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_port
    yield SimpleNamespace(url=lambda path: f"http://127.0.0.1:{port}{path}", port=port, hits=httpd.hits)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text+image run on 12 generated pictures (a few seconds once the image model is assembled)."""
    from mmrec.config import load_config
    from mmrec.pipeline import make_trainer

    base = tmp_path_factory.mktemp("shop")
    (base / "img").mkdir()
    rows = ["item_id,title,image"]
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.new("RGB", (48, 48), tuple(int(c) for c in rng.integers(0, 256, 3))).save(base / "img" / f"{i}.png")
        rows.append(f"p{i},Product number {i},img/{i}.png")
    (base / "items.csv").write_text("\n".join(rows) + "\n")
    events = ["user_id,item_id,timestamp"]
    for u in range(20):
        events += [f"u{u},p{i},{t}" for t, i in enumerate(rng.choice(12, size=6, replace=False))]
    (base / "events.csv").write_text("\n".join(events) + "\n")
    cfg = load_config(None, [
        "data.name=shop", f"data.path={base}", "data.catalog={path: items.csv}", "data.interactions={path: events.csv}",
        "split.cold_item_fraction=0.0", "model.dim=16", "model.layers=1", "model.heads=1", "model.max_len=8",
        "model.use_image=true", "model.use_id=false", "encoders.image.image_size=64", "loss.contrastive_weight=0.0",
        "train.max_steps=2", "train.epochs=1", "train.batch_size=8", "train.warmup_steps=1", "train.eval_every=2",
        "train.checkpoint_every=2"])
    make_trainer(cfg, str(base / "run")).train()
    return base / "run"


@pytest.fixture(scope="module")
def rec(image_run: Path) -> Recommender:
    r = Recommender.from_run(image_run, persist=False)
    assert r.modalities == ["text", "image"] and not r.image_urls.enabled  # off by default
    return r


# -- the policy and the downloader ------------------------------------------------------------

def test_policy_defaults_and_validation() -> None:
    p = ImageURLPolicy()
    assert (p.enabled, p.max_bytes, p.timeout_s, p.schemes, p.allow_private_hosts) == \
        (False, 10 * 1024 * 1024, 10.0, ("https",), False)
    assert ImageURLPolicy(schemes=["HTTPS", "http"]).schemes == ("https", "http")  # a tuple: hashable
    with pytest.raises(AttributeError):
        p.enabled = True  # type: ignore[misc]  # frozen
    for bad in ({"max_bytes": 0}, {"max_bytes": 1.5}, {"timeout_s": 0}, {"timeout_s": float("nan")},
                {"schemes": ("ftp",)}, {"schemes": ()}, {"max_redirects": -1}):
        with pytest.raises(MMRecError, match="image URL policy"):
            ImageURLPolicy(**bad)
    assert is_image_url("HTTPS://x.org/a.png") and not is_image_url("/srv/a.png") and not is_image_url(None)


def test_disabled_and_bad_scheme_refused_before_any_request(server: SimpleNamespace, tmp_path: Path) -> None:
    url = server.url("/poster.png")
    before = len(server.hits)
    with pytest.raises(ImageFetchError, match="--allow-image-urls") as exc:
        fetch_image(url, tmp_path, ImageURLPolicy())
    assert exc.value.reason == "disabled" and url in str(exc.value)
    with pytest.raises(ImageFetchError, match="scheme 'http' is not allowed; only https") as exc:
        fetch_image(url, tmp_path, ImageURLPolicy(enabled=True))
    assert exc.value.reason == "bad_scheme"
    with pytest.raises(ImageFetchError) as exc:
        fetch_image("file:///etc/passwd", tmp_path, LOCAL)
    assert exc.value.reason == "bad_scheme"
    assert len(server.hits) == before and not list(tmp_path.iterdir())


def test_private_hosts_refused_unless_allowed(server: SimpleNamespace, tmp_path: Path) -> None:
    public_only = ImageURLPolicy(enabled=True, schemes=("http", "https"))
    before = len(server.hits)
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        with pytest.raises(ImageFetchError, match=r"(loopback|private) address\); only public hosts") as exc:
            fetch_image(f"http://{host}:{server.port}/poster.png", tmp_path, public_only)
        assert exc.value.reason == "private_address"
    assert len(server.hits) == before  # refused before connecting
    assert image_urls.address_refusal(ipaddress.ip_address("169.254.169.254")) == "link-local"
    assert image_urls.address_refusal(ipaddress.ip_address("10.0.0.7")) == "private"
    assert image_urls.address_refusal(ipaddress.ip_address("93.184.216.34")) is None


def test_redirects_are_rechecked_every_hop(server: SimpleNamespace, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert fetch_image(server.url("/to-poster"), tmp_path, LOCAL).read_bytes() == PNG  # an allowed hop is followed
    with pytest.raises(ImageFetchError, match="redirected to https://") as exc:  # http-only policy, https hop
        fetch_image(server.url("/to-https"), tmp_path, LOCAL)
    assert exc.value.reason == "bad_scheme"
    with pytest.raises(ImageFetchError, match="more than 3 redirects") as exc:
        fetch_image(server.url("/loop"), tmp_path, LOCAL)
    assert exc.value.reason == "redirect"
    # a public first hop that redirects to the metadata service: pretend 127.0.0.1 is public for this test
    real = image_urls.address_refusal
    monkeypatch.setattr(image_urls, "address_refusal", lambda ip: None if ip.is_loopback else real(ip))
    public_only = ImageURLPolicy(enabled=True, schemes=("http",), timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(ImageFetchError, match=r"169\.254\.169\.254 \(link-local address\)") as exc:
        fetch_image(server.url("/to-private"), tmp_path, public_only)
    assert exc.value.reason == "private_address" and time.monotonic() - t0 < 2  # refused, never connected


def test_size_cap_by_header_and_while_streaming(server: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ImageFetchError, match=f"50000000 bytes by Content-Length.*limit of {LIMIT} bytes") as exc:
        fetch_image(server.url("/huge"), tmp_path, LOCAL)
    assert exc.value.reason == "too_large"
    t0 = time.monotonic()
    with pytest.raises(ImageFetchError, match=f"body is over the limit of {LIMIT} bytes") as exc:
        fetch_image(server.url("/stream"), tmp_path, LOCAL)
    assert exc.value.reason == "too_large" and time.monotonic() - t0 < 3
    assert not list(tmp_path.iterdir())  # no partial files


@pytest.mark.parametrize("path", ["/slow", "/drip"])
def test_total_time_limit(server: SimpleNamespace, tmp_path: Path, path: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(ImageFetchError, match=r"longer than 0\.5 s") as exc:
        fetch_image(server.url(path), tmp_path, FAST)
    assert exc.value.reason == "timeout" and time.monotonic() - t0 < 1.5
    assert not list(tmp_path.iterdir())


def test_http_errors_name_the_status(server: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ImageFetchError, match="HTTP 404") as exc:
        fetch_image(server.url("/missing.png?sig=secret"), tmp_path, LOCAL)
    assert exc.value.reason == "http_status"
    assert "/missing.png?..." in str(exc.value) and "secret" not in str(exc.value)  # signed tokens not echoed


# -- onboarding -------------------------------------------------------------------------------

def test_disabled_by_default_keeps_the_text_vector(rec: Recommender, server: SimpleNamespace) -> None:
    before = len(server.hits)
    out = rec.onboard([dict(TEXT, item_id="url-off", image=server.url("/poster.png")),
                       dict(TEXT, item_id="text-twin")])
    assert out["added"] == ["url-off", "text-twin"] and out["failed"] == []
    assert any("url-off" in w and "image URLs are disabled; enable with --allow-image-urls" in w
               for w in out["warnings"])
    assert len(server.hits) == before  # nothing was fetched
    np.testing.assert_allclose(rec.index.vector("url-off"), rec.index.vector("text-twin"), atol=1e-6)
    assert rec.similar_items(text=f"{TEXT['title']}. {TEXT['description']}", k=2)[0]["item_id"] in \
        {"url-off", "text-twin"}
    # no text either: the item fails with the reason, the rest of the batch goes on
    out = rec.onboard([{"item_id": "url-only", "image": server.url("/poster.png")}])
    assert out["added"] == [] and "--allow-image-urls" in out["failed"][0]["reason"]


def test_enabled_fetches_and_uses_the_image(rec: Recommender, server: SimpleNamespace, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "image_urls", LOCAL)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the downloads go: must be cleaned up
    local = tmp_path / "poster.png"
    local.write_bytes(PNG)
    before = len(server.hits)
    out = rec.onboard([dict(TEXT, item_id="url-on", image=server.url("/poster.png")),
                       dict(TEXT, item_id="url-on-2", image=server.url("/poster.png")),
                       dict(TEXT, item_id="local-twin", image=str(local)),
                       dict(TEXT, item_id="plain")])
    assert out["added"] == ["url-on", "url-on-2", "local-twin", "plain"]
    assert out["failed"] == [] and out["warnings"] == []
    assert server.hits[before:] == ["/poster.png"]  # one download for the two items that share the URL
    assert [p.name for p in tmp_path.iterdir()] == ["poster.png"]  # the temp download folder is gone
    # the fetched image gives exactly the vector of the same file read locally, unlike the text-only twin
    url_vec = rec.index.vector("url-on")
    np.testing.assert_allclose(url_vec, rec.index.vector("local-twin"), atol=1e-5)
    assert np.abs(url_vec - rec.index.vector("plain")).max() > 1e-3
    assert rec.table.onboarded_features["url-on"][3] and not rec.table.onboarded_features["plain"][3]  # has_image
    near = rec.similar_items(item_id="local-twin", k=2)  # the URL items are its exact twins
    assert {it["item_id"] for it in near} == {"url-on", "url-on-2"}
    assert near[0]["score"] == pytest.approx(near[1]["score"], abs=1e-6)


def test_enabled_failures_are_reported_not_raised(rec: Recommender, server: SimpleNamespace,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "image_urls", FAST)
    out = rec.onboard([dict(TEXT, item_id="gone", image=server.url("/missing.png")),
                       dict(TEXT, item_id="page", image=server.url("/page")),
                       dict(TEXT, item_id="slow", image=server.url("/slow")),
                       {"item_id": "gone-no-text", "image": server.url("/missing.png")}])
    assert out["added"] == ["gone", "page", "slow"]
    warns = " | ".join(out["warnings"])
    assert "'gone'" in warns and "HTTP 404" in warns and "longer than 0.5 s" in warns
    assert f"image {server.url('/page')} could not be read" in warns  # downloaded, but not an image
    assert out["failed"] == [{"item_id": "gone-no-text", "reason": f"image {server.url('/missing.png')} not used: "
                              "HTTP 404 Not Found, and the item has no text"}]


# -- HTTP API and CLI -------------------------------------------------------------------------

def test_http_api_passes_urls_to_the_policy_not_to_confine(rec: Recommender, server: SimpleNamespace,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from mmrec.serve.app import create_app

    client = TestClient(create_app(rec))  # no --image-root: every image *path* is refused
    item = dict(TEXT, item_id="api-url", image=server.url("/poster.png"))
    off = client.post("/items", json={"items": [item]}).json()
    assert off["added"] == ["api-url"] and off["failed"] == []
    assert "image URLs are disabled; enable with --allow-image-urls" in off["warnings"][0]
    path = client.post("/items", json={"items": [dict(item, item_id="api-path", image="/etc/passwd")]}).json()
    assert path["added"] == [] and "image paths are disabled" in path["failed"][0]["reason"]
    monkeypatch.setattr(rec, "image_urls", LOCAL)
    on = client.post("/items", json={"items": [item]}).json()
    assert on["replaced"] == ["api-url"] and on["warnings"] == [] and rec.table.onboarded_features["api-url"][3]
    sim = client.post("/similar", json={"image": server.url("/poster.png")})
    assert sim.status_code == 400 and "not URLs" in sim.json()["detail"]


@pytest.mark.parametrize("command", ["onboard", "serve"])
def test_cli_flags(command: str) -> None:
    from mmrec.cli import build_parser

    first = ["onboard", "items.jsonl"] if command == "onboard" else ["serve"]
    parse = lambda *a: build_parser().parse_args(first + list(a))  # noqa: E731
    assert image_url_policy(parse()) == ImageURLPolicy()
    assert image_url_policy(parse("--allow-image-urls", "--max-image-mb", "2.5", "--image-timeout", "3")) == \
        ImageURLPolicy(enabled=True, max_bytes=int(2.5 * 1024 * 1024), timeout_s=3.0)
    for flag, value in (("--max-image-mb", "0"), ("--max-image-mb", "-1"), ("--image-timeout", "0"),
                        ("--image-timeout", "nan"), ("--image-timeout", "inf")):
        with pytest.raises(MMRecError, match=f"{flag} must be a number > 0"):
            image_url_policy(parse("--allow-image-urls", flag, value))
    with pytest.raises(SystemExit):
        parse("--max-image-mb", "lots")


def test_cli_rejects_bad_numbers_before_loading_anything(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from mmrec.cli import main

    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"item_id": "x", "title": "x"}) + "\n")
    missing_run = str(tmp_path / "no-run")
    assert main(["onboard", str(items), "--run", missing_run, "--allow-image-urls", "--max-image-mb", "0"]) == 2
    assert "--max-image-mb must be a number > 0, got 0" in capsys.readouterr().err
    pytest.importorskip("uvicorn")
    assert main(["serve", "--run", missing_run, "--image-timeout", "-2"]) == 2
    assert "--image-timeout must be a number > 0, got -2" in capsys.readouterr().err
