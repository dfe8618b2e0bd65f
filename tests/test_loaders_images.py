"""Loaders of the image-heavy sets: H&M fashion (real sample) and Open Clip Art (Debian packages)."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Dict

import pandas as pd
import pytest
from PIL import Image

from mmrec.config import DataConfig
from mmrec.data.images import is_readable_image
from mmrec.data.loaders import hm_fashion, load_dataset, openclipart
from mmrec.data.schema import RecData
from mmrec.errors import DataError, DatasetNotFoundError


def _data_root() -> Path:
    return Path(os.environ["MMREC_DATA_HOME"]).resolve()


# ---------------------------------------------------------------------------------------- H&M

@pytest.fixture(scope="module")
def hm() -> RecData:
    if not (_data_root() / hm_fashion.TRANSACTIONS).is_file():
        pytest.fail(f"H&M sample not found under MMREC_DATA_HOME={_data_root()}")
    return load_dataset(DataConfig(name="hm-fashion"))


def test_hm_counts_match_source(hm: RecData) -> None:
    assert hm.interactions.n_users == 1364
    assert len(hm.catalog) == 17033
    assert len(hm.interactions) == 31662
    assert hm.info["items_with_text"] == 4116
    assert hm.info["items_with_image"] == 17033
    # every purchased article is in the catalog and nothing else is
    assert set(hm.catalog.item_ids) == set(hm.interactions.df["item_id"])


def test_hm_keeps_repeat_purchases(hm: RecData) -> None:
    assert hm.info["exact_duplicate_rows"] == 2894
    df = hm.interactions.df
    assert int(df.duplicated(["user_id", "item_id", "timestamp"]).sum()) >= 2894
    assert df["price"].dtype == "float64" and df["price"].notna().all()


def test_hm_ids_are_zero_padded_strings(hm: RecData) -> None:
    for ids in (hm.catalog.df["item_id"], hm.interactions.df["item_id"]):
        assert ids.map(lambda s: isinstance(s, str) and len(s) == 10 and s.isdigit()).all()
    assert "0706016001" in set(hm.catalog.item_ids)
    assert hm.catalog.df["item_id"].str.startswith("0").all()


def test_hm_dates_become_ordered_unix_seconds(hm: RecData) -> None:
    ts = hm.interactions.df["timestamp"]
    assert ts.dtype == "int64"
    assert ts.iloc[0] == int(pd.Timestamp("2018-09-20", tz="UTC").timestamp())
    assert ts.max() == int(pd.Timestamp("2020-09-22", tz="UTC").timestamp())
    assert ts.is_monotonic_increasing  # the file is in date order, and the loader keeps file order
    assert (ts % 86400 == 0).all()


def test_hm_text_joins_on_string_id(hm: RecData) -> None:
    df = hm.catalog.df.set_index("item_id")
    row = df.loc["0111565001"]
    assert row["title"] == "20 den 1p Stockings"
    assert row["description"].startswith("Semi shiny nylon stockings")
    assert row["categories"][:2] == ["Socks & Tights", "Underwear Tights"]
    no_text = df[df["title"] == ""]
    assert len(no_text) == 17033 - 4116
    assert (no_text["description"] == "").all() and (no_text["categories"].map(len) == 0).all()


def test_hm_images_extracted_under_mmrec_home_and_readable(hm: RecData) -> None:
    paths = hm.catalog.df["image"]
    assert paths.notna().all()
    home = Path(os.environ["MMREC_HOME"]).resolve()
    assert all(Path(p).is_relative_to(home) for p in paths.iloc[:50])
    assert (paths.map(lambda p: Path(p).stem) == hm.catalog.df["item_id"]).all()
    for p in random.Random(0).sample(list(paths), 100):
        assert is_readable_image(p)
        with Image.open(p) as im:
            assert max(im.size) <= 144 and im.format == "JPEG"


def test_hm_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(DataConfig(name="hm-fashion", path=str(tmp_path)))
    msg = str(err.value)
    assert isinstance(err.value, DataError)
    assert "transactions.csv.gz" in msg and "MMREC_DATA_HOME" in msg and str(tmp_path) in msg


def test_hm_bad_rows_name_the_line(tmp_path: Path) -> None:
    tx = tmp_path / "transactions.csv"
    tx.write_text("t_dat,customer_id,article_id,price,sales_channel_id\n"
                  "2019-01-02,u1,706016001,0.1,2\n"
                  "2019-01-03,u1,70601600X,0.1,2\n")
    with pytest.raises(DataError, match=r"line 3.*70601600X"):
        hm_fashion.load_interactions(tx)
    tx.write_text("t_dat,customer_id,article_id\n2019-13-45,u1,0706016001\n")
    with pytest.raises(DataError, match=r"line 2.*t_dat"):
        hm_fashion.load_interactions(tx)
    tx.write_text("t_dat,customer_id\n2019-01-02,u1\n")
    with pytest.raises(DataError, match="article_id"):
        hm_fashion.load_interactions(tx)
    # unpadded ids (as a spreadsheet would save them) are padded back
    tx.write_text("t_dat,customer_id,article_id\n2019-01-02,u1,706016001\n")
    inter, _ = hm_fashion.load_interactions(tx)
    assert inter.df["item_id"].tolist() == ["0706016001"]


# -------------------------------------------------------------------------------- Open Clip Art

SYSTEM = openclipart.SYSTEM_DIR


def _require_system_clipart() -> None:
    """The test command installs the Debian packages (scripts/install_system_deps.sh); missing them is a failure."""
    if not (SYSTEM / "png").is_dir():
        pytest.fail("openclipart-png / openclipart-svg are not installed: run scripts/install_system_deps.sh")




@pytest.fixture(scope="module")
def clipart(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """The real Debian clip art, parsed cold into a fresh work folder, then loaded again from cache."""
    _require_system_clipart()
    work = tmp_path_factory.mktemp("openclipart_work")
    empty_root = tmp_path_factory.mktemp("no_data")  # no <root>/openclipart: the system folder is used
    cfg = DataConfig(name="openclipart")
    t0 = time.perf_counter()
    cold = openclipart.load_openclipart(empty_root, cfg, work)
    t1 = time.perf_counter()
    warm = openclipart.load_openclipart(empty_root, cfg, work)
    t2 = time.perf_counter()
    return {"cold": cold, "warm": warm, "cold_s": t1 - t0, "warm_s": t2 - t1}


def test_clipart_one_item_per_drawing(clipart: Dict[str, object]) -> None:
    data = clipart["cold"]
    assert isinstance(data, RecData)
    info = data.info
    # 8,121 PNG paths, 1,221 of them symlinks filing a drawing under a second category
    assert info["png_paths"] == 8121 and info["png_symlinks"] == 1221
    assert len(data.catalog) == info["items"] == 6900
    assert data.catalog.df["item_id"].is_unique
    assert info["items_without_svg"] == 0 and info["svg_parse_failures"] == 0
    # 15 PNGs are 10k x 16k px and more: over the decode limit, so no image (text kept)
    assert info["items_with_image"] == 6900 - 15
    assert info["items_with_text"] == 6900


def test_clipart_title_keywords_categories_of_a_known_file(clipart: Dict[str, object]) -> None:
    df = clipart["cold"].catalog.df.set_index("item_id")
    eagle = df.loc["animals/birds/acquila_architetto_franc_01"]
    assert eagle["title"] == "Acquila"
    assert eagle["keywords"] == ["bird"]  # the author's name, also filed as a keyword, is dropped
    assert "keywords: bird" in eagle["description"]
    assert eagle["categories"] == ["animals", "birds"]
    assert eagle["creator"] == "Architetto Francesco Rollandin"
    assert eagle["image"] == str(SYSTEM / "png/animals/birds/acquila_architetto_franc_01.png")
    assert is_readable_image(eagle["image"])
    # dots inside a file name are part of the id, not an extension
    ppt = df.loc["computer/icons/etiquette-theme/gnome-mime-application-vnd.ms-powerpoint"]
    assert "mime-types" in ppt["keywords"]


def test_clipart_collection_titles_give_way_to_file_names(clipart: Dict[str, object]) -> None:
    df = clipart["cold"].catalog.df.set_index("item_id")
    star = df.loc["shapes/stars/star_49pt05step"]
    assert star["svg_title"] == "gramastar"  # shared by 1,375 stars
    assert star["title"] == "star 49pt05step"
    assert "collection: gramastar" in star["description"]
    assert (df["title"].str.strip() != "").all()


def test_clipart_symlinked_copies_merge_into_one_item(clipart: Dict[str, object]) -> None:
    df = clipart["cold"].catalog.df.set_index("item_id")
    frogs = df.loc["animals/2_dead_frogs_lumen_desig_01"]
    assert "signs_and_symbols/hazard/2_dead_frogs_lumen_desig_01" in frogs["aliases"]
    assert frogs["categories"][0] == "animals" and "hazard" in frogs["categories"]
    all_ids = set(df.index)
    assert not any(a in all_ids for aliases in df["aliases"] for a in aliases)


def test_clipart_has_no_interactions(clipart: Dict[str, object]) -> None:
    inter = clipart["cold"].interactions
    assert len(inter) == 0
    assert list(inter.df.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert inter.df["timestamp"].dtype == "int64"


def test_clipart_second_load_comes_from_cache(clipart: Dict[str, object]) -> None:
    cold, warm = clipart["cold"], clipart["warm"]
    assert cold.info["cache"] == "miss" and warm.info["cache"] == "hit"
    assert clipart["warm_s"] < 2.0
    pd.testing.assert_frame_equal(cold.catalog.df, warm.catalog.df)
    assert isinstance(warm.catalog.df["keywords"].iloc[0], list)


# synthetic trees: error paths, malformed SVGs, cache invalidation

def _svg(title: str, keywords: list, creator: str = "Someone") -> str:
    lis = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return ('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:cc="http://web.resource.org/cc/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><metadata><rdf:RDF><cc:Work rdf:about="">'
            f"<dc:title>{title}</dc:title><dc:subject><rdf:Bag>{lis}</rdf:Bag></dc:subject>"
            f"<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>"
            '</cc:Work></rdf:RDF></metadata><rect width="4" height="4"/></svg>')


def _add(root: Path, rel: str, svg_text: str) -> None:
    png, svg = root / "png" / f"{rel}.png", root / "svg" / f"{rel}.svg"
    png.parent.mkdir(parents=True, exist_ok=True)
    svg.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(png)
    svg.write_text(svg_text, encoding="utf-8")


@pytest.fixture()
def fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<root>/openclipart`` with a few drawings; the system folder is switched off."""
    monkeypatch.setattr(openclipart, "SYSTEM_DIR", tmp_path / "no-system-clipart")
    src = tmp_path / "root" / "openclipart"
    _add(src, "animals/cats/cat_01", _svg("Sleepy Cat", ["cat", "animal", "", "hash", "Someone"]))
    # an HTML entity XML does not know: malformed, the regex fallback still finds the title
    _add(src, "animals/dogs/dog_02", _svg("Happy&nbsp;Dog", ["dog"]))
    _add(src, "food/fruit/pear_v1.2", "this is not XML at all")
    _add(src, "shapes/untitled_shape_03", _svg("", ["shape"]))
    return tmp_path / "root"


def test_clipart_missing_everywhere_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openclipart, "SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError) as err:
        openclipart.load_openclipart(tmp_path, DataConfig(name="openclipart"), tmp_path / "work")
    msg = str(err.value)
    assert isinstance(err.value, DataError)
    assert "apt-get install openclipart-png openclipart-svg" in msg
    assert str(tmp_path / "openclipart") in msg


def test_clipart_synthetic_tree_parses_robustly(fake_tree: Path, tmp_path: Path) -> None:
    data = openclipart.load_openclipart(fake_tree, DataConfig(name="openclipart"), tmp_path / "work")
    assert data.info["source"] == str(fake_tree / "openclipart")
    df = data.catalog.df.set_index("item_id")
    assert set(df.index) == {"animals/cats/cat_01", "animals/dogs/dog_02", "food/fruit/pear_v1.2",
                             "shapes/untitled_shape_03"}
    assert df.loc["animals/cats/cat_01", "title"] == "Sleepy Cat"
    assert df.loc["animals/cats/cat_01", "keywords"] == ["cat", "animal"]
    assert df.loc["animals/cats/cat_01", "categories"] == ["animals", "cats"]
    assert df.loc["animals/dogs/dog_02", "title"] == "Happy Dog"
    assert df.loc["food/fruit/pear_v1.2", "title"] == "pear v1.2"
    assert df.loc["shapes/untitled_shape_03", "title"] == "untitled shape"
    assert data.info["svg_parse_failures"] == 2
    assert data.catalog.df["image"].map(is_readable_image).all()


def test_clipart_cache_follows_the_source_folder(fake_tree: Path, tmp_path: Path) -> None:
    cfg, work = DataConfig(name="openclipart"), tmp_path / "work"
    assert openclipart.load_openclipart(fake_tree, cfg, work).info["cache"] == "miss"
    assert openclipart.load_openclipart(fake_tree, cfg, work).info["cache"] == "hit"
    _add(fake_tree / "openclipart", "animals/cats/cat_02", _svg("Another Cat", ["cat"]))
    again = openclipart.load_openclipart(fake_tree, cfg, work)
    assert again.info["cache"] == "miss" and len(again.catalog) == 5
    assert len(list(work.glob("catalog-*.parquet"))) == 1  # the stale cache was removed


def test_clipart_prefers_data_root_over_system_folder(fake_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openclipart, "SYSTEM_DIR", SYSTEM)
    assert openclipart.find_source(fake_tree) == fake_tree / "openclipart"
