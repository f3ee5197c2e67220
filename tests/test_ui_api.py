"""The app's named API endpoint /ask, driven with gradio_client against a live app over the
real seed index (extractive mode: no LLM needed)."""

from __future__ import annotations

import pytest

from tests.ui_support import SEEDS, free_port, seed_index_copy, start_app

pytestmark = pytest.mark.slow

QUESTION = "What weapons did North Korea allegedly send to Russia?"
EXPECTED_SOURCES = {"000_667e1cbf547f6e23.txt", "003_101aaf086d020251.txt",
                    "004_d7d34adf8c061df0.txt"}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings

    index = seed_index_copy(tmp_path_factory, "ui-api")
    settings = load_settings(index_dir=index, data_dir=SEEDS, mode="extractive",
                             port=free_port())
    demo, url = start_app(build_pipeline(settings), settings)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_only_ask_is_public(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/ask"]


def test_ask_returns_answer_with_exact_citations(client):
    out = client.predict(QUESTION, api_name="/ask")
    assert out["question"] == QUESTION
    assert out["mode"] == "extractive"
    assert out["answer"].strip() and not out["insufficient_context"]
    assert out["citations"], out
    assert {c["source"] for c in out["citations"]} & EXPECTED_SOURCES
    for c in out["citations"]:
        text = (SEEDS / c["source"]).read_text(encoding="utf-8")
        assert text[c["start"]:c["end"]] == c["quote"]
        assert f"[{c['n']}]" in out["answer"]
    assert out["retrieved"] and out["timings"]["total_ms"] > 0


def test_ask_with_history(client):
    history = [{"role": "user", "content": QUESTION},
               {"role": "assistant", "content": "Shells and ballistic missiles [1]."}]
    out = client.predict("How many artillery shells?", history, api_name="/ask")
    assert out["answer"].strip()


def test_ask_error_is_readable(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="empty"):
        client.predict("   ", api_name="/ask")


def test_auth_from_settings(tmp_path):
    """With auth_user/auth_password set, the UI and the API need the login."""
    import httpx
    from gradio_client import Client

    from rag.settings import load_settings
    from tests.ui_fakes import ARTICLE, FakePipeline, make_doc

    settings = load_settings(index_dir=tmp_path / "index", port=free_port(), auth_user="reader",
                             auth_password="s3cret", mode="extractive")
    demo, url = start_app(FakePipeline(docs={"a.txt": make_doc("a.txt", ARTICLE)}), settings)
    try:
        assert httpx.get(f"{url}/config").status_code == 401
        with pytest.raises(Exception, match="(?i)auth|login|401"):
            Client(url, verbose=False)
        api = Client(url, auth=("reader", "s3cret"), verbose=False)
        assert "/ask" in api.view_api(return_format="dict", print_info=False)["named_endpoints"]
    finally:
        demo.close()
