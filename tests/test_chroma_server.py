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


def start_chroma(tmp_path: Path, port: int) -> subprocess.Popen:
    """A `chroma run` on 127.0.0.1:port serving tmp_path/server-data, once it listens."""
    # The server logs every request: to a file, since an unread pipe fills up and blocks it.
    with open(tmp_path / "chroma.log", "ab") as log:
        proc = subprocess.Popen(
            [_chroma_bin(), "run", "--path", str(tmp_path / "server-data"), "--host",
             "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited: {(tmp_path / 'chroma.log').read_text()[-2000:]}")
            time.sleep(0.2)
    proc.kill()
    pytest.fail("chroma run did not start listening within 60 s")


def stop_chroma(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def chroma_server(tmp_path):
    port = _free_port()
    proc = start_chroma(tmp_path, port)
    yield port, tmp_path / "server-data"
    stop_chroma(proc)


def test_index_and_retrieve_through_a_chroma_server(chroma_server, settings_factory,
                                                    hash_embedder, seeds_copy):
    port, data = chroma_server
    # The hash embedder knows no language: the lexical ranking (off by default) finds names.
    s = settings_factory(chroma_host="127.0.0.1", chroma_port=port, data_dir=seeds_copy,
                         bm25_weight=1.0)
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


def test_server_stopped_mid_session_is_an_outage_not_a_missing_article(
        tmp_path, settings_factory, hash_embedder, seeds_copy):
    """Finding 8/15: with the server down the user is told to start it (in the app as in the
    CLI), nothing is reported as "not in the index", and after a restart all is there."""
    from rag.app.ui import ChatUI, Session
    from rag.settings import load_settings

    port = _free_port()
    proc = start_chroma(tmp_path, port)
    try:
        s = settings_factory(chroma_host="127.0.0.1", chroma_port=port, data_dir=seeds_copy,
                             bm25_weight=1.0)
        pipe = build_pipeline(s, embedder=hash_embedder)
        total = pipe.index().total_chunks
        answer = pipe.ask("Колко артилерийски снаряда е изпратила Северна Корея на Русия?",
                          mode="extractive")
        source = answer.citations[0].source
        stop_chroma(proc)
        with pytest.raises(RagError, match="cannot be reached"):
            pipe.retrieve("Ашота Мкртичева санкції")
        with pytest.raises(RagError, match="cannot be reached"):
            pipe.document(source)
        ui = ChatUI(pipe, load_settings(index_dir=tmp_path / "ui", mode="extractive"))
        session = Session(answers=(answer,))
        _, viewer, _ = ui.open_ref("cite-0-1", session)
        assert "cannot be reached" in viewer and "no longer in the index" not in viewer
        chat = list(ui.respond("Колко снаряда?", Session(), "extractive"))[-1][0]
        assert "cannot be reached" in chat[-1]["content"]
        res = pipe.add_document("new.txt", "Нова статия за Кореја.\nВтора реченица.\n".encode())
        assert not res.ok and "cannot be reached" in res.message
        proc = start_chroma(tmp_path, port)
        assert pipe.retrieve("Ашота Мкртичева санкції")[0].chunk.source == \
            "002_a6ed56d92cdbdb72.txt"
        assert pipe.store.count() == total and pipe.document(source) is not None
    finally:
        stop_chroma(proc)
