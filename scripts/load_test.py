#!/usr/bin/env python
"""Bounded load test of the HTTP service, on loopback only.

    python scripts/load_test.py [--run RUN] [--requests 2000] [--concurrency 8] [--duration 300]
                                [--onboard-share 0.1] [--quick] [--json benchmarks/results/load_test.json]
    python scripts/load_test.py --url http://127.0.0.1:8000 --api-key KEY [--run RUN]   # a running server

By default it starts ``mmrec serve`` on 127.0.0.1 (a free port, a random API
key passed as ``$MMREC_API_KEY`` so it does not show in the process list) over
``--run`` (default: the latest run under ``$MMREC_HOME/runs``). ``--concurrency``
client threads, each with its own keep-alive connection, then send a fixed
number of requests, stopping early at ``--duration`` seconds:

* ``POST /recommend`` for known users and for live histories (k=10);
* ``POST /similar`` by item id (catalog items and items onboarded during the
  run) and by free text;
* ``POST /items`` onboarding new, uniquely named text-only items (``--onboard-share``);
* a few writes with a missing or wrong ``X-API-Key`` (must get 401 and change nothing);
* a few malformed payloads (must get their 4xx, never a traceback or a server path).

Afterwards every acknowledged onboarded item must be served (known by id,
in the top 10 of ``/similar`` for its own text as the default template renders
it, counted in ``/health``); then the server is
restarted from the same run folder and the check is repeated. The run's
onboarding state is changed (new items are added): point it at a copy of a
run you care about. With ``--url`` the server is not restarted (there is
nothing to restart) and a non-loopback host is refused. Exits 1 when any
check fails, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import markdown_table, versions, write_result  # noqa: E402
from mmrec.contract import MAX_TEXT_CHARS  # noqa: E402

log = logging.getLogger("load_test")

K = 10
SERVICE_PACKAGES = ("fastapi", "uvicorn", "httpx", "pydantic")
# what a response must never contain: a Python traceback or a source location
LEAK_PATTERNS = (re.compile(r"Traceback \(most recent call last\)"), re.compile(r'File "[^"]*", line \d+'),
                 re.compile(r"site-packages"), re.compile(r"\.py\b[\"':,]"))
WORDS = ("amber", "orbit", "harbor", "velvet", "glacier", "lantern", "meadow", "cipher", "ember", "falcon",
         "quartz", "tundra", "willow", "zephyr", "canyon", "mosaic", "nebula", "prairie", "sonnet", "thistle")
GENRES = ("drama", "comedy", "thriller", "documentary", "western", "musical", "science fiction", "romance")


class CheckFailed(RuntimeError):
    """The service could not be started or reached: the test cannot go on."""


# ----------------------------------------------------------------------------- requests


@dataclass
class Call:
    """One HTTP request and what must come back."""

    label: str                      # the table row: an endpoint, or a negative case
    method: str
    path: str
    json_body: Any = None
    content: Optional[bytes] = None
    headers: dict = field(default_factory=dict)
    expect: int | tuple[int, ...] = 200  # the status (or statuses) it must get
    check: Optional[Callable[[Any], Optional[str]]] = None   # on the parsed JSON of an expected 200
    onboard: Optional[dict] = None  # the item an onboarding call adds


@dataclass
class Outcome:
    """How one call went: ``problem`` is None when the answer was the one it must be."""

    label: str
    status: int
    ms: float
    problem: Optional[str]


def _leak(text: str, secrets_: Sequence[str]) -> Optional[str]:
    """Why ``text`` leaks server internals (a traceback, a source file, a server path), or None."""
    for pat in LEAK_PATTERNS:
        if pat.search(text):
            return f"response leaks {pat.pattern!r}"
    for s in secrets_:
        if s and s in text:
            return "response leaks a server path or the API key"
    return None


def _items_check(n: int) -> Callable[[Any], Optional[str]]:
    def check(body: Any) -> Optional[str]:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) != n:
            return f"expected {n} items, got {None if items is None else len(items)}"
        return None
    return check


def _onboard_check(item_id: str) -> Callable[[Any], Optional[str]]:
    def check(body: Any) -> Optional[str]:
        if body.get("added") != [item_id] or body.get("failed") or body.get("persisted") is not True:
            return f"onboarding {item_id} answered {json.dumps(body)[:300]}"
        return None
    return check


def item_text(item: dict) -> str:
    """The text the default template (``{title}. {categories}. {description}``) renders for a loaded item."""
    return f"{item['title']}. {item['description']}"


class Workload:
    """Builds the calls: a fixed, seeded mix of kinds; bodies drawn per call (some use items onboarded so far)."""

    def __init__(self, users: Sequence[str], items: Sequence[str], titles: Sequence[str], key: str,
                 tag: str, seed: int) -> None:
        self.users, self.items, self.titles, self.key, self.tag = list(users), list(items), list(titles), key, tag
        self.seed = seed
        self._lock = threading.Lock()
        self._n_onboard = 0
        self._n_unauth = 0
        self.confirmed: list[dict] = []       # onboarded items the server acknowledged
        self.unauthorized_ids: list[str] = []  # ids of refused (401) onboarding attempts

    # the plan ---------------------------------------------------------------

    def plan(self, n: int, onboard_share: float, similar_share: float, negative_share: float) -> list[str]:
        """``n`` call kinds in a seeded random order; every negative case at least once."""
        n_neg = round(n * negative_share)
        n_auth = max(len(AUTH_CASES), n_neg // 3)
        n_bad = max(len(MALFORMED), n_neg - n_auth)
        n_onboard = round(n * onboard_share)
        n_similar = round(n * similar_share)
        n_rec = n - n_auth - n_bad - n_onboard - n_similar
        if n_rec < 2:
            raise ValueError(f"--requests {n} is too few for the mix (at least {n - n_rec + 2})")
        kinds = (["recommend_user"] * (n_rec - n_rec // 2) + ["recommend_history"] * (n_rec // 2)
                 + ["similar_item"] * (n_similar - n_similar // 3) + ["similar_text"] * (n_similar // 3)
                 + ["onboard"] * n_onboard + [f"auth:{i % len(AUTH_CASES)}" for i in range(n_auth)]
                 + [f"bad:{i % len(MALFORMED)}" for i in range(n_bad)])
        random.Random(self.seed).shuffle(kinds)
        return kinds

    # one call ---------------------------------------------------------------

    def call(self, kind: str, rng: random.Random) -> Call:
        auth = {"X-API-Key": self.key}
        if kind == "recommend_user":
            return Call("POST /recommend", "POST", "/recommend", {"user_id": rng.choice(self.users), "k": K},
                        check=_items_check(K))
        if kind == "recommend_history":
            hist = rng.sample(self.items, rng.randint(1, 30))
            confirmed = self._confirmed_sample(rng, 2)
            hist += [c["item_id"] for c in confirmed]  # items onboarded seconds ago are usable in histories
            return Call("POST /recommend", "POST", "/recommend", {"history": hist, "k": K}, check=_items_check(K))
        if kind == "similar_item":
            confirmed = self._confirmed_sample(rng, 1) if rng.random() < 0.3 else []
            iid = confirmed[0]["item_id"] if confirmed else rng.choice(self.items)
            return Call("POST /similar", "POST", "/similar", {"item_id": iid, "k": K}, check=_items_check(K))
        if kind == "similar_text":
            text = f"{rng.choice(GENRES)} like {rng.choice(self.titles)}"
            return Call("POST /similar", "POST", "/similar", {"text": text, "k": K}, check=_items_check(K))
        if kind == "onboard":
            with self._lock:
                i = self._n_onboard
                self._n_onboard += 1
            item = {"item_id": f"load-{self.tag}-{i:05d}",
                    "title": f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {i} ({self.tag})",
                    "description": f"A {rng.choice(GENRES)} about {' and '.join(rng.sample(WORDS, 3))}, "
                                   f"in the spirit of {rng.choice(self.titles)}."}
            return Call("POST /items", "POST", "/items", {"items": [item]}, headers=auth,
                        check=_onboard_check(item["item_id"]), onboard=item)
        if kind.startswith("auth:"):
            return AUTH_CASES[int(kind[5:])](self, rng)
        if kind.startswith("bad:"):
            method, path, body, expect, keyed = MALFORMED[int(kind[4:])]
            raw = body if isinstance(body, bytes) else None
            return Call("4xx malformed", method, path, None if raw is not None else body, raw,
                        {**({"Content-Type": "application/json"} if raw is not None else {}),
                         **(auth if keyed else {})}, expect)
        raise ValueError(f"unknown call kind {kind!r}")

    def _confirmed_sample(self, rng: random.Random, most: int) -> list[dict]:
        with self._lock:
            return rng.sample(self.confirmed, min(len(self.confirmed), rng.randint(0, most)))

    def acknowledged(self, item: dict) -> None:
        with self._lock:
            self.confirmed.append(item)

    def unauth_item(self) -> dict:
        with self._lock:
            i = self._n_unauth
            self._n_unauth += 1
            item = {"item_id": f"load-{self.tag}-unauth-{i:04d}", "title": f"Must not be added {i}"}
            self.unauthorized_ids.append(item["item_id"])
        return item


AUTH_CASES: tuple[Callable[[Workload, random.Random], Call], ...] = (
    lambda w, r: Call("401 wrong key", "POST", "/items", {"items": [w.unauth_item()]}, expect=401),
    lambda w, r: Call("401 wrong key", "POST", "/items", {"items": [w.unauth_item()]},
                      headers={"X-API-Key": secrets.token_hex(16)}, expect=401),
    lambda w, r: Call("401 wrong key", "POST", "/items", {"items": [w.unauth_item()]},
                      headers={"X-API-Key": w.key[:-1]}, expect=401),
    # an id that never exists: an open server answers 200 (caught) without losing a real item
    lambda w, r: Call("401 wrong key", "DELETE", "/items", {"item_ids": [f"load-{w.tag}-never-added"]},
                      headers={"X-API-Key": "wrong"}, expect=401),
)

# (method, path, JSON body or raw bytes, expected status(es), send the valid key)
MALFORMED: tuple[tuple[str, str, Any, Any, bool], ...] = (
    ("POST", "/recommend", b'{"user_id": "1", "k": ', 422, False),
    ("POST", "/recommend", b"NaN", 422, False),
    ("POST", "/recommend", b"[" * 100_000, (400, 422), False),  # too deep for json: 400 "error parsing the body"
    ("POST", "/recommend", b"\xff\xfe{}", 422, False),
    ("POST", "/recommend", {"user_id": "1", "k": 0}, 422, False),
    ("POST", "/recommend", {"user_id": "1", "k": "many"}, 422, False),
    ("POST", "/recommend", {"history": "1,2,3"}, 422, False),
    ("POST", "/recommend", {"user_id": "1", "surprise": True}, 422, False),
    ("POST", "/recommend", {"query_text": "x" * (MAX_TEXT_CHARS + 1)}, 422, False),
    ("POST", "/recommend", b'{"history": [' + b'"x",' * 1_100_000 + b'"y"]}', 413, False),
    ("GET", "/recommend", None, 405, False),
    ("POST", "/similar", {"item_id": "1", "text": "both"}, 422, False),
    ("POST", "/similar", {"k": 3}, 422, False),
    ("POST", "/similar", {"item_id": "no-such-item-load-test"}, 404, False),
    ("POST", "/similar", {"image": "/etc/passwd"}, 403, False),
    ("POST", "/items", {"items": []}, 422, True),
    ("POST", "/items", {"items": [{"title": "no id"}]}, 422, True),
    ("POST", "/items", {"items": [{"item_id": "   ", "title": "blank id"}]}, 422, True),
    ("DELETE", "/items", {"item_ids": []}, 422, True),
)


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_loopback(url: str) -> str:
    """``url`` without a trailing slash, if every address its host resolves to is a loopback one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url must be http(s)://HOST:PORT, got {url!r}")
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {parts.hostname!r}: {exc}") from None
    remote = sorted(a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise ValueError(f"refusing to load-test {parts.hostname!r}: it resolves to non-loopback {remote}")
    return url.rstrip("/")


class Server:
    """``mmrec serve`` as a subprocess on 127.0.0.1, its output appended to a log file."""

    def __init__(self, run: Path, key: str, log_path: Path, threads: int) -> None:
        self.run, self.key, self.log_path, self.threads = run, key, log_path, threads
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""

    def start(self, timeout: float) -> float:
        """Start and wait for ``/health``; the seconds it took."""
        import httpx

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "mmrec.cli", "serve", "--run", str(self.run), "--host", "127.0.0.1",
               "--port", str(port), "--threads", str(self.threads)]
        env = {**os.environ, "MMREC_API_KEY": self.key}
        log.info("starting %s", " ".join(cmd))
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise CheckFailed(f"mmrec serve exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    if client.get("/health").status_code == 200:
                        return time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise CheckFailed(f"mmrec serve not healthy after {timeout:.0f} s; see {self.log_path}")
                time.sleep(0.2)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (uvicorn shuts down gracefully) or SIGKILL (a crash); always reaped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("mmrec serve ignored SIGTERM for 30 s; killing it")
            self.proc.kill()
            self.proc.wait(timeout=30)


def error_log_lines(path: Path, start: int) -> list[str]:
    """Lines logged at ERROR (or a traceback) by the server since byte ``start`` of its log."""
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode("utf-8", "replace")
    return [ln for ln in text.splitlines() if " ERROR " in ln or ln.startswith("Traceback")]


# ----------------------------------------------------------------------------- running


def run_load(url: str, workload: Workload, kinds: list[str], concurrency: int, duration: float,
             timeout: float, secrets_: Sequence[str]) -> tuple[list[Outcome], float]:
    """Send the planned calls from ``concurrency`` threads until done or ``duration`` is up."""
    import httpx

    outcomes: list[Outcome] = []
    lock = threading.Lock()
    cursor = iter(range(len(kinds)))
    deadline = time.monotonic() + duration

    def worker(wid: int) -> None:
        rng = random.Random(workload.seed * 1000 + wid)
        with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                call = workload.call(kinds[i], rng)
                try:
                    out = send(client, call, secrets_)
                except Exception as exc:  # a bug in a check must not silently kill a client thread
                    log.exception("client %d: %s %s", wid, call.method, call.path)
                    out = Outcome(call.label, 0, 0.0, f"client error: {exc!r}")
                if out.problem is None and call.onboard is not None:
                    workload.acknowledged(call.onboard)
                with lock:
                    outcomes.append(out)

    threads = [threading.Thread(target=worker, args=(w,), name=f"client-{w}") for w in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0


def send(client: Any, call: Call, secrets_: Sequence[str]) -> Outcome:
    """Send one call; ``problem`` says how the answer differs from what it must be (None: as expected)."""
    import httpx

    t0 = time.perf_counter()
    try:
        r = client.request(call.method, call.path, json=call.json_body, content=call.content, headers=call.headers)
    except httpx.HTTPError as exc:
        return Outcome(call.label, 0, (time.perf_counter() - t0) * 1000, f"{call.method} {call.path}: {exc!r}")
    ms = (time.perf_counter() - t0) * 1000
    problem = None
    expect = call.expect if isinstance(call.expect, tuple) else (call.expect,)
    if r.status_code not in expect:
        problem = f"{call.method} {call.path}: {r.status_code} (expected {call.expect}): {r.text[:200]}"
    elif r.status_code >= 400:
        problem = _leak(r.text, secrets_)
    elif call.check is not None:
        try:
            problem = call.check(r.json())
        except ValueError as exc:
            problem = f"not JSON: {exc}"
    return Outcome(call.label, r.status_code, ms, problem)


def verify_served(url: str, items: list[dict], refused: list[str], expect_items: Optional[int],
                  expect_onboarded: Optional[int], timeout: float) -> dict:
    """Every acknowledged item known by id and in the top-k for its own text; refused writes absent."""
    import httpx

    lost, unretrievable, applied = [], [], []
    with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as c:
        health = c.get("/health").json()
        for item in items:
            if c.post("/similar", json={"item_id": item["item_id"], "k": 1}).status_code != 200:
                lost.append(item["item_id"])
                continue
            hits = c.post("/similar", json={"text": item_text(item), "k": K}).json().get("items", [])
            if item["item_id"] not in {h["item_id"] for h in hits}:
                unretrievable.append(item["item_id"])
        for iid in refused:
            if c.post("/similar", json={"item_id": iid, "k": 1}).status_code != 404:
                applied.append(iid)
    counts_ok = ((expect_items is None or health.get("items") == expect_items)
                 and (expect_onboarded is None or health.get("onboarded") == expect_onboarded))
    if not counts_ok:
        log.error("/health counts %s items, %s onboarded; expected %s and %s", health.get("items"),
                  health.get("onboarded"), expect_items, expect_onboarded)
    for name, ids in (("lost", lost), ("not retrievable by their own text", unretrievable),
                      ("added without the API key", applied)):
        if ids:
            log.error("%d onboarded items %s, e.g. %s", len(ids), name, ids[:5])
    return {"health": health, "lost": lost, "unretrievable": unretrievable, "unauthorized_applied": applied,
            "counts_ok": counts_ok}


def warm_up(url: str, timeout: float, user: str, item: str) -> float:
    """One request of each read kind; the seconds it took (the first text query loads the text encoder)."""
    import httpx

    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as c:
        for path, body in (("/recommend", {"user_id": user, "k": K}), ("/similar", {"item_id": item, "k": K}),
                           ("/similar", {"text": "warm-up query", "k": K})):
            r = c.post(path, json=body)
            if r.status_code != 200:
                raise CheckFailed(f"warm-up POST {path} got {r.status_code}: {r.text[:300]}")
    return time.perf_counter() - t0


def latency_rows(outcomes: list[Outcome], wall_s: float) -> list[dict]:
    """Per-label count, errors, latency percentiles and throughput, then a total row."""
    rows = []
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.label, []).append(o)
    order = ["POST /recommend", "POST /similar", "POST /items", "401 wrong key", "4xx malformed"]
    for label in sorted(groups, key=lambda g: order.index(g) if g in order else len(order)):
        rows.append(_row(label, groups[label], wall_s))
    rows.append(_row("all", outcomes, wall_s))
    return rows


def _row(label: str, outs: list[Outcome], wall_s: float) -> dict:
    ms = np.array([o.ms for o in outs]) if outs else np.zeros(1)
    pct = {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
    return {"endpoint": label, "count": len(outs), "errors": sum(o.problem is not None for o in outs), **pct,
            "max_ms": round(float(ms.max()), 2), "rps": round(len(outs) / wall_s, 1) if wall_s > 0 else 0.0}


def load_run_data(run: Path) -> tuple[list[str], list[str], list[str], str]:
    """Known users, catalog item ids and titles of the run's own artefact (to make realistic requests)."""
    from mmrec.artifact import load_artifact

    art = load_artifact(run)
    df = art.catalog.df
    users = list(art.histories or {})
    titles = [t for t in df["title"].fillna("").astype(str) if t.strip()] or ["a film"]
    return users, [str(i) for i in df["item_id"]], titles, art.cfg.data.name


# ----------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, metavar="DIR",
                   help="the run to serve (default: the latest under $MMREC_HOME/runs); its onboarding state grows")
    p.add_argument("--url", default=None, help="test this running server instead (loopback hosts only)")
    p.add_argument("--api-key", default=None, help="with --url: the server's key (default: $MMREC_API_KEY)")
    p.add_argument("--requests", type=int, default=None, help="requests to send (default 2000; --quick 300)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop sending after this many seconds (default 300; --quick 60); unsent requests fail")
    p.add_argument("--onboard-share", type=float, default=0.1, help="share of onboarding requests (default 0.1)")
    p.add_argument("--similar-share", type=float, default=0.2, help="share of /similar requests (default 0.2)")
    p.add_argument("--negative-share", type=float, default=0.02,
                   help="share of wrong-key + malformed requests (default 0.02; each case at least once)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("--threads", type=int, default=1, help="the server's torch + FAISS threads (default 1)")
    p.add_argument("--restart", choices=("term", "kill", "none"), default="term",
                   help="how to stop the server before the restart check: SIGTERM (default), SIGKILL, or no restart")
    p.add_argument("--server-log", default=None, help="append the server's output here (default: a temp file, "
                                                      "deleted when every check passes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="300 requests (seconds of load; start and restart add ~30 s)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON")
    args = p.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 2000)
    args.duration = args.duration or (60.0 if args.quick else 300.0)
    for name in ("onboard_share", "similar_share", "negative_share"):
        if not 0 <= getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1)")
    if args.concurrency < 1 or args.requests < 1 or args.duration <= 0:
        p.error("--concurrency, --requests and --duration must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        url = require_loopback(args.url) if args.url else None
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    from mmrec.artifact import resolve_run

    run = resolve_run(args.run)
    users, items, titles, dataset = load_run_data(run)
    key = (args.api_key or os.environ.get("MMREC_API_KEY") or "") if url else secrets.token_urlsafe(24)
    if url and not key:
        log.error("--url needs the server's --api-key (or $MMREC_API_KEY) to onboard")
        return 2
    workload = Workload(users, items, titles, key, secrets.token_hex(3), args.seed)
    try:
        kinds = workload.plan(args.requests, args.onboard_share, args.similar_share, args.negative_share)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    server = None
    if url is None:
        log_path = Path(args.server_log or Path(tempfile.mkdtemp(prefix="mmrec-load-")) / "server.log")
        server = Server(run, key, log_path, args.threads)
    result: dict[str, Any] = {"benchmark": "load_test", "mode": "url" if url else "spawned", "run": run.name,
                              "dataset": dataset, "passed": False}
    import httpx

    try:
        exercise(args, url, server, run, workload, kinds, result)
    except (CheckFailed, httpx.HTTPError) as exc:  # the server died or cannot be reached: report, do not crash
        log.error("%s", exc)
        result.update({"passed": False, "failure": f"{type(exc).__name__}: {exc}"})
    finally:
        if server is not None:
            server.stop()
    stamped = write_result(None, result)
    stamped["versions"].update(versions(SERVICE_PACKAGES))
    stamped["machine"]["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(stamped, indent=2) + "\n")
    if result["passed"]:
        if server is not None and not args.server_log:
            shutil.rmtree(server.log_path.parent, ignore_errors=True)
        log.info("all checks passed")
        return 0
    log.error("load test FAILED (%s)%s",
              ", ".join(k for k, v in result.get("checks", {}).items() if not v) or result.get("failure"),
              f"; server log: {server.log_path}" if server is not None else "")
    return 1


def exercise(args: argparse.Namespace, url: Optional[str], server: Optional[Server], run: Path,
             workload: Workload, kinds: list[str], out: dict) -> None:
    """Start (or reach) the server, warm it up, run the load, then :func:`check_after`; fills ``out`` as it goes."""
    import httpx

    if server is not None:
        out["startup_s"] = round(server.start(args.startup_timeout), 2)
        url = server.url
    assert url is not None
    log_start = server.log_path.stat().st_size if server is not None and server.log_path.is_file() else 0
    with httpx.Client(base_url=url, timeout=args.timeout, trust_env=False) as c:
        health = c.get("/health").json()
    if health.get("run") != run.name:
        log.warning("the server serves run %r, requests are drawn from run %r", health.get("run"), run.name)
    out.update({"index": health.get("index"), "modalities": health.get("modalities"),
                "items_before": health.get("items"), "users": health.get("users")})
    out["warmup_s"] = round(warm_up(url, args.timeout, workload.users[0], workload.items[0]), 2)
    log.info("warm-up (loads the text encoder) took %.1f s", out["warmup_s"])

    secrets_ = [s for s in (str(run), str(REPO), sys.prefix, workload.key, os.environ.get("MMREC_HOME", ""))
                if len(s) > 4]
    log.info("%d requests (%s) from %d threads to %s, at most %.0f s", len(kinds),
             ", ".join(f"{k} {kinds.count(k)}" for k in ("recommend_user", "recommend_history", "similar_item",
                                                          "similar_text", "onboard")),
             args.concurrency, url, args.duration)
    load_before = [round(x, 2) for x in os.getloadavg()]
    outcomes, wall = run_load(url, workload, kinds, args.concurrency, args.duration, args.timeout, secrets_)
    problems = [o.problem for o in outcomes if o.problem]
    for p in problems[:10]:
        log.error("%s", p)
    rows = latency_rows(outcomes, wall)
    print(markdown_table(rows, ["endpoint", "count", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms", "rps"]))
    by = {r["endpoint"]: r for r in rows}
    of = lambda label: [o for o in outcomes if o.label == label]  # noqa: E731
    out.update({
        "requests": len(kinds), "completed": len(outcomes), "errors": len(problems) + len(kinds) - len(outcomes),
        "error_samples": problems[:10], "concurrency": args.concurrency, "duration_limit_s": args.duration,
        "duration_s": round(wall, 2), "rps": round(len(outcomes) / wall, 1) if wall > 0 else 0.0,
        "server_threads": args.threads,
        "mix": dict(sorted(Counter(k.split(":")[0] for k in kinds).items())), "endpoints": by,
        "recommend_p99_ms": by.get("POST /recommend", {}).get("p99_ms"),
        "similar_p99_ms": by.get("POST /similar", {}).get("p99_ms"),
        "onboard_p99_ms": by.get("POST /items", {}).get("p99_ms"),
        "unauthorized_rejected": sum(o.status == 401 for o in of("401 wrong key")),
        "malformed_rejected": sum(o.problem is None for o in of("4xx malformed")), "malformed_cases": len(MALFORMED),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    })
    out["checks"] = {"all_requests_sent": len(outcomes) == len(kinds), "no_errors": not problems}
    check_after(args, url, server, workload, health, out)
    if server is not None:
        errors_logged = error_log_lines(server.log_path, log_start)
        for ln in errors_logged[:5]:
            log.error("server log: %s", ln)
        out["server_error_log_lines"] = len(errors_logged)
        out["checks"]["no_server_errors_logged"] = not errors_logged
    out["passed"] = all(out["checks"].values())
    print("\n" + markdown_table([{"check": k, "ok": v} for k, v in out["checks"].items()], ["check", "ok"]))
    print(f"\n{out['completed']} requests in {wall:.1f} s ({out['rps']} req/s), {out['errors']} errors, "
          f"{out['onboarded_items']} items onboarded, {out['lost_onboarded_items']} lost, "
          f"survived restart: {out['survived_restart']}")


def check_after(args: argparse.Namespace, url: str, server: Optional[Server], workload: Workload,
                health: dict, out: dict) -> None:
    """No acknowledged item lost, no refused write applied; then the same after a restart (spawned server)."""
    n_new = len(workload.confirmed)
    expect = (health["items"] + n_new, health["onboarded"] + n_new)
    served = verify_served(url, workload.confirmed, workload.unauthorized_ids, *expect, args.timeout)
    lost = len(served["lost"]) + len(served["unretrievable"])
    out.update({"onboarded_items": n_new, "lost_onboarded_items": lost,
                "unauthorized_writes_applied": len(served["unauthorized_applied"]), "survived_restart": None})
    out["checks"].update({"no_lost_onboarded_items": lost == 0, "health_counts_match": served["counts_ok"],
                          "unauthorized_writes_refused": not served["unauthorized_applied"]})
    if server is None or args.restart == "none":
        return
    server.stop(kill=args.restart == "kill")
    out["restart_signal"] = "SIGKILL" if args.restart == "kill" else "SIGTERM"
    out["restart_s"] = round(server.start(args.startup_timeout), 2)
    after = verify_served(server.url, workload.confirmed, workload.unauthorized_ids, *expect, args.timeout)
    out["lost_after_restart"] = len(after["lost"]) + len(after["unretrievable"])
    out["survived_restart"] = out["lost_after_restart"] == 0 and after["counts_ok"] \
        and not after["unauthorized_applied"]
    out["checks"]["survived_restart"] = out["survived_restart"]


if __name__ == "__main__":
    sys.exit(main())
