"""The example notebook: stored without outputs, and runs top to bottom headless (small settings)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MAIN = REPO / "notebooks" / "cross_modal_similarity.ipynb"


def test_notebook_exists() -> None:
    assert MAIN.is_file(), f"{MAIN} is missing"


def _nbstripout(*args: str) -> subprocess.CompletedProcess:
    """``nbstripout`` (a test dependency); ``--verify`` exits 1 when it would strip something.

    ``--keep-id``: cell ids are not outputs, so the check does not ask for them to be renumbered.
    """
    return subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", *args], capture_output=True, text=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    r = _nbstripout("--verify", str(path))
    assert r.returncode == 0, (f"{path.relative_to(REPO)} has outputs or execution counts "
                               f"({(r.stdout + r.stderr).strip()}); run: nbstripout notebooks/*.ipynb")


def test_nbstripout_verify_flags_outputs(tmp_path: Path) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": 3, "metadata": {"execution": {}}, "source": "1",
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    f = tmp_path / "x.ipynb"
    f.write_text(json.dumps(nb))
    assert _nbstripout("--verify", str(f)).returncode == 1
    assert _nbstripout(str(f)).returncode == 0
    assert _nbstripout("--verify", str(f)).returncode == 0
    cell = json.loads(f.read_text())["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None and "execution" not in cell["metadata"]


def test_notebook_default_run_is_not_a_cli_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run the notebook trains by default lives outside ``$MMREC_HOME/runs`` (else it becomes the latest run
    that ``mmrec recommend`` / ``evaluate`` pick when ``--run`` is not given)."""
    from mmrec.paths import mmrec_home, runs_dir

    nb = json.loads(MAIN.read_text(encoding="utf-8"))
    lines = [line for c in nb["cells"] if c["cell_type"] == "code"
             for line in "".join(c["source"]).splitlines() if line.startswith("RUN_DIR =")]
    assert len(lines) == 1, lines
    monkeypatch.setenv("MMREC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMREC_NB_RUN", raising=False)
    ns: dict = {"os": __import__("os"), "Path": Path, "mmrec_home": mmrec_home, "runs_dir": runs_dir}
    exec(lines[0], ns)  # noqa: S102 - one assignment line of our own notebook
    run_dir = Path(ns["RUN_DIR"]).resolve()
    assert run_dir.is_relative_to(mmrec_home().resolve())
    assert not run_dir.is_relative_to(runs_dir().resolve()), run_dir


def _kernelspec(root: Path) -> Path:
    """A ``python3`` kernelspec that runs this interpreter (so the kernel sees the same venv and mmrec)."""
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    return root


def test_notebook_executes(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")

    monkeypatch.setenv("JUPYTER_PATH", str(_kernelspec(tmp_path / "jupyter")))
    monkeypatch.setenv("MMREC_NB_SMALL", "1")
    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints", "serving"))
    monkeypatch.setenv("MMREC_NB_RUN", str(run))            # reuse the session's tiny run, not train another
    monkeypatch.setenv("MMREC_REPO", str(REPO))
    monkeypatch.delenv("MPLBACKEND", raising=False)        # keep ipykernel's inline backend (figures as outputs)
    work = tmp_path / "work"
    work.mkdir()

    from mmrec.paths import runs_dir

    runs_before = sorted(runs_dir().glob("*")) if runs_dir().is_dir() else []
    nb = nbformat.read(str(MAIN), as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:  # names the cell and shows its traceback
        pytest.fail(f"notebook {MAIN.name} failed:\n{exc}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 4, f"expected the notebook's figures, got {images} images"
    runs_after = sorted(runs_dir().glob("*")) if runs_dir().is_dir() else []
    assert runs_after == runs_before, "the notebook wrote a run under $MMREC_HOME/runs"
