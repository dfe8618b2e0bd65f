"""The layering contracts cover every part of the library (CI runs `lint-imports` on them)."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _contracts() -> dict:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in cfg["contracts"]}


def _top_level() -> set[str]:
    pkg = REPO / "mmrec"
    mods = {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"}
    mods |= {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return {f"mmrec.{m}" for m in mods}


def test_every_library_module_is_held_to_the_no_cli_rule() -> None:
    """A new top-level module must be added to the contract, or it could import the CLI unnoticed."""
    covered = set(_contracts()["library-not-cli"]["source_modules"])
    assert covered == _top_level() - {"mmrec.cli", "mmrec.commands"}


def test_the_contracts_the_architecture_promises_exist() -> None:
    c = _contracts()
    assert c["eval-train-independent"]["type"] == "independence"
    assert set(c["eval-train-independent"]["modules"]) == {"mmrec.eval", "mmrec.train"}
    assert "mmrec.serve.app" in c["facade-not-http"]["forbidden_modules"]
    assert set(c["leaves"]["source_modules"]) == {"mmrec.model", "mmrec.index"}
    assert c["acyclic"]["type"] == "acyclic_siblings" and c["acyclic"]["ancestors"] == ["mmrec"]
    for doc_name in ("library-not-cli", "eval-train-independent", "facade-not-http", "leaves", "acyclic"):
        assert doc_name in (REPO / "docs" / "architecture.md").read_text()
