"""The package works when installed as a wheel, not only from a checkout (issue 10, finding 6).

Builds the wheel, installs it into a fresh plain venv (no system site-packages, so a file that
is missing from the wheel cannot be found elsewhere) and answers a question extractively on a
tiny folder, from a working directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SEED_FILES

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_wheel_installs_and_answers(tmp_path):
    work = tmp_path / "work"
    (work / "articles").mkdir(parents=True)
    for f in SEED_FILES:
        shutil.copy(f, work / "articles" / f.name)
    # No PYTHONPATH: with the checkout on it, pip would find the checkout's metadata and call
    # the wheel "already installed", and Python would import the checkout instead.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAG_SETTINGS_FILE")}
    env.update(HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False",
               RAG_SETTINGS_FILE=str(work / "none.toml"))

    # Built from a clean copy of what the wheel is made of: a build/ folder left in the
    # checkout could hold files that no longer exist.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "rag", src / "rag", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
         cwd=tmp_path, env=env)
    wheel = next(dist.glob("newsrag-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, env=env)
    rag = str(venv / "bin" / "rag")
    # The package imported is the installed one, not the checkout.
    where = _run([str(py), "-c", "import rag; print(rag.__file__)"], cwd=work, env=env)
    assert str(venv) in where
    # The data files come with it: the language centroids of the default embedder.
    langs = _run([str(py), "-c", "from rag.lang.centroids import load; "
                  "print(sorted(load().centroids))"], cwd=work, env=env)
    assert "'uk'" in langs and "'bg'" in langs
    _run([rag, "--index-dir", "idx", "index", "articles"], cwd=work, env=env)
    out = _run([rag, "--index-dir", "idx", "ask",
                "How many artillery shells did North Korea send to Russia?",
                "--mode", "extractive", "--json"], cwd=work, env=env)
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["citations"], answer
    assert "does not exist" not in answer["answer"]
