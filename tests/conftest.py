"""Shared test set-up: offline hubs, the real data under ../shared/data, a private MMREC_HOME."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MMREC_DATA_HOME", str(REPO.parent / "shared" / "data"))
# absolute, so subprocesses and notebook kernels started in other folders see the same data
os.environ["MMREC_DATA_HOME"] = str(Path(os.environ["MMREC_DATA_HOME"]).resolve())


@pytest.fixture(scope="session", autouse=True)
def _mmrec_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything the tests write goes to a fresh MMREC_HOME, never the user's cache."""
    home = Path(os.environ.get("MMREC_TEST_HOME") or tmp_path_factory.mktemp("mmrec_home"))
    os.environ["MMREC_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def data_home() -> Path:
    root = Path(os.environ["MMREC_DATA_HOME"])
    if not (root / "ml-100k" / "ml-100k.zip").is_file():
        pytest.fail(f"real data not found under MMREC_DATA_HOME={root}; point it at the shared data folder")
    return root


@pytest.fixture(scope="session")
def tiny_run(_mmrec_home: Path, data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny text-only run (configs/tiny.yaml, 20 steps), trained once per session.

    Shared: copy it (without ``checkpoints``/``serving``) before writing into it (onboarding, index builds).
    """
    from mmrec.config import load_config
    from mmrec.pipeline import make_trainer

    out = tmp_path_factory.mktemp("tiny_run")
    make_trainer(load_config(REPO / "configs" / "tiny.yaml"), str(out)).train()
    return out


@pytest.fixture(scope="session")
def mmrec_home(_mmrec_home: Path) -> Path:
    """The session's private MMREC_HOME: models (e.g. the assembled open_clip model) are built once per session."""
    return _mmrec_home


@pytest.fixture(scope="session")
def text_encoder(mmrec_home: Path):
    """The packaged MiniLM text encoder, loaded once per session."""
    from mmrec.encoders.text import TextEncoder

    return TextEncoder()


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a trained run without its checkpoints and serving state (to write into)."""
    import shutil

    return Path(shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "serving")))
