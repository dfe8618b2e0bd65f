"""The built-in loaders on the real files under MMREC_DATA_HOME."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from mmrec.config import DataConfig, SplitConfig, load_config
from mmrec.data.loaders import load_dataset
from mmrec.data.splits import leave_one_out
from mmrec.data.stats import dataset_stats


@pytest.fixture(scope="module")
def ml100k(data_home):
    return load_dataset(DataConfig(name="ml-100k"))


def test_ml100k_counts_and_coverage(ml100k):
    stats = dataset_stats(ml100k, SplitConfig())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["items_with_image"] == 1663
    assert stats["items_with_text"] == 1682
    # TMDB overviews (1,728 rows) plus the OMDb fallback cover nearly all movies
    assert 1650 <= stats["items_with_description"] <= 1682
    assert stats["cold_items"] == 168


def test_ml100k_content_is_real(ml100k):
    cat = ml100k.catalog.df.set_index("item_id")
    assert cat.at["1", "title"] == "Toy Story"
    assert cat.at["1", "categories"] == ["Animation", "Children's", "Comedy"]
    assert "Woody" in cat.at["1", "description"]
    assert cat.at["50", "title"] == "Star Wars"
    # the article is moved to the front for display/embedding: "Usual Suspects, The" -> "The Usual Suspects"
    assert cat.at["12", "title"] == "The Usual Suspects"
    # the 19 movies without a poster have no image; the others point at an extracted JPEG
    assert cat.at["330", "image"] is None
    assert cat.at["1", "image"].endswith("1.jpg")
    assert (cat["description_source"] == "omdb").sum() >= 1


def test_ml100k_split_breaks_same_second_ties_by_file_order(ml100k):
    df = ml100k.interactions.df
    split = leave_one_out(ml100k.interactions, SplitConfig())
    ev = split.events
    last_two = ev[ev["role"].isin(["valid", "test"])].pivot(index="user_id", columns="role", values="timestamp")
    tied = last_two.index[last_two["valid"] == last_two["test"]]
    assert len(tied) == 415  # README "Protocol": 415 of 943 users
    order = pd.Series(np.arange(len(df)), index=pd.MultiIndex.from_frame(df[["user_id", "item_id"]]))
    for u in list(tied)[:50]:
        v = ev[(ev.user_id == u) & (ev.role == "valid")].item_id.item()
        t = ev[(ev.user_id == u) & (ev.role == "test")].item_id.item()
        assert order[(u, v)] < order[(u, t)], u


def test_scientific_given_split_is_leave_one_out(data_home):
    data = load_dataset(DataConfig(name="amazon-scientific"))
    assert data.interactions.n_users == 8442 and len(data.catalog) == 4385
    assert data.interactions.timestamps_are_order
    split = leave_one_out(data.interactions, SplitConfig(cold_item_fraction=0.0))
    test = split.examples("test").set_index("user_id")
    valid = split.examples("valid").set_index("user_id")
    idx2asin = {}
    with gzip.open(data_home / "amazon-scientific-unisrec/Scientific.item2index.gz", "rt") as fh:
        for line in fh:
            asin, i = line.split()
            idx2asin[i] = asin
    uidx = {}
    with gzip.open(data_home / "amazon-scientific-unisrec/Scientific.user2index.gz", "rt") as fh:
        for line in fh:
            u, i = line.split()
            uidx[i] = u
    for name, ex in (("test", test), ("valid", valid)):
        with gzip.open(data_home / f"amazon-scientific-unisrec/Scientific.{name}.inter.gz", "rt") as fh:
            next(fh)
            n = 0
            for line in fh:
                u, prefix, target = line.rstrip("\n").split("\t")
                row = ex.loc[uidx[u]]
                assert row["target"] == idx2asin[target]
                assert row["history"][-50:] == [idx2asin[i] for i in prefix.split()]
                n += 1
        assert n == 8442


def test_ml1m_test_item_is_last_of_line(data_home):
    data = load_dataset(DataConfig(name="ml-1m"))
    assert (data.interactions.n_users, len(data.catalog), len(data.interactions)) == (6040, 3706, 1000209)
    with gzip.open(data_home / "ml-1m-seq/sequences.txt.gz", "rt") as fh:
        first = fh.readline().split()
    split = leave_one_out(data.interactions, SplitConfig(cold_item_fraction=0.0))
    test = split.examples("test").set_index("user_id")
    assert test.at[first[0], "target"] == first[-1]
    assert test.at[first[0], "history"] == first[1:-1]
    cat = data.catalog.df.set_index("item_id")
    assert cat.at["1", "title"] == "Toy Story" and cat.at["1", "director"] == "John Lasseter"


@pytest.mark.parametrize("name,counts", [("beauty", (22363, 12101, 198502)), ("lastfm", (1090, 3646, 52551))])
def test_s3rec_counts(data_home, name, counts):
    data = load_dataset(DataConfig(name=name))
    assert (data.interactions.n_users, len(data.catalog), len(data.interactions)) == counts


def test_default_config_parses():
    from pathlib import Path
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    assert cfg.data.name == "ml-100k"
