"""Data model round trips, the generic loader, and validation errors on bad files."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mmrec.config import DataConfig, FileSpec, load_config
from mmrec.data.loaders import load_dataset
from mmrec.data.schema import Catalog, Interactions
from mmrec.data.validation import clean
from mmrec.errors import ConfigError, DataError


def _catalog():
    return Catalog(pd.DataFrame({"item_id": ["0012", "7"], "title": ["Red shirt", "Blue hat"],
                                 "categories": [["tops", "shirts"], []], "image": ["a.jpg", None],
                                 "price": [9.5, 3.0]}))


def test_catalog_parquet_and_hf_round_trip(tmp_path):
    cat = _catalog()
    cat.to_parquet(tmp_path / "c.parquet")
    back = Catalog.from_parquet(tmp_path / "c.parquet")
    assert back.item_ids == ["0012", "7"]  # zero-padded ids survive
    assert back.df["categories"].tolist() == [["tops", "shirts"], []]
    assert back.image_paths() == ["a.jpg", None]
    assert back.extra_columns == ["price"]
    hf = cat.to_hf()
    assert hf.num_rows == 2 and hf[0]["item_id"] == "0012"
    assert Catalog.from_hf(hf).df["title"].tolist() == ["Red shirt", "Blue hat"]


def test_interactions_round_trip_keeps_order_flag(tmp_path):
    inter = Interactions(pd.DataFrame({"user_id": [1, 1, 2], "item_id": ["a", "b", "a"]}))
    assert inter.timestamps_are_order and inter.df["timestamp"].tolist() == [0, 1, 0]
    inter.to_parquet(tmp_path / "i.parquet")
    back = Interactions.from_parquet(tmp_path / "i.parquet")
    assert back.timestamps_are_order and back.df["user_id"].tolist() == ["1", "1", "2"]
    assert Interactions.from_hf(inter.to_hf()).df["item_id"].tolist() == ["a", "b", "a"]


def _write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _generic_cfg(tmp_path, cat="items.csv", inter="events.csv", cat_cols=None, inter_cols=None, **kw):
    return DataConfig(name="shop", path=str(tmp_path),
                      catalog=FileSpec(path=cat, columns=cat_cols or {}) if cat else None,
                      interactions=FileSpec(path=inter, columns=inter_cols or {}) if inter else None, **kw)


def test_generic_csv_with_column_mapping_and_dates(tmp_path):
    (tmp_path / "img").mkdir()
    _write(tmp_path / "items.csv", "sku,name,tags,pic\n0001,Lamp,home|light,img/l.png\n0002,Desk,home,\n")
    _write(tmp_path / "events.csv", "cust,sku,when\nc1,0001,2024-01-02\nc1,0002,2024-01-01\n")
    cfg = _generic_cfg(tmp_path, cat_cols={"item_id": "sku", "title": "name", "categories": "tags", "image": "pic"},
                       inter_cols={"user_id": "cust", "item_id": "sku", "timestamp": "when"})
    data = load_dataset(cfg)
    assert data.catalog.item_ids == ["0001", "0002"]
    assert data.catalog.df["categories"].tolist() == [["home", "light"], ["home"]]
    assert data.catalog.image_paths()[0] == str((tmp_path / "img" / "l.png").resolve())
    assert data.interactions.sequences() == {"c1": ["0002", "0001"]}


def test_generic_json_mapping_jsonl_and_sequences(tmp_path):
    _write(tmp_path / "items.json", json.dumps({"a": {"title": "A"}, "b": {"title": "B"}, "c": {"title": "C"}}))
    _write(tmp_path / "seq.txt", "u1 a b c\nu2 c a\n")
    cfg = DataConfig(name="shop", path=str(tmp_path), catalog=FileSpec(path="items.json"),
                     sequences=FileSpec(path="seq.txt"))
    data = load_dataset(cfg)
    assert data.interactions.timestamps_are_order
    assert data.interactions.sequences() == {"u1": ["a", "b", "c"], "u2": ["c", "a"]}
    _write(tmp_path / "items.jsonl", '{"id": "x", "title": "X"}\n{"id": "y", "title": "Y"}\n')
    _write(tmp_path / "ev.jsonl", '{"u": "1", "i": "x", "t": 5}\n{"u": "1", "i": "y", "t": 3}\n')
    cfg = _generic_cfg(tmp_path, cat="items.jsonl", inter="ev.jsonl", cat_cols={"item_id": "id"},
                       inter_cols={"user_id": "u", "item_id": "i", "timestamp": "t"})
    assert load_dataset(cfg).interactions.sequences() == {"1": ["y", "x"]}


BAD_FILES = [
    ("empty file", b"", b"user_id,item_id\n1,a\n", "empty"),
    ("wrong delimiter", b"item_id;title\na;A\n", b"user_id,item_id\n1,a\n", "wrong delimiter"),
    ("missing column", b"item_id,title\na,A\n", b"user_id,timestamp\n1,5\n", "item_id"),
    ("non-UTF-8 bytes", b"item_id,title\na,caf\xe9\n", b"user_id,item_id\n1,a\n", "UTF-8"),
    ("duplicate ids", b"item_id,title\na,A\na,B\n", b"user_id,item_id\n1,a\n", "duplicate item ids"),
    ("unknown item", b"item_id,title\na,A\n", b"user_id,item_id\n1,zzz\n", "missing from the catalog"),
    ("negative timestamp", b"item_id\na\n", b"user_id,item_id,timestamp\n1,a,-5\n", "negative timestamp"),
    ("milliseconds", b"item_id\na\n", b"user_id,item_id,timestamp\n1,a,1700000000000\n", "future"),
    ("bad date", b"item_id\na\n", b"user_id,item_id,timestamp\n1,a,2024-01-01\n1,a,yesterday\n", "data row 2"),
    ("empty user id", b"item_id\na\n", b"user_id,item_id\n,a\n", "user_id.: the id .. is empty"),
]


@pytest.mark.parametrize("what,cat,inter,needle", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_give_one_clear_error(tmp_path, what, cat, inter, needle):
    _write(tmp_path / "items.csv", cat, "wb")
    _write(tmp_path / "events.csv", inter, "wb")
    cfg = _generic_cfg(tmp_path)
    with pytest.raises(DataError, match=needle) as info:
        data = load_dataset(cfg)
        clean(data, cfg)
    assert "items.csv" in str(info.value) or "events.csv" in str(info.value) or "shop" in str(info.value)


def test_huge_field_rejected_and_unknown_items_droppable(tmp_path):
    _write(tmp_path / "items.csv", "item_id,title\na," + "x" * 50 + "\nb,B\n")
    _write(tmp_path / "events.csv", "user_id,item_id\n1,b\n1,zzz\n")
    cfg = _generic_cfg(tmp_path, max_field_chars=10)
    with pytest.raises(DataError, match="item 'a' has a title of 50 characters"):
        clean(load_dataset(cfg), cfg)
    cfg = _generic_cfg(tmp_path, drop_unknown_items=True)
    data, _ = clean(load_dataset(cfg), cfg)
    assert data.interactions.df["item_id"].tolist() == ["b"]


def test_sequence_file_with_repeated_user_names_the_line(tmp_path):
    _write(tmp_path / "seq.txt", "u1 a b\nu2 a\nu1 c\n")
    cfg = DataConfig(name="s", path=str(tmp_path), sequences=FileSpec(path="seq.txt"))
    with pytest.raises(DataError, match="line 3: user 'u1' already appeared on line 1"):
        load_dataset(cfg)


def test_kcore_and_min_rating_filters(tmp_path):
    rows = ["user_id,item_id,rating"] + [f"u{u},i{i},{1 + (u + i) % 5}" for u in range(6) for i in range(u + 1)]
    _write(tmp_path / "events.csv", "\n".join(rows) + "\n")
    cfg = _generic_cfg(tmp_path, cat=None, user_core=3, item_core=3)
    data, counts = clean(load_dataset(cfg), cfg)
    df = data.interactions.df
    assert df.groupby("user_id").size().min() >= 3 and df.groupby("item_id").size().min() >= 3
    assert counts["kcore_removed"] == 21 - len(df) > 0
    cfg = _generic_cfg(tmp_path, cat=None, min_rating=4)
    data, counts = clean(load_dataset(cfg), cfg)
    assert (data.interactions.df["rating"] >= 4).all() and counts["removed_below_min_rating"] > 0


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.nme"):
        load_config(overrides=["data.nme=x"])
    with pytest.raises(ConfigError, match="split.seed"):
        load_config(overrides=["split.seed=abc"])
    with pytest.raises(ConfigError, match="cold_item_fraction"):
        load_config(overrides=["split.cold_item_fraction=1.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  user_core: -2\n")
    with pytest.raises(ConfigError, match="user_core"):
        load_config(bad)
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
