"""Package-level promises: a light import and an explicit, sorted public surface."""

from __future__ import annotations

import subprocess
import sys

import intentkit


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, intentkit, intentkit.testing;"
        "heavy = {'torch', 'transformers', 'llama_cpp', 'fastapi', 'typer', 'peft', 'uvicorn', 'openai', 'httpx',"
        " 'cn2an', 'pypinyin'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_sorted_and_complete() -> None:
    names = [n for n in intentkit.__all__ if n != "__version__"]
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in intentkit.__all__:
        assert hasattr(intentkit, name)
