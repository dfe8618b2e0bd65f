"""Bad input gets one clear error (an MMRecError or an HTTP 4xx naming the problem) and changes nothing.

Complements the bad-file cases in ``test_schema_and_generic.py`` and the payload
cases in ``test_serve.py``: data files, images, configs, CLI arguments,
checkpoints and API payloads, plus hypothesis property tests on the generic
loader and the HTTP request schema.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmrec.config import DataConfig, FileSpec, load_config
from mmrec.data.images import is_readable_image
from mmrec.data.loaders import load_dataset
from mmrec.data.validation import clean
from mmrec.encoders.image import load_image
from mmrec.errors import ConfigError, DataError
from mmrec.train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _snapshot(root: Path) -> Dict[str, str]:
    """sha256 of every file under ``root`` (to show a failed operation changed nothing)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ data files

EVENTS = b"user_id,item_id\n1,a\n"
BAD_DATA = [
    # (case, catalog name, catalog bytes, events name, events bytes, expected message)
    ("huge field (2 MB title, default limit)", "items.csv", b"item_id,title\na," + b"x" * 2_000_000 + b"\n",
     "events.csv", EVENTS, "title of 2000000 characters"),
    ("duplicate ids in JSONL", "items.jsonl", b'{"item_id": "a"}\n{"item_id": "a"}\n', "events.csv", EVENTS,
     "duplicate item ids"),
    ("JSON scalar", "items.json", b"5", "events.csv", EVENTS, "list of objects"),
    ("malformed JSONL line", "items.jsonl", b'{"item_id": "a"}\n{oops\n', "events.csv", EVENTS,
     "cannot parse as jsonl"),
    ("garbage parquet", "items.parquet", b"PAR1 not really", "events.csv", EVENTS, "cannot parse as parquet"),
    ("unclosed quote", "items.csv", b'item_id,title\na,"A\nb,B\n', "events.csv", EVENTS, "cannot parse as csv"),
    ("unknown extension", "items.xlsx", b"item_id\na\n", "events.csv", EVENTS, "cannot tell the format"),
    ("null id in JSONL", "items.jsonl", b'{"item_id": null, "title": "x"}\n', "events.csv", EVENTS,
     "item_id.: the id is missing"),
    ("timestamp overflow", "items.csv", b"item_id\na\n", "events.csv",
     b"user_id,item_id,timestamp\n1,a,99999999999999999999999\n", "out of range"),
    ("infinite timestamp", "items.csv", b"item_id\na\n", "events.csv", b"user_id,item_id,timestamp\n1,a,inf\n",
     "out of range"),
]


@pytest.mark.parametrize("what,cat,cat_bytes,inter,inter_bytes,needle", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_files(tmp_path: Path, what: str, cat: str, cat_bytes: bytes, inter: str, inter_bytes: bytes,
                        needle: str) -> None:
    (tmp_path / cat).write_bytes(cat_bytes)
    (tmp_path / inter).write_bytes(inter_bytes)
    before = _snapshot(tmp_path)
    cfg = DataConfig(name="shop", path=str(tmp_path), catalog=FileSpec(path=cat), interactions=FileSpec(path=inter))
    with pytest.raises(DataError, match=needle) as info:
        clean(load_dataset(cfg), cfg)
    assert cat in str(info.value) or inter in str(info.value) or "shop" in str(info.value)
    assert _snapshot(tmp_path) == before


def test_missing_data_file_names_the_path(tmp_path: Path) -> None:
    cfg = DataConfig(name="shop", path=str(tmp_path), catalog=FileSpec(path="nope.csv"))
    with pytest.raises(DataError, match="nope.csv"):
        load_dataset(cfg)


# ------------------------------------------------------------------------------------------------ images

def _png_header_bomb(path: Path, side: int = 20_000) -> None:
    """A valid 1-bit ``side`` x ``side`` PNG of zeros: ~50 MB decoded, a few tens of KB on disk."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "img"
    d.mkdir()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(d / "good.png")
    return d


def test_truncated_png(images: Path) -> None:
    data = (images / "good.png").read_bytes()
    (images / "trunc.png").write_bytes(data[: len(data) // 2])
    assert not is_readable_image(images / "trunc.png")
    with pytest.raises(DataError, match="trunc.png"):
        load_image(images / "trunc.png")


def test_zero_byte_image(images: Path) -> None:
    (images / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_image(images / "zero.png")


def test_png_named_jpg_works_text_named_jpg_fails(images: Path) -> None:
    shutil.copy(images / "good.png", images / "really_png.jpg")
    assert is_readable_image(images / "really_png.jpg")
    assert load_image(images / "really_png.jpg").size == (32, 24)
    (images / "notes.jpg").write_text("this is a text file\n")
    assert not is_readable_image(images / "notes.jpg")
    with pytest.raises(DataError, match="notes.jpg"):
        load_image(images / "notes.jpg")


def test_20000_square_decompression_bomb(images: Path) -> None:
    bomb = images / "bomb.png"
    _png_header_bomb(bomb)
    assert bomb.stat().st_size < 2_000_000
    assert not is_readable_image(bomb)
    with pytest.raises(DataError, match="20000x20000|decompression bomb"):
        load_image(bomb)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "animated GIF"])
def test_odd_image_modes_are_converted(images: Path, mode: str) -> None:
    if mode == "CMYK":
        path = images / "cmyk.jpg"
        Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # red in CMYK
    elif mode == "I;16":
        path = images / "sixteen.png"
        Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(path)
    else:
        path = images / "anim.gif"
        frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert is_readable_image(path)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (16, 16)
    if mode != "I;16":
        r, g, b = im.getpixel((8, 8))
        assert r > 200 and g < 60 and b < 60  # first frame / colour converted, not garbage


# ------------------------------------------------------------------------------------------------ configs

@pytest.mark.parametrize("override,needle", [
    ("modle.dim=3", "modle"),                 # unknown section
    ("model.dim=-4", "model.dim"),            # negative size
    ("train.batch_size=0", "batch_size"),
    ("train.max_steps=1.5", "train.max_steps"),  # wrong type
    ("model.heads=3", "divisible"),
    ("train.checkpoint_every=0", "checkpoint_every"),
])
def test_bad_config_overrides(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(TINY, [override])


def test_config_file_with_wrong_shapes(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    for text, needle in (("- a\n- b\n", "mapping"), ("model:\n  dim: [1, 2]\n", "model.dim"),
                         ("train:\n  max_steps: ten\n", "max_steps")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_config(bad)


# ------------------------------------------------------------------------------------------------ CLI

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mmrec.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)


def test_cli_bad_k_unknown_run_missing_file(tiny_run: Path, tmp_path: Path) -> None:
    r = _cli("recommend", "--run", str(tiny_run), "--user", "1", "--k", "0")
    assert r.returncode == 2 and "--k must be >= 1" in r.stderr and "Traceback" not in r.stderr
    r = _cli("recommend", "--run", str(tmp_path / "no-such-run"), "--user", "1")
    assert r.returncode == 2 and "no-such-run" in r.stderr and "Traceback" not in r.stderr
    r = _cli("recommend", "--user", "1", "--k", "many")
    assert r.returncode == 2 and "invalid int value" in r.stderr
    r = _cli("pretrain", "--config", str(tmp_path / "missing.yaml"), "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "missing.yaml" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ checkpoints

@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("serving")))


def _corrupt(folder: Path, how: str) -> None:
    if how == "truncated optimizer":
        data = (folder / "optimizer.pt").read_bytes()
        (folder / "optimizer.pt").write_bytes(data[: len(data) // 3])
    elif how == "tampered safetensors header":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[8:16] = b"\xff" * 8  # inside the JSON header
        (folder / "model.safetensors").write_bytes(bytes(data))
    elif how == "pickled object in optimizer.pt":
        import torch

        class Evil:
            def __reduce__(self):  # would run a command under a plain torch.load
                return (os.system, ("echo pwned",))
        torch.save({"state": {}, "param_groups": [], "x": Evil()}, folder / "optimizer.pt")
    elif how == "garbage state.json":
        (folder / "state.json").write_text("{not json")
    elif how == "tampered tensor bytes":
        _flip_tensor_byte(folder / "model.safetensors")


def _flip_tensor_byte(path: Path) -> None:
    """Change one byte of tensor data (after the JSON header), leaving a well-formed safetensors file."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    data[8 + header_len + 5] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_checksums(folder: Path) -> None:
    """What someone editing a checkpoint by hand would do to get past the file checksums."""
    from mmrec.hashing import sha256_file

    sums = {f.name: sha256_file(f) for f in folder.iterdir() if f.is_file() and f.name != ckpt.CHECKSUMS}
    (folder / ckpt.CHECKSUMS).write_text(json.dumps(sums))


@pytest.mark.parametrize("how,needle", [
    ("truncated optimizer", "optimizer"),
    ("tampered safetensors header", "model.safetensors"),
    ("pickled object in optimizer.pt", "optimizer"),
    ("garbage state.json", "state.json"),
    ("tampered tensor bytes", "model.safetensors does not match its recorded SHA-256"),
])
@pytest.mark.parametrize("sums_rewritten", [False, True])
def test_corrupt_checkpoint_refused(run_copy: Path, how: str, needle: str, sums_rewritten: bool) -> None:
    """Refused by the folder checksums; and with the checksums rewritten, by the next line of defence."""
    last = ckpt.list_checkpoints(run_copy)[-1]
    _corrupt(last, how)
    if sums_rewritten:
        _rewrite_checksums(last)
        needle = {"tampered tensor bytes": "do not match their recorded SHA-256",
                  "garbage state.json": "JSON"}.get(how, needle)
    before = _snapshot(run_copy / "checkpoints")
    with pytest.raises(ckpt.CheckpointError, match=needle):
        ckpt.load_checkpoint(last)
    assert _snapshot(run_copy / "checkpoints") == before


def test_tampered_best_weights_refused_by_load_run(run_copy: Path) -> None:
    from mmrec.artifact import load_run

    _flip_tensor_byte(run_copy / "best" / "model.safetensors")
    with pytest.raises(ckpt.CheckpointError, match="do not match their recorded SHA-256"):
        load_run(run_copy)


def test_resume_with_a_different_model_is_refused(run_copy: Path) -> None:
    from mmrec.pipeline import make_trainer

    before = _snapshot(run_copy / "checkpoints")
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model"):
        make_trainer(load_config(TINY, ["model.dim=16", "model.heads=2"]), str(run_copy), resume="latest").train()
    assert _snapshot(run_copy / "checkpoints") == before


# ------------------------------------------------------------------------------------------------ API payloads

@pytest.fixture(scope="module")
def api(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    from fastapi.testclient import TestClient

    from mmrec import Recommender
    from mmrec.serve.app import create_app

    base = tmp_path_factory.mktemp("bad_api")
    run = shutil.copytree(tiny_run, base / "run", ignore=shutil.ignore_patterns("checkpoints", "serving"))
    rec = Recommender.from_run(run)
    app = create_app(rec, api_key="k", image_roots=[base], max_body_bytes=32 * 1024)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield SimpleNamespace(client=client, rec=rec, n=len(rec))


@pytest.mark.parametrize("path,body,status", [
    ("/recommend", {"user_id": "1", "k": 10**9}, 422),
    ("/recommend", {"user_id": "1", "k": 2.5}, 422),
    ("/recommend", {"user_id": ""}, 422),
    ("/recommend", {"user_id": "   "}, 422),
    ("/recommend", {"history": [True, False]}, 422),  # integers are ids (as in data files); bools are not
    ("/recommend", {"history": [["1"]]}, 422),
    ("/recommend", {"user_id": "1\u0000"}, 422),
    ("/recommend", {"history": ["1"] * 1001}, 422),
    ("/recommend", [1, 2, 3], 422),
    ("/recommend", None, 422),
    ("/similar", {}, 422),
    ("/similar", {"item_id": "1", "k": -1}, 422),
])
def test_bad_api_payloads(api: SimpleNamespace, path: str, body: object, status: int) -> None:
    r = api.client.post(path, json=body)
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text and r.json()["detail"]


@pytest.mark.parametrize("raw", [b"Infinity", b'{"user_id": "1", "k": NaN}', b'{"history": [-Infinity]}'])
def test_non_strict_json_numbers_get_422_not_500(api: SimpleNamespace, raw: bytes) -> None:
    """Regression: FastAPI's default 422 echoed inf/nan back and failed to render it (a 500)."""
    r = api.client.post("/recommend", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text


def test_api_fallbacks_and_no_side_effects(api: SimpleNamespace) -> None:
    c = api.client
    empty = c.post("/recommend", json={"history": [], "k": 3})
    assert empty.status_code == 200 and [it["source"] for it in empty.json()["items"]] == ["popularity"] * 3
    unknown = c.post("/recommend", json={"history": ["no-such-item"], "k": 3})
    assert unknown.status_code == 200 and unknown.json()["items"][0]["source"] == "popularity"
    assert c.post("/recommend", json={"user_id": "nobody-at-all", "k": 2}).status_code == 200
    assert c.post("/items", json={"items": [{"item_id": "x", "title": 5}]},
                  headers={"X-API-Key": "k"}).status_code == 422
    assert c.request("DELETE", "/items", json={"item_ids": []}, headers={"X-API-Key": "k"}).status_code == 422
    big = c.post("/items", content=b'{"items": [' + b'{"item_id": "z"},' * 4000 + b'{"item_id": "y"}]}',
                 headers={"Content-Type": "application/json", "X-API-Key": "k"})
    assert big.status_code == 413
    assert c.post("/recommend", content=b"user_id=1", headers={"Content-Type": "text/plain"}).status_code == 422
    assert len(api.rec) == api.n and "x" not in api.rec and "z" not in api.rec


# ------------------------------------------------------------------------------------------------ properties

CSV_CHARS = st.sampled_from(list('abc019,;\t"\n\r \\é\x00-:.') + ["item_id", "user_id", "timestamp", "title"])
CSV_TEXT = st.lists(CSV_CHARS, max_size=60).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cat=CSV_TEXT, inter=CSV_TEXT, raw=st.binary(max_size=40), use_raw=st.booleans())
def test_generic_loader_raises_only_project_errors(tmp_path_factory: pytest.TempPathFactory, cat: str, inter: str,
                                                   raw: bytes, use_raw: bool) -> None:
    d = tmp_path_factory.mktemp("prop")
    (d / "items.csv").write_bytes(raw if use_raw else cat.encode("utf-8"))
    (d / "events.csv").write_text(inter, encoding="utf-8")
    cfg = DataConfig(name="prop", path=str(d), catalog=FileSpec(path="items.csv"),
                     interactions=FileSpec(path="events.csv"))
    try:
        clean(load_dataset(cfg), cfg)
    except (DataError, ConfigError):
        pass  # anything else (pandas, numpy, KeyError...) fails the test


FIELD = (st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats() | st.sampled_from(["a", "b", "", "1"])
         | st.lists(st.sampled_from(["a", "x", ""]), max_size=2))
RECORD = st.dictionaries(st.sampled_from(["item_id", "title", "description", "categories", "image", "user_id",
                                          "timestamp", "rating"]), FIELD, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cat=st.lists(RECORD, max_size=4), inter=st.lists(RECORD, max_size=4), as_list=st.booleans())
def test_json_loaders_raise_only_project_errors(tmp_path_factory: pytest.TempPathFactory, cat: list, inter: list,
                                                as_list: bool) -> None:
    d = tmp_path_factory.mktemp("propj")
    name = "items.json" if as_list else "items.jsonl"
    (d / name).write_text(json.dumps(cat) if as_list else "\n".join(json.dumps(r) for r in cat))
    (d / "events.jsonl").write_text("\n".join(json.dumps(r) for r in inter))
    cfg = DataConfig(name="propj", path=str(d), catalog=FileSpec(path=name), interactions=FileSpec(path="events.jsonl"))
    try:
        clean(load_dataset(cfg), cfg)
    except (DataError, ConfigError):
        pass


def test_scalar_categories_in_jsonl_are_one_category(tmp_path: Path) -> None:
    """Regression (found by the property test): ``"categories": false`` raised a bare TypeError."""
    (tmp_path / "items.jsonl").write_text('{"item_id": "a", "categories": false}\n{"item_id": "b", "categories": 7}\n')
    cfg = DataConfig(name="s", path=str(tmp_path), catalog=FileSpec(path="items.jsonl"))
    assert load_dataset(cfg).catalog.df["categories"].tolist() == [["False"], ["7"]]


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
KEYS = st.sampled_from(["user_id", "history", "k", "exclude_seen", "explain", "query_text", "item_id", "text",
                        "image", "bogus"])
BODIES = JSON | st.dictionaries(KEYS, JSON, max_size=5) | st.fixed_dictionaries(
    {"user_id": st.sampled_from(["1", "2", "no-one"]), "k": st.integers(-3, 1200)},
    optional={"history": st.lists(st.sampled_from(["1", "50", "nope"]), max_size=5),
              "exclude_seen": st.booleans(), "explain": st.booleans()})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/recommend", "/similar"]), body=BODIES)
def test_api_schema_never_500(api: SimpleNamespace, path: str, body: object) -> None:
    r = api.client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (body, r.text)
    assert 200 <= r.status_code < 300 or 400 <= r.status_code < 500
