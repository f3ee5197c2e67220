"""Helpers for the slow UI tests: a seed index built once per session, and a live app."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
TEST_OUTPUT = ROOT / "test-output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """An http URL where nothing listens: an "Ollama" that is not running."""
    return f"http://127.0.0.1:{free_port()}"


def seed_index_copy(tmp_path_factory, name: str) -> Path:
    """A private copy of an index of the seed articles (built with the real embedder once per
    test session: indexing takes ~15 s on two cores, copying a few milliseconds)."""
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings

    base = tmp_path_factory.getbasetemp() / "ui-seed-index"
    if not (base / ".done").exists():
        shutil.rmtree(base, ignore_errors=True)
        settings = load_settings(index_dir=base, data_dir=SEEDS, mode="extractive")
        report = build_pipeline(settings).index(SEEDS)
        assert report.indexed == 5, report
        (base / ".done").write_text("ok")
    dest = tmp_path_factory.mktemp(name) / "index"
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(".done"))
    return dest


def start_app(pipeline, settings):
    """Launch the UI in this process on settings.port (background thread); return (demo, url)."""
    from rag.app.ui import launch

    demo = launch(pipeline, settings, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{settings.port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    return demo, url
