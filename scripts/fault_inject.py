#!/usr/bin/env python
"""Fault injection: kill -9 pretraining, index saves and embedding-cache writes, then check recovery.

    python scripts/fault_inject.py --cases 10 --seed 0 --json fault_inject.json
    python scripts/fault_inject.py --kinds index,cache --io-cases 10   # the cheap ones only

Training: ``scripts/pretrain.py`` on ``configs/tiny.yaml`` with a checkpoint every
2 steps is killed (SIGKILL) at seeded random points -- either when the k-th
temporary checkpoint folder ``checkpoints/.step-*.tmp`` appears (a kill during
a checkpoint write) or after a random delay (anywhere: start-up, a step, an
evaluation) -- and then restarted with ``--resume latest`` until it finishes
(some cases kill the resumed process too). Each resume must start from the
newest *complete* checkpoint on disk (never a temp folder), and the final
parameters must equal an uninterrupted reference run's within 1e-4.

Index / cache: a child process writes new versions in a loop (``ItemIndex.save``
/ ``EmbeddingCache.store``) and is killed at a random time or when a temp file
appears; the folder must still load, hold at least the first version's items
with the right vectors, and accept the next write.

Prints a Markdown table of the cases and writes JSON (``--json``). Exit code 1
if any case failed. Filesystem watching only: no hooks in the library.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
TOL = 1e-4
POLL_S = 0.001
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")


@dataclass
class Case:
    """One injected fault and what happened."""

    kind: str
    case: int
    trigger: str
    kills: int = 0
    detail: str = ""
    ok: bool = False
    outcome: str = ""
    notes: List[str] = field(default_factory=list)


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


# --------------------------------------------------------------------------------------- training

def _train_cmd(out: Path, steps: int, resume: bool) -> List[str]:
    cmd = [sys.executable, str(REPO / "scripts" / "pretrain.py"), "--config", str(TINY), "--output-dir", str(out)]
    if resume:
        cmd += ["--resume", "latest"]
    return cmd + [f"train.max_steps={steps}", "train.checkpoint_every=2", f"train.eval_every={steps}",
                  "train.log_every=2", "train.keep_last=3"]


def _tmp_ckpts(out: Path) -> List[str]:
    base = out / "checkpoints"
    try:
        return [p.name for p in os.scandir(base) if p.name.startswith(".step-") and p.name.endswith(".tmp")]
    except FileNotFoundError:
        return []


def _run_until(cmd: List[str], out: Path, trigger: Optional[Dict[str, Any]], timeout: float) -> Dict[str, Any]:
    """Run ``cmd``; SIGKILL it when ``trigger`` fires. Returns rc, killed, stderr, whether a temp folder was left."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(), cwd=REPO)
    t0 = time.monotonic()
    seen: set = set()
    killed = False
    try:
        while proc.poll() is None:
            now = time.monotonic() - t0
            if now > timeout:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{cmd[1]} ran over {timeout:.0f}s")
            if trigger is not None:
                fire = False
                if trigger["mode"] == "ckpt-write":
                    seen.update(_tmp_ckpts(out))
                    fire = len(seen) >= trigger["k"]
                elif trigger["mode"] == "time":
                    fire = now >= trigger["t"]
                if fire:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
                    break
            time.sleep(POLL_S)
    finally:
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        err.close()
    return {"rc": proc.returncode, "killed": killed, "stderr": stderr, "wall_s": time.monotonic() - t0,
            "left_tmp": _tmp_ckpts(out)}


def _final_weights(out: Path) -> Dict[str, Any]:
    from mmrec.train import checkpoint as ckpt

    cks = ckpt.list_checkpoints(out)
    if not cks:
        raise AssertionError(f"no complete checkpoint in {out}")
    return ckpt.load_weights(cks[-1] / "model.safetensors"), cks[-1].name


def _max_diff(a: Dict[str, Any], b: Dict[str, Any]) -> float:
    if a.keys() != b.keys():
        raise AssertionError(f"parameter names differ: {sorted(set(a) ^ set(b))[:5]}")
    return max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in a)


def reference_run(work: Path, steps: int, timeout: float) -> Dict[str, Any]:
    """The uninterrupted run every case is compared with."""
    out = work / "reference"
    shutil.rmtree(out, ignore_errors=True)
    r = _run_until(_train_cmd(out, steps, resume=False), out, None, timeout)
    if r["rc"] != 0:
        raise RuntimeError(f"reference run failed (rc {r['rc']}):\n{r['stderr'][-3000:]}")
    weights, name = _final_weights(out)
    return {"out": out, "weights": weights, "final": name, "wall_s": r["wall_s"]}


def train_case(i: int, rng: random.Random, work: Path, steps: int, ref: Dict[str, Any], timeout: float) -> Case:
    """Kill pretraining once or twice at seeded points, resume until done, compare with the reference."""
    from mmrec.train import checkpoint as ckpt

    n_ckpt = steps // 2
    triggers: List[Dict[str, Any]] = []
    for j in range(2 if rng.random() < 0.3 else 1):
        if (i + j) % 2 == 0:
            triggers.append({"mode": "ckpt-write", "k": rng.randint(1, max(1, n_ckpt - 1 - j))})
        else:
            triggers.append({"mode": "time", "t": round(rng.uniform(0.3, 0.9) * ref["wall_s"], 2)})
    desc = " then ".join(f"during its ckpt write #{t['k']}" if t["mode"] == "ckpt-write" else f"at t={t['t']}s"
                         for t in triggers)
    case = Case("train", i, desc)
    out = work / f"train-{i:02d}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        for attempt in range(len(triggers) + 3):  # bounded: each scheduled kill, then one clean finish (+ slack)
            latest = ckpt.list_checkpoints(out)
            expect = latest[-1] if latest else None
            if expect is not None:
                ckpt.load_checkpoint(expect)  # the newest complete checkpoint always loads
            trig = triggers[attempt] if attempt < len(triggers) else None
            r = _run_until(_train_cmd(out, steps, resume=expect is not None), out, trig, timeout)
            m = RESUMED.search(r["stderr"])
            if expect is not None:
                if m is None:
                    if r["killed"]:
                        case.notes.append(f"attempt {attempt}: killed before the resume was logged")
                    else:
                        raise AssertionError(f"attempt {attempt}: no 'resumed from' in the log:\n{r['stderr'][-2000:]}")
                elif Path(m.group(1)).resolve() != expect.resolve():
                    raise AssertionError(f"resumed from {m.group(1)}, expected the newest complete {expect}")
                else:
                    case.notes.append(f"resumed from {expect.name}")
            if r["killed"]:
                case.kills += 1
                if r["left_tmp"]:
                    case.notes.append(f"partial {r['left_tmp'][0]} left on disk")
                if any(p.name.startswith(".") for p in ckpt.list_checkpoints(out)):
                    raise AssertionError("a temp checkpoint folder is listed as complete")
                continue
            if r["rc"] != 0:
                raise AssertionError(f"attempt {attempt}: rc {r['rc']}:\n{r['stderr'][-2000:]}")
            if trig is not None:
                case.notes.append(f"attempt {attempt}: finished before its trigger")
            break
        else:
            raise AssertionError("did not finish within the bounded number of attempts")
        if _tmp_ckpts(out):
            raise AssertionError(f"temp checkpoint folders survive the finished run: {_tmp_ckpts(out)}")
        weights, name = _final_weights(out)
        if name != ref["final"]:
            raise AssertionError(f"final checkpoint {name}, reference {ref['final']}")
        diff = _max_diff(weights, ref["weights"])
        case.detail = f"max |Δparam| = {diff:.1e}"
        if diff > TOL:
            raise AssertionError(f"final parameters differ from the uninterrupted run by {diff:.2e} > {TOL}")
        case.ok = True
        case.outcome = f"resumed OK x{case.kills}, final == reference ({case.detail})"
    except Exception as exc:  # report every failure as a case outcome, keep going
        case.outcome = f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        case.detail = case.detail or str(exc)[-1500:]
    shutil.rmtree(out, ignore_errors=True)
    return case


# --------------------------------------------------------------------------------------- index / cache

INDEX_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from mmrec.index.item_index import ItemIndex
    d = sys.argv[1]
    print("ready", flush=True)
    for i in range(100000):
        idx = ItemIndex.load(d)
        rng = np.random.default_rng(i)
        idx.add([f"v{i}-{j}" for j in range(200)], rng.standard_normal((200, 16)).astype("float32"))
        idx.save(d)
        print(i, flush=True)
""")

CACHE_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from mmrec.encoders.cache import EmbeddingCache
    c = EmbeddingCache(sys.argv[1])
    print("ready", flush=True)
    for i in range(100000):
        rng = np.random.default_rng(i)
        c.store("fp", [f"h{i}-{j}" for j in range(300)], rng.standard_normal((300, 16)).astype("float32"))
        print(i, flush=True)
""")


def _base_vectors(n: int, dim: int = 16) -> Any:
    import numpy as np

    return np.random.default_rng(12345).standard_normal((n, dim)).astype("float32")


def _kill_child(code: str, target: str, trigger: Dict[str, Any], watch: Path, timeout: float = 120.0) -> Dict[str, Any]:
    """Start a writer child, wait for 'ready', kill it on the trigger; return what it reported."""
    proc = subprocess.Popen([sys.executable, "-c", code, target], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), cwd=REPO, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"writer child did not start: {line!r} {proc.stderr.read()[-2000:] if proc.stderr else ''}")
    t0 = time.monotonic()
    seen = 0
    while proc.poll() is None:
        now = time.monotonic() - t0
        if now > timeout:
            break
        if trigger["mode"] == "time":
            fire = now >= trigger["t"]
        else:  # a temp file / folder of the k-th write is on disk
            try:
                present = any(n.name.endswith(".tmp") or ".old-" in n.name for n in os.scandir(watch))
            except FileNotFoundError:
                present = False
            if present:
                seen += 1
            fire = seen >= trigger["k"]
        if fire:
            break
        time.sleep(POLL_S)
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    writes = len([x for x in out.splitlines() if x.strip().isdigit()])
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"writer child exited on its own (rc {proc.returncode}): {err[-2000:]}")
    leftovers = sorted(n.name for n in watch.iterdir() if n.name.endswith(".tmp") or ".old-" in n.name) \
        if watch.is_dir() else []
    return {"writes": writes, "leftovers": leftovers}


def _io_trigger(i: int, rng: random.Random) -> Dict[str, Any]:
    if i % 2 == 0:
        return {"mode": "watch", "k": rng.randint(1, 40)}
    return {"mode": "time", "t": round(rng.uniform(0.05, 1.5), 3)}


def _trigger_text(t: Dict[str, Any]) -> str:
    return f"temp file seen (poll #{t['k']})" if t["mode"] == "watch" else f"at t={t['t']}s"


def index_case(i: int, rng: random.Random, work: Path) -> Case:
    """Kill a process looping load -> add -> save on one index folder; the folder must stay loadable."""
    import numpy as np

    from mmrec.index.item_index import ItemIndex

    trig = _io_trigger(i, rng)
    case = Case("index", i, _trigger_text(trig))
    root = work / f"index-{i:02d}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    d = root / "idx"
    try:
        base = _base_vectors(300)
        idx = ItemIndex(16)
        idx.add([f"base-{j}" for j in range(300)], base)
        idx.save(d)
        r = _kill_child(INDEX_CHILD, str(d), trig, root)
        case.kills = 1
        back = ItemIndex.load(d)
        n = len(back)
        if (n - 300) % 200 or not r["writes"] <= (n - 300) // 200 <= r["writes"] + 1:
            raise AssertionError(f"{n} items after {r['writes']} completed saves: not a whole version")
        np.testing.assert_allclose(np.stack([back.vector(f"base-{j}") for j in (0, 150, 299)]), base[[0, 150, 299]])
        back.add(["after-crash"], base[:1])
        back.save(d)
        if "after-crash" not in ItemIndex.load(d):
            raise AssertionError("the next save after the crash was lost")
        case.ok = True
        case.detail = f"{r['writes']} saves done; leftovers {r['leftovers'] or 'none'}"
        case.outcome = f"loadable, {n} items (version {(n - 300) // 200}); next save OK"
    except Exception as exc:
        case.outcome = f"FAIL: {type(exc).__name__}: {exc}"
    shutil.rmtree(root, ignore_errors=True)
    return case


def index_swap_case(work: Path) -> Case:
    """Deterministic: the state a crash leaves between atomic_dir's two renames (old moved aside, new not in)."""
    import numpy as np

    from mmrec.index.item_index import ItemIndex

    case = Case("index", -1, "simulated crash between the two renames of atomic_dir")
    root = work / "index-swap"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    d = root / "idx"
    try:
        base = _base_vectors(50)
        idx = ItemIndex(16)
        idx.add([f"base-{j}" for j in range(50)], base)
        idx.save(d)
        os.replace(d, root / ".idx.old-99999")  # what atomic_dir does first
        (root / ".idx.abc.tmp").mkdir()          # the new version, never renamed in
        back = ItemIndex.load(d)
        np.testing.assert_allclose(back.vector("base-7"), base[7])
        case.ok = True
        case.kills = 1
        case.outcome = "previous version restored from the moved-aside folder and loaded"
    except Exception as exc:
        case.outcome = f"FAIL: {type(exc).__name__}: {exc}"
    shutil.rmtree(root, ignore_errors=True)
    return case


def cache_case(i: int, rng: random.Random, work: Path) -> Case:
    """Kill a process storing new shards in a loop; the cached vectors must stay readable and exact."""
    import numpy as np

    from mmrec.encoders.cache import EmbeddingCache

    trig = _io_trigger(i, rng)
    case = Case("cache", i, _trigger_text(trig))
    root = work / f"cache-{i:02d}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        base = _base_vectors(100)
        hashes = [f"base-{j}" for j in range(100)]
        EmbeddingCache(root).store("fp", hashes, base)
        r = _kill_child(CACHE_CHILD, str(root), trig, root / "fp")
        case.kills = 1
        cache = EmbeddingCache(root)
        vecs, miss = cache.lookup("fp", hashes)
        if miss.any():
            raise AssertionError(f"{int(miss.sum())} of the first version's vectors are gone")
        np.testing.assert_array_equal(vecs, base)
        n = cache.count("fp")
        if (n - 100) % 300 or not r["writes"] <= (n - 100) // 300 <= r["writes"] + 1:
            raise AssertionError(f"{n} cached vectors after {r['writes']} completed stores")
        last = f"h{(n - 100) // 300 - 1}-0"
        if n > 100 and cache.lookup("fp", [last])[1].any():
            raise AssertionError(f"the newest complete store ({last}) is missing")
        cache.store("fp", ["after-crash"], base[:1])
        strays = [p.name for p in (root / "fp").iterdir() if p.name.endswith(".tmp")]
        live = {s["file"] for s in json.loads((root / "fp" / "manifest.json").read_text())["shards"]}
        orphans = [p.name for p in (root / "fp").glob("shard-*.safetensors") if p.name not in live]
        if orphans:
            raise AssertionError(f"orphan shards survive the next store: {orphans}")
        case.ok = True
        case.detail = f"{r['writes']} stores done; leftovers {r['leftovers'] or 'none'}"
        case.outcome = f"loadable, {n} vectors, first version exact; next store OK" + \
            (f" (temp files left: {len(strays)})" if strays else "")
    except Exception as exc:
        case.outcome = f"FAIL: {type(exc).__name__}: {exc}"
    shutil.rmtree(root, ignore_errors=True)
    return case


# --------------------------------------------------------------------------------------- main

def _git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def table(cases: List[Case]) -> str:
    from mmrec.markdown import markdown_table

    rows = []
    for c in cases:
        name = "sim" if c.case < 0 else str(c.case)
        extra = f"; {'; '.join(dict.fromkeys(c.notes))}" if c.notes else ""
        rows.append([c.kind, name, c.trigger, c.kills, f"{'✅' if c.ok else '❌'} {c.outcome}{extra}"])
    return markdown_table(["kind", "case", "fault injected", "kills", "outcome"], rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10, help="training kill/resume cases (default 10)")
    p.add_argument("--io-cases", type=int, default=10, help="index and cache cases each (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=8, help="training steps per run (checkpoint every 2)")
    p.add_argument("--kinds", default="train,index,cache", help="comma list of train, index, cache")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder, removed)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per training process")
    p.add_argument("--json", default=None, help="write the cases and outcomes here")
    args = p.parse_args(argv)
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    unknown = kinds - {"train", "index", "cache"}
    if unknown:
        p.error(f"unknown --kinds {sorted(unknown)}")
    if args.steps < 4 or args.steps % 2:
        p.error("--steps must be an even number >= 4")
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmrec-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    cases: List[Case] = []
    t0 = time.monotonic()
    ref_info: Dict[str, Any] = {}
    try:
        if "train" in kinds and args.cases > 0:
            ref = reference_run(work, args.steps, args.timeout)
            ref_info = {"final": ref["final"], "wall_s": round(ref["wall_s"], 1)}
            print(f"reference run: {ref['final']} in {ref['wall_s']:.1f}s", file=sys.stderr)
            for i in range(args.cases):
                cases.append(train_case(i, rng, work, args.steps, ref, args.timeout))
                print(f"train {i}: {cases[-1].outcome}", file=sys.stderr)
        if "index" in kinds and args.io_cases > 0:
            cases.append(index_swap_case(work))
            for i in range(args.io_cases):
                cases.append(index_case(i, rng, work))
                print(f"index {i}: {cases[-1].outcome}", file=sys.stderr)
        if "cache" in kinds and args.io_cases > 0:
            for i in range(args.io_cases):
                cases.append(cache_case(i, rng, work))
                print(f"cache {i}: {cases[-1].outcome}", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(cases))
    failed = [c for c in cases if not c.ok]
    print(f"\n{len(cases) - len(failed)}/{len(cases)} cases passed in {time.monotonic() - t0:.0f}s")
    if args.json:
        import torch

        report = {"seed": args.seed, "steps": args.steps, "tolerance": TOL, "reference": ref_info,
                  "cases": [asdict(c) for c in cases], "passed": len(cases) - len(failed), "total": len(cases),
                  "machine": {"platform": platform.platform(), "python": platform.python_version(),
                              "cpus": os.cpu_count(), "torch": torch.__version__},
                  "git_commit": _git_commit(), "wall_s": round(time.monotonic() - t0, 1)}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
