"""``mmrec embed`` as a user runs it: one JSON object on stdout, cached on the second run, features saved."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# overrides go right after the target (argparse stops collecting positionals at the first option);
# titles + genres only: ~1.7k short texts stay cheap on 2 cores (the template is part of the cache key)
FAST = ["encoders.text.template='{title} ({categories})'"]


def _mmrec(*args):
    return subprocess.run([sys.executable, "-m", "mmrec.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def test_embed_text_json_then_everything_from_cache(data_home):
    from mmrec.encoders.features import ItemFeatures

    r = _mmrec("embed", "ml-100k", *FAST, "--modality", "text", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1
    first = json.loads(r.stdout)
    assert first["items"] == 1682 and first["dataset"] == "ml-100k" and first["modality"] == "text"
    t = first["text"]
    assert t["computed"] + t["from_cache"] + t["skipped"] == 1682
    assert t["failed"] == 0 and t["dim"] == 384 and t["computed"] > 0 and "image" not in first

    r2 = _mmrec("embed", "ml-100k", *FAST, "--modality", "text", "--json")
    assert r2.returncode == 0, r2.stderr
    second = json.loads(r2.stdout)
    assert second["text"]["computed"] == 0
    assert second["text"]["from_cache"] == t["computed"] + t["from_cache"]

    out = Path(second["features_dir"])
    assert out == Path(os.environ["MMREC_HOME"]) / "features" / "ml-100k-text"
    feats = ItemFeatures.load(out)
    assert len(feats) == 1682 and feats.text.shape == (1682, 384) and feats.image is None
    assert int(feats.has_text.sum()) == 1682 - t["skipped"]


def test_embed_both_on_a_yaml_config_with_images(data_home, tmp_path):
    """A config file target, images at reduced size, a corrupt image reported but not fatal."""
    import pandas as pd

    good = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGBA", (40, 30), (200, 10, 10, 255)).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not a jpeg")
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["red square", "broken", "no picture"],
                          "image": [str(good), str(bad), ""]})
    items.to_csv(tmp_path / "items.csv", index=False)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "data:\n  name: my-shop\n  path: " + str(tmp_path) + "\n  catalog: {path: items.csv}\n"
        "encoders:\n  image: {image_size: 64}\n", encoding="utf-8")
    r = _mmrec("embed", str(cfg), "--json", "--out", str(tmp_path / "feats"))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["image"]["computed"] == 1 and s["image"]["failed"] == 1 and s["image"]["skipped"] == 1
    assert s["text"]["computed"] + s["text"]["from_cache"] == 3
    assert "b.jpg" in r.stderr  # the broken file is named on stderr
