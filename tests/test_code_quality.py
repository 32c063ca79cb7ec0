"""ruff and mypy are part of the test suite, so the README's one test command checks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff_clean() -> None:
    result = _run("ruff", "check", "hub", "channels", "routing", "storage", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_hold() -> None:
    """hub -> routing -> storage -> channels; channels imports nothing of ours (DESIGN.md)."""
    result = subprocess.run(LINT_IMPORTS, cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    for package in ("hub", "routing", "storage", "channels"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("*.gz", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    models = tmp_path / "channels" / "models.py"
    models.write_text(models.read_text() + "\nfrom storage import keys  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(LINT_IMPORTS, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert "channels.models -> storage.keys" in result.stdout
