"""The Amazon Office loaders on the real files: counts, and that leave-one-out gives back the given split."""
from __future__ import annotations

import gzip

import pandas as pd
import pytest

from mmrec.config import DataConfig, SplitConfig
from mmrec.data.loaders import load_dataset
from mmrec.data.loaders.amazon_office import split_category_path
from mmrec.data.splits import leave_one_out
from mmrec.data.stats import dataset_stats
from mmrec.data.validation import clean
from mmrec.encoders.text import item_texts
from mmrec.config.encoders import TextEncoderConfig


def _index(path):
    with gzip.open(path, "rt") as fh:
        return {i: k for k, i in (line.split() for line in fh if line.strip())}


@pytest.fixture(scope="module")
def office(data_home):
    return load_dataset(DataConfig(name="amazon-office"))


@pytest.fixture(scope="module")
def office_unisrec(data_home):
    return load_dataset(DataConfig(name="amazon-office-unisrec"))


def test_office_2014_counts_and_text(office):
    stats = dataset_stats(office, SplitConfig(cold_item_fraction=0.0))
    assert (stats["users"], stats["items"], stats["interactions"]) == (4905, 2420, 53258)
    assert stats["items_with_description"] == 1781
    assert stats["items_with_text"] == stats["items_with_title"] == 2420
    assert not office.interactions.timestamps_are_order
    cat = office.catalog.df.set_index("item_id")
    # APAO names a brand for 1,935 items; the other 485 have none in the source either (LRD brand id 0 / empty)
    assert (cat["brand"] != "").sum() == 1935 and "brand" in office.catalog.extra_columns
    # full category paths, with Amazon's comma-containing names kept whole
    # (8 items carry a path outside Office Products in the source, e.g. "Kindle Accessories")
    assert sum(c[0].startswith("Office") for c in cat["categories"]) == 2412
    assert split_category_path("Office & School Supplies, Labels, Indexes & Stamps, Tape Flags") == [
        "Office & School Supplies", "Labels, Indexes & Stamps", "Tape Flags"]
    assert split_category_path("Office & School Supplies, Paper, Notebooks & Writing Pads") == [
        "Office & School Supplies", "Paper", "Notebooks & Writing Pads"]
    assert not cat["title"].str.contains("&amp;").any()
    texts = item_texts(office.catalog, TextEncoderConfig(template="{title}. {brand}. {categories}. {description}"))
    assert len(texts) == 2420 and all(t.strip() for t in texts)


def test_office_2014_leave_one_out_reproduces_dev_and_test(office, data_home):
    folder = data_home / "amazon-office-2014-5core"
    lrd2asin = _index(folder / "Office.item2index.gz")
    split = leave_one_out(office.interactions, SplitConfig(cold_item_fraction=0.0))
    train = pd.read_csv(folder / "train.csv.gz", sep="\t", dtype=str)
    hist = {u: [lrd2asin[i] for i in g["item_id"]] for u, g in train.groupby("user_id", sort=False)}
    given = {}
    for role in ("dev", "test"):
        df = pd.read_csv(folder / f"{role}.csv.gz", sep="\t", dtype=str, usecols=["user_id", "item_id"])
        given[role] = dict(zip(df["user_id"], df["item_id"].map(lrd2asin)))
    valid = split.examples("valid").set_index("user_id")
    test = split.examples("test").set_index("user_id")
    assert len(valid) == len(test) == len(given["dev"]) == len(given["test"]) == 4905
    for u, target in given["dev"].items():
        assert valid.at[u, "target"] == target, u
        assert list(valid.at[u, "history"]) == hist[u], u
        assert test.at[u, "target"] == given["test"][u], u
        assert list(test.at[u, "history"]) == hist[u] + [target], u
    assert office.info["same_day_ties"] > 0  # ties exist, and file order still gives the source's split


def test_office_unisrec_counts_and_textless_items(office_unisrec, data_home):
    data = office_unisrec
    stats = dataset_stats(data, SplitConfig(cold_item_fraction=0.0))
    # 680,304 events in the test rows (prefix + target) plus 172 older events that only the
    # (one item longer) valid prefixes of users at the 50-item cap still hold
    assert (stats["users"], stats["items"], stats["interactions"]) == (87346, 25986, 680476)
    assert stats["items_with_text"] == 4325 and stats["items_with_description"] == 0
    assert data.interactions.timestamps_are_order
    cat = data.catalog.df.set_index("item_id")
    # item 0 (B00HESI8BO) has no text: it is in the catalog and in the histories, with empty text
    assert cat.at["B00HESI8BO", "title"] == "" and cat.at["B00HESI8BO", "categories"] == []
    assert not data.catalog.has_text()[cat.index.get_loc("B00HESI8BO")]
    assert (data.interactions.df["item_id"] == "B00HESI8BO").any()
    row = cat.loc["B00WY1BMDM"]
    assert row["title"].startswith("Reflex Lab Large Extended Gaming Mouse Pad")
    assert (row["categories"], row["brand"]) == (["Mouse Pads"], "Reflex Lab")
    texts = item_texts(data.catalog, TextEncoderConfig(template="{title}. {brand}. {categories}"))
    assert sum(1 for t in texts if t.strip(". ")) == 4325


@pytest.mark.parametrize("name", ["office", "office_unisrec"])
def test_office_data_passes_validation_unchanged(name, request):
    data = request.getfixturevalue(name)
    cleaned, _ = clean(data, DataConfig(name=data.name))  # e.g. the 40,969-character description is cut
    assert len(cleaned.interactions) == len(data.interactions) and len(cleaned.catalog) == len(data.catalog)
    assert data.catalog.df["description"].str.len().max() <= DataConfig(name=data.name).max_field_chars


def test_office_unisrec_leave_one_out_reproduces_valid_and_test(office_unisrec, data_home):
    folder = data_home / "amazon-office-unisrec"
    idx2asin = _index(folder / "Office.item2index.gz")
    uidx = _index(folder / "Office.user2index.gz")
    split = leave_one_out(office_unisrec.interactions, SplitConfig(cold_item_fraction=0.0))
    for name in ("valid", "test"):
        ex = split.examples(name).set_index("user_id")
        n = 0
        with gzip.open(folder / f"Office.{name}.inter.gz", "rt") as fh:
            next(fh)
            for line in fh:
                u, prefix, target = line.rstrip("\n").split("\t")
                user = uidx[u]
                assert ex.at[user, "target"] == idx2asin[target], (name, u)
                assert list(ex.at[user, "history"])[-50:] == [idx2asin[i] for i in prefix.split()], (name, u)
                n += 1
        assert n == len(ex) == 87346
