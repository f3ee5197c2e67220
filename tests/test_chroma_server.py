"""Server mode against a real `chroma run` process on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.pipeline import build_pipeline
from rag.types import RagError

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chroma_bin() -> str:
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    if not Path(exe).exists():
        pytest.skip("the `chroma` CLI (from the chromadb package) is not on PATH")
    return exe


@pytest.fixture
def chroma_server(tmp_path):
    port = _free_port()
    # The server logs every request: to a file, since an unread pipe fills up and blocks it.
    log = open(tmp_path / "chroma.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [_chroma_bin(), "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited: {(tmp_path / 'chroma.log').read_text()[-2000:]}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("chroma run did not start listening within 60 s")
    yield port, tmp_path / "server-data"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_index_and_retrieve_through_a_chroma_server(chroma_server, settings_factory,
                                                    hash_embedder, seeds_copy):
    port, data = chroma_server
    s = settings_factory(chroma_host="127.0.0.1", chroma_port=port, data_dir=seeds_copy)
    pipe = build_pipeline(s, embedder=hash_embedder)
    report = pipe.index()
    assert report.indexed == 5 and report.total_chunks > 20
    assert pipe.index().unchanged == 5  # incremental against the server too
    hits = pipe.retrieve("Ашота Мкртичева санкції", k=3)
    assert hits[0].chunk.source == "002_a6ed56d92cdbdb72.txt"
    # The vectors live in the server's folder, not in the local index folder.
    assert data.exists() and not (Path(s.index_dir) / "chroma.sqlite3").exists()
    # A second client (a new process would do the same) sees the same collection.
    again = build_pipeline(s, embedder=hash_embedder)
    assert again.store.count() == report.total_chunks


def test_unreachable_server_says_how_to_start_one(settings_factory, hash_embedder):
    s = settings_factory(chroma_host="127.0.0.1", chroma_port=_free_port())
    with pytest.raises(RagError, match="chroma run"):
        build_pipeline(s, embedder=hash_embedder)
