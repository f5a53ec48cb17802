"""The documentation site builds with ``mkdocs build --strict`` (every page in the nav, every
internal link resolving), and the README stays a newcomer's page that links what moved."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_is_strictly_clean(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+\.md)\)", readme)
    assert {"docs/benchmarks.md", "docs/guides/training.md", "docs/design/scope.md", "CHANGELOG.md"} <= set(links)
    assert [link for link in links if not (ROOT / link).is_file()] == []
    assert "make demo" in readme and "make test" in readme
