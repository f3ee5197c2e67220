"""Past one machine: two API processes (`rag serve`) share one real `chroma run` server.

Each process has its own local folder (as on two hosts), so each keeps its own BM25 and hubness
caches; they agree because both are built from the same collection, named by its chunk ids, and
a write by anyone bumps the collection version that each process checks per question.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rag.pipeline import build_pipeline
from rag.settings import load_settings
from tests.conftest import ROOT, SEED_FILES
from tests.test_chroma_server import _free_port, chroma_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

NEW_ARTICLE = (
    "Zephyrine Oakhollow opens the Vardar footbridge\n\n"
    "Zephyrine Oakhollow, the engineer who led the project, opened the new Vardar footbridge "
    "in Skopje on 3 March. The footbridge cost 41 million euros and took four years to build. "
    "Oakhollow said the footbridge would carry twelve thousand people a day.\n"
)


def _serve(tmp_path: Path, name: str, chroma_port: int) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(PYTHONPATH=str(ROOT), RAG_CHROMA_HOST="127.0.0.1",
               RAG_CHROMA_PORT=str(chroma_port), RAG_INDEX_DIR=str(tmp_path / name),
               RAG_DATA_DIR=str(tmp_path / "no-articles-here"), RAG_MODE="extractive",
               RAG_SETTINGS_FILE=str(tmp_path / "none.toml"),
               # BM25 is off by default; on here, since its per-process cache is under test.
               RAG_BM25_WEIGHT="1.0")
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "rag.app.cli", "serve", "--port", str(port),
                             "--mode", "extractive"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, port


def _wait_ready(proc: subprocess.Popen, port: int, log: Path) -> None:
    # Generous: loading the models on a busy machine can take minutes.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"rag serve exited: {log.read_text()[-3000:]}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"rag serve on {port} not ready: {log.read_text()[-3000:]}")


def _ask(port: int, question: str) -> dict:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=600, json={
        "model": "newsrag-extractive", "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.json()["newsrag"]


def test_two_api_processes_share_one_chroma_server_and_agree(tmp_path, chroma_server):  # noqa: F811
    chroma_port, _data = chroma_server
    articles = tmp_path / "articles"
    articles.mkdir()
    for f in SEED_FILES:
        (articles / f.name).write_bytes(f.read_bytes())
    settings = load_settings(data_dir=articles, index_dir=tmp_path / "writer",
                             chroma_host="127.0.0.1", chroma_port=chroma_port,
                             mode="extractive")
    writer = build_pipeline(settings)
    writer.index()

    procs = [_serve(tmp_path, name, chroma_port) for name in ("app1", "app2")]
    try:
        for (proc, port), name in zip(procs, ("app1", "app2"), strict=True):
            _wait_ready(proc, port, tmp_path / f"{name}.log")
        ports = [port for _p, port in procs]
        question = "How many artillery shells has North Korea sent to Russia?"
        first = [_ask(p, question) for p in ports]
        cites = [[(c["source"], c["start"], c["end"]) for c in a["citations"]] for a in first]
        assert cites[0] and cites[0] == cites[1]

        # A third process (here: this test) adds an article through the shared server; both
        # API processes see it at their next question, lexically as well as densely.
        added = writer.add_document("footbridge.txt", NEW_ARTICLE.encode())
        assert added.ok, added.message
        new_q = "Who opened the Vardar footbridge, Oakhollow?"
        after = [_ask(p, new_q) for p in ports]
        for a in after:
            assert "footbridge.txt" in {c["source"] for c in a["citations"]}, a
        assert ([(c["source"], c["start"]) for c in after[0]["citations"]]
                == [(c["source"], c["start"]) for c in after[1]["citations"]])
        # Each process built its BM25 index for the same collection: the same name.
        names = [{d.name for d in (tmp_path / n / "bm25-news").glob("bm25-*")}
                 for n in ("app1", "app2")]
        assert names[0] & names[1]
    finally:
        for proc, _port in procs:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
