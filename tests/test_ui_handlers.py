"""The chat UI's event handlers against a fake pipeline: streaming, history, errors, the
viewer's lookups and uploads. No browser, no models."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rag.app.ui import ChatUI, Session, _history, _safe_name
from rag.settings import load_settings
from rag.types import RagError
from tests.ui_fakes import ARTICLE, FakePipeline, chunk_of, make_answer, make_doc, quote_citation

SRC = "003_test.txt"
QUOTE = "Почти 5 милиона артилерийски снаряда"


def _is_skip(x) -> bool:
    return isinstance(x, dict) and x.get("__type__") == "update" and len(x) == 1


@pytest.fixture
def ui(tmp_path: Path) -> ChatUI:
    settings = load_settings(index_dir=tmp_path / "index", mode="extractive",
                             max_upload_bytes=2000)
    pipe = FakePipeline(docs={SRC: make_doc(SRC, ARTICLE)}, settings=settings)
    return ChatUI(pipe, settings)


def _answer(text="About 5 million shells [1].", **kw):
    c = quote_citation(1, SRC, ARTICLE, QUOTE)
    return make_answer(text, (c,), retrieved=(chunk_of(SRC, ARTICLE, 31, 111, 1),
                                              chunk_of(SRC, ARTICLE, 0, 29, 2)), **kw)


def _run(ui: ChatUI, question: str, session: Session | None = None, mode: str = "auto"):
    return list(ui.respond(question, session, mode))


def test_respond_streams_then_renders_chips_and_sources(ui):
    ui.pipeline.script = [(["About 5 ", "million ", "shells [1]."], _answer())]
    ui_stream = ui.respond("How many shells?", None, "auto")
    first = next(ui_stream)
    assert first[0][-2]["content"] == "How many shells?"
    assert first[1] == ""  # the question box is cleared at once
    rest = list(ui_stream)
    chat, _, sources, session = rest[-1]
    assert 'href="#cite-0-1"' in chat[-1]["content"]
    assert 'id="src-0-1"' in sources
    assert session.history == ({"role": "user", "content": "How many shells?"},
                               {"role": "assistant", "content": "About 5 million shells [1]."})
    assert len(session.answers) == 1
    assert ui.pipeline.calls == [("How many shells?", [], "auto")]


def test_follow_up_passes_history_and_numbers_turns(ui):
    ui.pipeline.script = [_answer(), _answer("Yes [1].")]
    s1 = _run(ui, "How many shells?")[-1][3]
    chat, _, _, s2 = _run(ui, "Really?", s1)[-1]
    assert ui.pipeline.calls[1][1] == list(s1.history)
    assert 'href="#cite-1-1"' in chat[-1]["content"]  # second answer's chips point to turn 1
    assert 'href="#cite-0-1"' in chat[1]["content"]  # the first answer is unchanged
    assert len(s2.display) == 4


def test_blank_question_does_nothing(ui):
    out = _run(ui, "   ")
    assert len(out) == 1 and all(_is_skip(x) for x in out[0])
    assert ui.pipeline.calls == []


def test_user_markup_is_shown_literally(ui):
    ui.pipeline.script = [_answer()]
    chat = _run(ui, "<img src=x onerror=alert(1)>")[-1][0]
    assert "<img" not in chat[0]["content"] and "&lt;img" in chat[0]["content"]


def test_backend_failure_mid_stream_is_a_message_and_not_history(ui):
    ui.pipeline.script = [(["Half an "], RagError("Ollama stopped: run `ollama serve`")),
                          _answer()]
    chat, _, sources, session = _run(ui, "Q1")[-1]
    assert "answer-error" in chat[-1]["content"] and "ollama serve" in chat[-1]["content"]
    assert "Half an" in chat[-1]["content"]
    assert _is_skip(sources)
    assert session.history == () and session.answers == ()
    # the app keeps going: the next question works and sees no broken history
    chat2, _, _, s2 = _run(ui, "Q2", session)[-1]
    assert ui.pipeline.calls[1][1] == []
    assert len(chat2) == 4 and len(s2.answers) == 1


def test_unexpected_exception_is_reported(ui):
    ui.pipeline.script = [ValueError("boom")]
    chat = _run(ui, "Q")[-1][0]
    assert "Internal error" in chat[-1]["content"] and "boom" in chat[-1]["content"]


def test_refusal_shows_no_sources(ui):
    ui.pipeline.script = [make_answer("The articles don't say.", (), insufficient=True)]
    chat, _, sources, _ = _run(ui, "Who won the 1930 World Cup?")[-1]
    assert "cite-chip" not in chat[-1]["content"]
    assert "No sources" in sources


def test_open_citation_highlights_span_in_document(ui):
    ui.pipeline.script = [_answer()]
    session = _run(ui, "Q")[-1][3]
    sources, viewer, picked = ui.open_ref("cite-0-1", session)
    assert 'class="src-card active"' in sources
    assert f'<mark id="viewer-mark">{QUOTE}</mark>' in viewer
    assert picked == SRC
    # an uncited retrieved passage opens too, marked as such
    _, viewer2, _ = ui.open_ref("chunk-0-1", session)
    assert "not cited" in viewer2 and "<mark" in viewer2


@pytest.mark.parametrize("ref", ["cite-5-1", "cite-0-9", "chunk-0-99", "../../etc/passwd",
                                 "cite-0-1; rm", ""])
def test_open_ref_rejects_unknown_references(ui, ref):
    ui.pipeline.script = [_answer()]
    session = _run(ui, "Q")[-1][3]
    _, viewer, _ = ui.open_ref(ref, session)
    assert "viewer empty" in viewer and "<mark" not in viewer


def test_open_doc_only_serves_indexed_documents(ui):
    assert "<mark" not in ui.open_doc(SRC) and "Северна Корея" in ui.open_doc(SRC)
    assert "not in the index" in ui.open_doc("/etc/passwd")
    assert "not in the index" in ui.open_doc("../seeds/000_667e1cbf547f6e23.txt")


def test_new_chat_clears_everything(ui):
    chat, question, sources, viewer, session = ui.new_chat()
    assert chat == [] and question == "" and session == Session()
    assert "Ask a question" in sources


# --- uploads -----------------------------------------------------------------------------------

def _file(tmp_path: Path, name: str, data: bytes) -> str:
    d = tmp_path / "gradio-tmp"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_bytes(data)
    return str(p)


def test_upload_saves_into_uploads_and_indexes(ui, tmp_path):
    text = "Нова статия за ракети\n\nСеверна Корея изстреля нова ракета в понеделник.\n"
    steps = []
    res = ui.add_article(_file(tmp_path, "нова статия.md", text.encode()),
                         progress=lambda f, desc=None: steps.append((f, desc)))
    assert res.ok, res.message
    saved = tmp_path / "index" / "uploads" / "нова_статия.md"
    assert saved.read_text(encoding="utf-8") == text
    assert ui.pipeline.indexed == [saved]
    assert "Нова статия за ракети" in res.message and steps
    # the same file again changes nothing
    again = ui.add_article(_file(tmp_path, "нова статия.md", text.encode()))
    assert again.ok and "already indexed" in again.message
    assert ui.pipeline.indexed == [saved]


def test_upload_identical_to_an_indexed_article_is_skipped(ui, tmp_path):
    res = ui.add_article(_file(tmp_path, "copy.txt", ARTICLE.encode()))
    assert res.ok and "already indexed" in res.message and SRC in res.message
    assert ui.pipeline.indexed == []


def test_upload_may_not_replace_a_seed_article(ui, tmp_path):
    res = ui.add_article(_file(tmp_path, SRC, b"Different text about something else.\n"))
    assert not res.ok and "Rename" in res.message
    assert not (tmp_path / "index" / "uploads" / SRC).exists()


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("a.pdf", b"%PDF-1.4", "only .txt and .md"),
        ("a.txt", b"", "empty"),
        ("a.txt", b"  \n\n ", "empty"),
        ("a.txt", "Ćirilica".encode("cp1250") + b"\xff\xfe", "not UTF-8"),
        ("a.txt", b"x" * 2001, "limit is"),
        ("a.txt", b"abc\x00def", "binary"),
    ],
)
def test_bad_uploads_are_readable_errors(ui, tmp_path, name, data, words):
    res = ui.add_article(_file(tmp_path, name, data))
    assert not res.ok and words in res.message
    assert ui.pipeline.indexed == []
    assert not (tmp_path / "index" / "uploads").exists() or \
        not any((tmp_path / "index" / "uploads").iterdir())


def test_upload_the_indexer_rejects_is_removed_again(ui, tmp_path):
    # only boilerplate: the indexer skips it; the saved copy must not linger
    res = ui.add_article(_file(tmp_path, "menu.txt", b"menu closed\nmenu open\n"))
    assert not res.ok and "not added" in res.message
    assert not (tmp_path / "index" / "uploads" / "menu.txt").exists()


def test_safe_name():
    assert _safe_name("../../etc/passwd.txt") == "passwd.txt"
    assert _safe_name("C:\\x\\evil name!.MD") == "evil_name.md"
    assert _safe_name("Статия 1.txt") == "Статия_1.txt"
    assert _safe_name(".hidden.txt") == "hidden.txt"  # no dot-files in the uploads folder


# --- API -----------------------------------------------------------------------------------

def test_api_ask_returns_answer_json_and_accepts_history_shapes(ui):
    ui.pipeline.script = [_answer(), _answer()]
    out = ui.api_ask("How many?", [["Q0", "A0"]])
    assert out["citations"][0]["quote"] == QUOTE
    assert ui.pipeline.calls[0][1] == [{"role": "user", "content": "Q0"},
                                       {"role": "assistant", "content": "A0"}]
    ui.api_ask("Again?", [{"role": "user", "content": "x"}])
    assert ui.pipeline.calls[1][1] == [{"role": "user", "content": "x"}]


def test_history_rejects_garbage():
    import gradio as gr

    with pytest.raises(gr.Error):
        _history([42])


def test_app_flags_override_settings(monkeypatch):
    import app

    seen = {}
    monkeypatch.setattr(app, "build_pipeline", lambda settings: "pipeline")
    monkeypatch.setattr(app, "launch", lambda p, s: seen.update(p=p, host=s.host, port=s.port))
    monkeypatch.setattr(app, "check_port_free", lambda host, port: None)  # 7860 may be busy
    assert app.main(["--host", "0.0.0.0", "--port", "7999"]) == 1  # no login, no --insecure
    assert seen == {}
    assert app.main(["--host", "0.0.0.0", "--port", "7999", "--insecure"]) == 0
    assert seen == {"p": "pipeline", "host": "0.0.0.0", "port": 7999}
    assert app.main([]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 7860)


def test_a_port_in_use_is_one_clear_error_before_any_indexing(monkeypatch, capsys):
    import app
    from rag.app.ui import launch

    built = []
    monkeypatch.setattr(app, "build_pipeline", lambda settings: built.append(settings))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app.main(["--port", str(port)]) == 1
        err = capsys.readouterr().err
        assert f"Port {port} on 127.0.0.1 is already in use" in err and "--port" in err
        assert "Traceback" not in err and built == []

        class Unprepared:
            def __getattr__(self, name):
                raise AssertionError(f"the pipeline was used ({name}) with the port taken")

        with pytest.raises(RagError, match="already in use"):
            launch(Unprepared(), load_settings(port=port))
    # Released: the same port is accepted again.
    from rag.app.ui import check_port_free

    check_port_free("127.0.0.1", port)


def test_reupload_with_new_content_updates_the_article(ui, tmp_path):
    first = ui.add_article(_file(tmp_path, "note.txt", "Прва верзија на текстот.\n".encode()))
    assert first.ok and first.message.startswith("Added")
    second = ui.add_article(_file(tmp_path, "note.txt", "Втора верзија на текстот.\n".encode()))
    assert second.ok and second.message.startswith("Updated")
    saved = tmp_path / "index" / "uploads" / "note.txt"
    assert saved.read_text(encoding="utf-8") == "Втора верзија на текстот.\n"
    assert ui.pipeline.docs["note.txt"][1] == "Втора верзија на текстот.\n"


def test_fake_pipeline_has_the_pipelines_interface():
    """The UI tests' fake and the real Pipeline implement the same Protocol, method by method
    with the same parameters, so a change to Pipeline's interface breaks these tests."""
    import inspect

    from rag.pipeline import Pipeline, PipelineProtocol

    for name, member in vars(PipelineProtocol).items():
        if name.startswith("_") or not callable(member):
            continue
        want = list(inspect.signature(member).parameters)
        for cls in (Pipeline, FakePipeline):
            got = list(inspect.signature(getattr(cls, name)).parameters)
            assert got == want, (cls.__name__, name, got, want)


def test_rejected_reupload_keeps_the_previous_file_and_entry(ui, tmp_path):
    first = ui.add_article(_file(tmp_path, "note.txt", "Прва верзија на текстот.\n".encode()))
    assert first.ok
    saved = tmp_path / "index" / "uploads" / "note.txt"
    bad = ui.add_article(_file(tmp_path, "note.txt", b"menu closed\nmenu open\n"))
    assert not bad.ok and "not added" in bad.message
    assert saved.read_text(encoding="utf-8") == "Прва верзија на текстот.\n"
    assert ui.pipeline.docs["note.txt"][1] == "Прва верзија на текстот.\n"


def test_failed_reupload_keeps_the_previous_file_and_entry(ui, tmp_path):
    ui.add_article(_file(tmp_path, "note.txt", "Прва верзија на текстот.\n".encode()))
    ui.pipeline.fail_next_add = "The Chroma server cannot be reached."
    res = ui.add_article(_file(tmp_path, "note.txt", "Втора верзија на текстот.\n".encode()))
    assert not res.ok and "cannot be reached" in res.message
    saved = tmp_path / "index" / "uploads" / "note.txt"
    assert saved.read_text(encoding="utf-8") == "Прва верзија на текстот.\n"
    assert ui.pipeline.docs["note.txt"][1] == "Прва верзија на текстот.\n"


def test_half_configured_login_or_open_bind_refuses_to_start(monkeypatch):
    from rag.app.ui import check_serving

    with pytest.raises(RagError, match="RAG_AUTH_PASSWORD is not set"):
        check_serving(load_settings(auth_user="me"))
    with pytest.raises(RagError, match="RAG_AUTH_USER is not set"):
        check_serving(load_settings(auth_password="pw"))
    with pytest.raises(RagError, match="--insecure"):
        check_serving(load_settings(host="0.0.0.0"))
    check_serving(load_settings(host="0.0.0.0"), insecure=True)
    check_serving(load_settings(host="0.0.0.0", auth_user="me", auth_password="pw"))
    check_serving(load_settings())


def test_example_questions_are_data_beside_the_corpus(tmp_path, caplog):
    from rag.app.ui import load_examples

    shipped = load_examples(Path(__file__).resolve().parent.parent / "examples.json")
    assert len(shipped) >= 3 and all(q.endswith("?") for q in shipped)
    assert load_examples(tmp_path / "missing.json") == []
    assert load_examples(None) == []
    good = tmp_path / "mine.json"
    good.write_text('{"questions": ["When did the vote take place?", "  "]}', encoding="utf-8")
    assert load_examples(good) == ["When did the vote take place?"]
    bad = tmp_path / "bad.json"
    bad.write_text('["not", "an", "object"]', encoding="utf-8")
    assert load_examples(bad) == []
    assert "bad.json" in caplog.text


def test_the_api_and_mcp_servers_check_their_port_before_indexing(monkeypatch, capsys, tmp_path):
    from rag.app import cli

    monkeypatch.setattr(cli, "_ready_pipeline", lambda *a, **k: pytest.fail("indexed anyway"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in (["serve", "--port", port], ["mcp", "--http", "--port", port]):
            assert cli.main(["--index-dir", str(tmp_path), *command]) == 2
            err = capsys.readouterr().err
            assert "already in use" in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[127.0.0.1]", ""])
def test_the_port_check_reads_the_host_as_the_server_does(host):
    from rag.app.net import check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RagError, match="already in use"):
            check_port_free(host, port)
    check_port_free(host, port)  # free again
    check_port_free(host, 0)  # the server picks one


def test_an_ipv4_listener_does_not_block_the_ipv6_loopback():
    from rag.app.net import check_port_free

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            check_port_free("::1", taken.getsockname()[1])
        except RagError as e:
            assert "already in use" not in str(e)  # no ::1 here is another matter


def test_port_zero_is_passed_on_not_replaced_by_the_default(monkeypatch, tmp_path):
    from rag.app import cli, net

    probed = []
    monkeypatch.setattr(net, "check_port_free", lambda host, port: probed.append(port))
    monkeypatch.setattr(cli, "_ready_pipeline", lambda *a, **k: (_ for _ in ()).throw(
        RagError("stop here")))
    assert cli.main(["--index-dir", str(tmp_path), "serve", "--port", "0"]) == 2
    assert cli.main(["--index-dir", str(tmp_path), "mcp", "--http", "--port", "0"]) == 2
    assert probed == [0, 0]


def test_an_address_of_another_machine_says_what_to_use_instead():
    from rag.app.net import check_port_free

    with pytest.raises(RagError, match=r"Cannot serve on 192\.0\.2\.1:.*--host"):
        check_port_free("192.0.2.1", 8000)  # TEST-NET-1: never an address of this machine


def test_a_port_taken_after_the_check_is_the_same_clear_error(monkeypatch):
    import errno

    from rag.app import ui

    def taken(*args, **kwargs):
        raise OSError(errno.EADDRINUSE, "Cannot find empty port in range: 7860-7860")

    monkeypatch.setattr(ui, "_serve", taken)
    monkeypatch.setattr(ui, "check_port_free", lambda host, port: None)  # the check passed
    with pytest.raises(RagError, match="Cannot serve on 127.0.0.1"):
        ui.launch(FakePipeline(), load_settings(), prepare_index=False)
