"""What a user sees from the command line: one line per error (or one JSON object with ``--json``), ``-q`` / ``-v``,
log lines outside progress bars, the run picked by default named, and training trackers checked."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmrec.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TQDM_BAR = re.compile(r"\d+%\|")  # what every tqdm bar prints: "  0%|", "100%|"


def _json_commands() -> set[str]:
    """Every (sub)command of the CLI that takes --json, as 'data stats', 'index build', ..."""
    import argparse

    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        if "--json" in parser._option_string_actions:  # noqa: SLF001
            found.add(" ".join(words))
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, child in action.choices.items():
                    walk(child, (*words, name))

    walk(build_parser(), ())
    return found


# ------------------------------------------------------------------------------------------- errors

def test_a_user_error_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    assert main(["data", "stats", "no-such-set"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [err.strip()] and err.startswith("error: unknown dataset 'no-such-set'"), err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # not logged a second time


def test_a_bad_command_line_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recommend", "--user", "1", "--k", "many"])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: mmrec recommend: argument --k: invalid int value: 'many'")


def _bad_calls(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """A failing call of every --json command and the error kind it must report."""
    nx = str(tmp / "no-such-run")
    return {
        "data prepare": (["data", "prepare", "no-such-set"], "data"),
        "data stats": (["data", "stats", "no-such-set"], "data"),
        "data list": (["data", "list", "--no-such-flag"], "usage"),
        "embed": (["embed", "no-such-set"], "data"),
        "align": (["align", "epochs=-1"], "config"),
        "evaluate": (["evaluate", "--run", nx], "error"),
        "index build": (["index", "build", "--run", nx], "error"),
        "index info": (["index", "info", "--run", nx], "error"),
        "recommend": (["recommend", "--run", nx, "--user", "1"], "error"),
        "similar": (["similar", "--run", nx, "--item", "1"], "error"),
        "onboard": (["onboard", str(tmp / "missing.jsonl"), "--run", nx], "data"),
        "remove": (["remove", "--run", nx, "1"], "error"),
        "export": (["export", "--run", nx, "--out", str(tmp / "exported")], "error"),
    }


def test_the_failure_table_covers_every_json_command(tmp_path: Path) -> None:
    assert set(_bad_calls(tmp_path)) == _json_commands()


@pytest.mark.parametrize("command", sorted(_bad_calls(Path("/x"))))
def test_with_json_an_error_is_one_json_object_on_stdout(command: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv, kind = _bad_calls(tmp_path)[command]
    try:
        rc = main([*argv, "--json"])
    except SystemExit as exc:  # a bad command line exits from argparse
        rc = exc.code
    assert rc == 2
    out, err = capsys.readouterr()
    assert out.count("\n") == 1, out
    obj = json.loads(out)
    assert set(obj) == {"error", "kind", "type"} and obj["kind"] == kind and obj["error"], obj
    assert "error:" not in err  # printed once: as the JSON object


def test_error_kinds() -> None:
    from mmrec.cli import error_kind
    from mmrec.errors import ConfigError, DataError, DatasetNotFoundError, MMRecError
    from mmrec.index.errors import IndexMemoryError, UnknownItemError

    assert [error_kind(e("x")) for e in (MMRecError, ConfigError, DataError, DatasetNotFoundError,
                                         UnknownItemError, IndexMemoryError)] == \
        ["error", "config", "data", "dataset_not_found", "unknown_item", "index_memory"]


def test_a_multi_line_message_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from mmrec.cli import emit_error

    emit_error("first\n  second\n\nthird", "data", "DataError")
    assert capsys.readouterr().err == "error: first second third\n"


# ------------------------------------------------------------------------------------------- -q / -v

@pytest.fixture
def chatty(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mmrec data list` made to do what a real command does: a progress bar (explicitly enabled, as mmrec's and
    third-party bars are), a third-party INFO line on the root logger (open_clip) and mmrec lines."""
    from tqdm.auto import tqdm

    from mmrec.commands import data as data_cmd

    def fake_list(args: object) -> int:
        for _ in tqdm(range(3), desc="work", disable=False, mininterval=0):
            pass
        logging.getLogger().info("third-party chatter")
        logging.getLogger("mmrec.commands.data").info("mmrec info line")
        logging.getLogger("mmrec.commands.data").debug("mmrec debug line")
        return 0

    monkeypatch.setattr(data_cmd, "_list", fake_list)


@pytest.mark.parametrize("argv", [["-q", "data", "list"], ["data", "list", "-q"], ["data", "-q", "list"]])
def test_quiet_silences_bars_and_info_lines_wherever_it_is_placed(argv: list[str], chatty: None,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == "", err


def test_default_and_verbose_levels(chatty: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    err = capsys.readouterr().err
    assert TQDM_BAR.search(err) and "INFO mmrec.commands.data: mmrec info line" in err
    assert "third-party chatter" not in err and "mmrec debug line" not in err  # third parties: warnings only
    assert main(["data", "list", "-v"]) == 0
    err = capsys.readouterr().err
    assert "INFO root: third-party chatter" in err and "DEBUG mmrec.commands.data: mmrec debug line" in err


def test_main_puts_logging_and_tqdm_back(chatty: None, capsys: pytest.CaptureFixture[str]) -> None:
    import tqdm.std

    init = tqdm.std.tqdm.__dict__["__init__"]
    handlers, level = list(logging.getLogger().handlers), logging.getLogger("mmrec").level
    env = os.environ.get("TQDM_DISABLE")
    assert main(["-q", "data", "list"]) == 0
    assert tqdm.std.tqdm.__dict__["__init__"] is init and os.environ.get("TQDM_DISABLE") == env
    assert logging.getLogger().handlers == handlers and logging.getLogger("mmrec").level == level


def test_log_lines_do_not_land_inside_a_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    from tqdm.auto import tqdm

    from mmrec.commands.console import cli_session

    with cli_session(0, False):
        bar = tqdm(total=3, desc="work", file=sys.stderr, mininterval=0)
        bar.update(1)
        logging.getLogger("mmrec.test").info("a line between updates")
        bar.update(2)
        bar.close()
    err = capsys.readouterr().err
    line = next(seg for row in err.split("\n") for seg in [row.split("\r")[-1]] if "a line between" in seg)
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO mmrec.test: a line between updates", line), repr(err)


def _image_config(tmp_path: Path) -> Path:
    """A 3-item catalog with one new (never cached) image, so the image tower really loads."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    noise = np.random.default_rng().integers(0, 256, size=(30, 40, 3), dtype=np.uint8)  # unseen by the cache
    Image.fromarray(noise).save(tmp_path / "a.png")
    pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["one", "two", "three"],
                  "image": [str(tmp_path / "a.png"), "", ""]}).to_csv(tmp_path / "items.csv", index=False)
    cfg = tmp_path / "shop.yaml"
    cfg.write_text(f"data:\n  name: shop\n  path: {tmp_path}\n  catalog: {{path: items.csv}}\n"
                   "encoders:\n  image: {image_size: 64}\n", encoding="utf-8")
    return cfg


def test_quiet_embed_prints_no_third_party_lines_and_no_bars(data_home: Path, tmp_path: Path) -> None:
    """The real command in a fresh process (open_clip logs ~13 `INFO root:` lines and transformers draws a
    weight-loading bar when the image tower loads)."""
    cfg = _image_config(tmp_path)
    r = subprocess.run([sys.executable, "-m", "mmrec.cli", "embed", str(cfg), "--modality", "image", "--json",
                        "--out", str(tmp_path / "feats"), "-q"],
                       capture_output=True, text=True, env=dict(os.environ), timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["image"]["computed"] == 1
    assert "INFO" not in r.stderr and not TQDM_BAR.search(r.stderr), r.stderr
    assert "Loading weights" not in r.stderr and "LOAD REPORT" not in r.stderr, r.stderr


def test_verbose_embed_shows_what_quiet_hides(data_home: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The same command with -v, in-process: the lines and bars the test above checks for are really there."""
    cfg = _image_config(tmp_path)
    assert main(["-v", "embed", str(cfg), "--modality", "image", "--json", "--out", str(tmp_path / "f")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["image"]["computed"] == 1
    assert "INFO root:" in err and TQDM_BAR.search(err), err


# ------------------------------------------------------------------------------------------- latest run

def test_the_default_run_is_named(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "home" / "runs"
    older = shutil.copytree(tiny_run, runs / "older", ignore=shutil.ignore_patterns("checkpoints", "serving"))
    newer = shutil.copytree(tiny_run, runs / "newer", ignore=shutil.ignore_patterns("checkpoints", "serving"))
    os.utime(older / "best" / "model.safetensors", (1e9, 1e9))
    monkeypatch.setenv("MMREC_HOME", str(tmp_path / "home"))

    assert main(["index", "info"]) == 2  # no index built yet: a clean error after the run is picked
    err = capsys.readouterr().err
    assert f"using the latest run: {newer.resolve()}  (pass --run DIR to choose)" in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: no index at {newer.resolve()}")

    assert main(["index", "info", "--run", str(older)]) == 2
    err = capsys.readouterr().err
    assert "latest run" not in err and str(older) in err


def test_no_run_at_all_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MMREC_HOME", str(tmp_path / "empty"))
    assert main(["recommend", "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: no trained run under ") and "--run DIR" in err


# ------------------------------------------------------------------------------------------- trackers

def test_an_unknown_tracker_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(REPO / "configs" / "tiny.yaml"), "--output-dir", str(out),
                 "train.log_with=tensorbored"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith("error: train.log_with: unknown tracker 'tensorbored'; choose from ")
    assert "tensorboard" in captured.err and not out.exists()


def test_a_missing_tracker_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrec.errors import ConfigError
    from mmrec.train import trackers

    monkeypatch.setattr(trackers, "available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"train.log_with=tensorboard needs the 'tensorboard' package.*"
                                          r"pip install tensorboard"):
        trackers.check_log_with("tensorboard")
    with pytest.raises(ConfigError, match="no tracker package is installed"):
        trackers.check_log_with("all")
    monkeypatch.setattr(trackers, "available_trackers", lambda: ["tensorboard", "wandb"])
    assert trackers.check_log_with(None) is None and trackers.check_log_with(" ") is None
    assert trackers.check_log_with("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert trackers.flat_config({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_tensorboard_logs_under_the_run(tiny_run: Path, tmp_path: Path) -> None:
    """``train.log_with=tensorboard``: scalars and hyper-parameters under ``<run>/logs`` (needs tensorboard)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mmrec.config import load_config
    from mmrec.pipeline import make_trainer

    out = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["train.log_with=tensorboard", "train.max_steps=4",
                                                       "train.eval_every=2", "train.checkpoint_every=4",
                                                       "train.log_every=1"])
    make_trainer(cfg, out).train()
    events = sorted((out / "logs" / "mmrec").glob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(out) for p in out.rglob("*"))
    tags = set()
    for ev in events:
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"loss", "lr"} <= tags and any(t.startswith("valid_") for t in tags), tags
    assert list((out / "logs" / "mmrec").glob("*/hparams.yml"))
