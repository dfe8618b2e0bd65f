"""One input contract (mmrec.contract) everywhere a user reaches: loaders, prepare, onboarding, removal, HTTP.

* hand-checked ids / texts that must be accepted or refused, with the reason;
* hypothesis: the data loader, onboarding (Python), item removal and the HTTP
  schemas accept and refuse exactly the same ids and text fields;
* `mmrec data prepare` on a catalog whose item_id is a list and title a dict:
  one error naming the file, row and column, nothing written;
* CLI fuzzing of recommend / similar / onboard / remove, in process through
  ``mmrec.cli.main(argv)``: exit 0, 1 (onboard/remove: partly applied) or 2,
  never a traceback; a few subprocess cases check stderr has no traceback;
* data files are bounded (size, rows, archive members and their sizes).
"""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import copy_run
from mmrec import contract
from mmrec.cli import main
from mmrec.config import DataConfig, FileSpec
from mmrec.data.images import extract_tar_once
from mmrec.data.loaders import load_dataset
from mmrec.data.schema import Catalog, Interactions
from mmrec.errors import DataError, MMRecError
from mmrec.serve.app import DeleteRequest, ItemIn, RecommendRequest
from mmrec.serve.content import normalise_items

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ the rules

@pytest.mark.parametrize("value,problem", [
    ("1", None), ("B00005N5PF", None), ("clipart/animals/cat.svg", None), ("a b", None), ("é", None),
    ("x" * 256, None), ("😀", None),
    ("", "is empty"), ("x" * 257, "257 characters long"), (" a", "leading or trailing whitespace"),
    ("a\n", "leading or trailing whitespace"), ("a\u00a0", "leading or trailing whitespace"),
    ("h-nul\x00x", "U+0000"), ("a\tb", "U+0009"), ("a\x7fb", "U+007F"), ("a\u200bb", "U+200B (ZERO WIDTH SPACE)"),
    ("a\u00adb", "U+00AD (SOFT HYPHEN)"), ("a\u202eb", "RIGHT-TO-LEFT OVERRIDE"), ("a\ufeffb", "U+FEFF"),
    ("a\U000e0041b", "U+E0041 (TAG LATIN CAPITAL LETTER A)"), ("a\ud800b", "U+D800"),
])
def test_id_rules(value: str, problem: Any) -> None:
    got = contract.id_problem(value)
    assert (got is None) if problem is None else (problem in got), got


@given(st.characters())
@settings(max_examples=2000, deadline=None)
def test_forbidden_characters_are_exactly_cc_cf_cs(ch: str) -> None:
    # the class is built from planes 0, 1 and 14; this checks no Cc/Cf/Cs code point lives elsewhere
    assert (contract._forbidden_chars().search(ch) is not None) == (unicodedata.category(ch) in ("Cc", "Cf", "Cs"))


def test_errors_quote_at_most_200_characters() -> None:
    with pytest.raises(DataError) as info:
        Catalog(pd.DataFrame({"item_id": ["a", "x" * 10_000_000]}))
    assert len(str(info.value)) < 400 and "10000000 characters" in str(info.value)
    assert "row 2" in str(info.value)


def test_lists_and_dicts_in_id_and_text_columns_are_errors_not_strings() -> None:
    with pytest.raises(DataError, match=r"row 2, column 'item_id': the id must be a string, got list"):
        Catalog(pd.DataFrame({"item_id": ["a", ["b"]]}))
    with pytest.raises(DataError, match=r"row 1, column 'title': must be a string, got dict"):
        Catalog(pd.DataFrame({"item_id": ["a"], "title": [{"x": 1}]}))
    with pytest.raises(DataError, match=r"column 'categories': categories entry 1 must be a string, got int"):
        Catalog(pd.DataFrame({"item_id": ["a"], "categories": [["x", 3]]}))
    with pytest.raises(DataError, match=r"row 2, column 'user_id': the id must be a string, got float 1.5"):
        Interactions(pd.DataFrame({"user_id": [1.0, 1.5], "item_id": ["a", "a"], "timestamp": [1, 2]}))
    with pytest.raises(DataError, match=r"column 'rating': must be finite"):
        Interactions(pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1], "rating": [math.inf]}))
    # integers (and integral floats, as pandas reads an int column with gaps) are ids written in decimal
    inter = Interactions(pd.DataFrame({"user_id": [7, 8], "item_id": [1.0, 2.0], "timestamp": [1, 2]}))
    assert inter.df["user_id"].tolist() == ["7", "8"] and inter.df["item_id"].tolist() == ["1", "2"]


def test_prepare_refuses_a_list_id_and_a_dict_title_naming_file_and_row(tmp_path: Path, mmrec_home: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "shop"
    data.mkdir()
    (data / "items.jsonl").write_text('{"item_id": "a", "title": "A"}\n{"item_id": ["b"], "title": {"x": 1}}\n')
    (data / "events.csv").write_text("user_id,item_id,timestamp\nu,a,1\n")
    cfg = tmp_path / "shop.yaml"
    cfg.write_text(f"data:\n  name: contract-shop\n  path: {data}\n  catalog: {{path: items.jsonl}}\n"
                   "  interactions: {path: events.csv}\n")
    before = sorted(p.relative_to(mmrec_home) for p in mmrec_home.rglob("*contract-shop*"))
    capsys.readouterr()
    assert main(["data", "prepare", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl: row 2, column 'item_id': the id must be a string, got list ['b']" in err, err
    assert "Traceback" not in err
    assert sorted(p.relative_to(mmrec_home) for p in mmrec_home.rglob("*contract-shop*")) == before


# ------------------------------------------------------------------------------------------------ across entry points

def _loader_accepts(item_id: Any = "item", title: Any = "A title") -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "items.jsonl").write_text(json.dumps({"item_id": item_id, "title": title}) + "\n", encoding="utf-8",
                                          errors="surrogatepass")
        cfg = DataConfig(name="prop", path=str(root), catalog=FileSpec(path="items.jsonl"))
        try:
            load_dataset(cfg)
            return True
        except DataError:
            return False


def _onboard_accepts(item_id: Any = "item", title: Any = "A title") -> bool:
    records, failed, _ = normalise_items([{"item_id": item_id, "title": title}])
    return bool(records)


def _http_accepts(item_id: Any = "item", title: Any = "A title") -> bool:
    try:
        ItemIn.model_validate({"item_id": item_id, "title": title})
        return True
    except ValidationError:
        return False


def _removal_accepts(item_id: Any) -> bool:
    try:
        DeleteRequest.model_validate({"item_ids": [item_id]})
        http = True
    except ValidationError:
        http = False
    try:
        contract.as_ids([item_id])  # what Recommender.remove runs before touching the index
        python = True
    except MMRecError:
        python = False
    assert http == python, item_id
    return python


# ids: any text (control/format characters and whitespace included), plus what JSON can also carry
ID_VALUES = st.one_of(st.text(max_size=300), st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs"]),
                                                     min_size=1, max_size=3).map(lambda s: f"a{s}"),
                      st.integers(-10**12, 10**12), st.booleans(), st.none(),
                      st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=3), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))


@given(ID_VALUES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_loader_onboarding_removal_and_http_agree_on_ids(value: Any) -> None:
    verdicts = {"loader": _loader_accepts(item_id=value), "onboard": _onboard_accepts(item_id=value),
                "http": _http_accepts(item_id=value), "remove": _removal_accepts(value)}
    assert len(set(verdicts.values())) == 1, (value, verdicts)
    try:
        RecommendRequest.model_validate({"user_id": value})
        user_ok = True
    except ValidationError:
        user_ok = False
    assert user_ok == verdicts["http"] or value is None  # user ids follow the same rules (None: no user given)


TEXT_VALUES = st.one_of(st.text(max_size=50), st.just("x" * contract.MAX_TEXT_CHARS),
                        st.just("x" * (contract.MAX_TEXT_CHARS + 1)), st.integers(), st.booleans(),
                        st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                      max_size=1))


@given(TEXT_VALUES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_loader_onboarding_and_http_agree_on_text_fields(value: Any) -> None:
    verdicts = {"loader": _loader_accepts(title=value), "onboard": _onboard_accepts(title=value),
                "http": _http_accepts(title=value)}
    assert len(set(verdicts.values())) == 1, (value, verdicts)


def test_http_error_bodies_quote_at_most_200_characters() -> None:
    from fastapi.testclient import TestClient

    from mmrec.serve.app import create_app

    class _NoRec:
        def info(self) -> dict:
            return {"run": "x"}

    with TestClient(create_app(_NoRec())) as client:
        r = client.post("/recommend", json={"user_id": "x" * 1_000_000})
    assert r.status_code == 422 and len(r.text) < 1000, r.text[:300]
    assert "1000000 characters long (at most 256)" in r.text


# ------------------------------------------------------------------------------------------------ CLI fuzzing

@pytest.fixture(scope="module")
def fuzz_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(tiny_run, tmp_path_factory.mktemp("fuzz") / "run")


@pytest.fixture(scope="module")
def cached_recommender(fuzz_run: Path):
    """Load the run once: each fuzzed command gets the same in-memory recommender (persistence off)."""
    from mmrec import Recommender

    return Recommender.from_run(fuzz_run, persist=False)


ARG_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["1", "50", "0", "-1", "1e9", "10**11", "", " 1", "nan",
                                                            "1,2,3", "1,,2", "50, 181", "\x00", "--k"]),
                     st.integers(-10**15, 10**15).map(str))


@given(cmd=st.sampled_from(["recommend-user", "recommend-history", "similar-item", "similar-text", "remove"]),
       value=ARG_TEXT, k=ARG_TEXT, flags=st.lists(st.sampled_from(["--json", "--include-seen", "--explain"]),
                                                  max_size=2, unique=True))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_cli_fuzz_exits_0_1_or_2_never_a_traceback(cmd: str, value: str, k: str, flags: list, fuzz_run: Path,
                                                    cached_recommender: Any, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrec.commands import recommend as recommend_cmd

    monkeypatch.setattr(recommend_cmd, "load_recommender", lambda args, **kw: cached_recommender)
    name, _, how = cmd.partition("-")
    argv = {"recommend-user": ["recommend", "--user", value], "recommend-history": ["recommend", "--history", value],
            "similar-item": ["similar", "--item", value], "similar-text": ["similar", "--text", value],
            "remove": ["remove", "--", value]}[cmd]
    if name != "remove":
        argv += ["--k", k] + [f for f in flags if name == "recommend" or f == "--json"]
    argv += ["--run", str(fuzz_run)]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: a bad command line
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc in ((0, 1, 2) if name == "remove" else (0, 2)), (argv, rc, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    if rc == 2 and "--json" not in argv:
        assert err.count("error:") == 1, (argv, err)


@given(rows=st.lists(st.one_of(
    st.fixed_dictionaries({"item_id": ID_VALUES}, optional={"title": TEXT_VALUES, "categories": TEXT_VALUES}),
    st.integers(), st.text(max_size=5)), min_size=0, max_size=4))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
def test_cli_onboard_fuzz_exit_codes_say_what_happened(rows: list, cached_recommender: Any, fuzz_run: Path,
                                                       capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrec.commands import recommend as recommend_cmd

    monkeypatch.setattr(recommend_cmd, "load_recommender", lambda args, **kw: cached_recommender)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8", errors="surrogatepass")
        capsys.readouterr()
        rc = main(["onboard", str(path), "--json", "--run", str(fuzz_run)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    summary = json.loads(out)
    if "error" in summary:
        assert rc == 2
        return
    applied = len(summary["added"]) + len(summary["replaced"])
    assert rc == (2 if applied == 0 else 1 if summary["failed"] else 0), (rows, summary)


@pytest.mark.parametrize("argv", [
    ["recommend", "--user", "1\x01", "--k", "5"], ["recommend", "--history", " 50", "--k", "5"],
    ["similar", "--item", "x" * 100_000], ["recommend", "--user", "1", "--k", "100000000000"],
])
def test_cli_subprocess_bad_arguments_print_one_error_line(argv: list, fuzz_run: Path, mmrec_home: Path) -> None:
    import os

    env = {**os.environ, "MMREC_HOME": str(mmrec_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "mmrec"), *argv, "--run", str(fuzz_run)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 500, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ data-file bounds

def test_data_file_sizes_and_rows_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrec.data.loaders import generic

    (tmp_path / "items.csv").write_text("item_id\na\nb\nc\n")
    cfg = DataConfig(name="bounded", path=str(tmp_path), catalog=FileSpec(path="items.csv"))
    monkeypatch.setattr(generic, "MAX_DATA_ROWS", 2)
    with pytest.raises(DataError, match=r"items.csv: rows: 3 is over the limit of 2"):
        load_dataset(cfg)
    monkeypatch.setattr(generic, "MAX_DATA_ROWS", 10)
    monkeypatch.setattr(generic, "MAX_DATA_FILE_BYTES", 5)
    with pytest.raises(DataError, match=r"items.csv bytes: 14 is over the limit of 5"):
        load_dataset(cfg)


def _tar(path: Path, members: dict) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_members_and_paths_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrec.data import images

    with pytest.raises(DataError, match="would be written outside"):
        extract_tar_once(_tar(tmp_path / "evil.tar", {"imgs/../../x.png": b"x"}), tmp_path / "out1", "imgs/")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "x.png").exists()
    monkeypatch.setattr(images, "MAX_ARCHIVE_MEMBERS", 2)
    many = _tar(tmp_path / "many.tar", {f"imgs/{i}.png": b"x" for i in range(3)})
    with pytest.raises(DataError, match="members extracted: 3 is over the limit of 2"):
        extract_tar_once(many, tmp_path / "out2", "imgs/")
    monkeypatch.setattr(images, "MAX_ARCHIVE_MEMBERS", 100)
    monkeypatch.setattr(images, "MAX_MEMBER_BYTES", 10)
    with pytest.raises(DataError, match=r"member 'imgs/big.png' bytes: 11 is over the limit of 10"):
        extract_tar_once(_tar(tmp_path / "big.tar", {"imgs/big.png": b"x" * 11}), tmp_path / "out3", "imgs/")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()
