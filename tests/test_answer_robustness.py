"""Answering when the LLM misbehaves (issue 10, findings 5, 12, 13): auto mode always ends
with an answer, history is bounded, usage is per caller."""

from __future__ import annotations

import threading

import pytest

from rag.answering.answer import TimedStream, trim_history
from rag.answering.prompts import phrase
from rag.llm.backends import ScriptedChatModel
from rag.types import RagError
from tests.fake_ollama import FakeOllama
from tests.test_answer import SHELLS_Q, make


@pytest.fixture
def settings(settings_factory):
    return settings_factory(mode="auto", max_question_chars=300)


@pytest.mark.parametrize("failure", [
    RagError("Ollama (x) failed: HTTP 500"),
    ValueError("Expecting value: line 1 column 1 (char 0)"),  # a reply that is not JSON
    ("Почти 5", RagError("Ollama (x) failed: stream ended early")),  # half a stream
])
def test_auto_mode_falls_back_to_extractive_on_any_generation_failure(settings, hash_embedder,
                                                                      failure):
    model = ScriptedChatModel([failure, "Почти 5 милиона снаряда [1]."])
    answerer = make(settings, hash_embedder, model)
    events = list(answerer.stream(SHELLS_Q))
    answer = events[-1][1]
    assert answer.mode == "extractive" and answer.citations
    assert "5 милиона" in answer.answer
    why = phrase("llm_failed", "bg").split("(")[0]
    assert any(n.startswith(why) for n in answer.notes), answer.notes
    assert not any("ollama serve" in n for n in answer.notes)  # says why, not "install Ollama"
    # The failure is remembered: the next question does not try the dead backend again.
    again = answerer.ask(SHELLS_Q)
    assert again.mode == "extractive" and len(model.calls) == 1


def test_a_hanging_backend_is_given_up_at_the_first_token_timeout(settings_factory,
                                                                  hash_embedder):
    release = threading.Event()

    class Hanging(ScriptedChatModel):
        def stream(self, messages):
            release.wait()  # never sends a token until released
            yield from super().stream(messages)

    settings = settings_factory(mode="auto", llm_first_token_timeout=0.5, llm_timeout=600)
    answerer = make(settings, hash_embedder, Hanging(["x [1]."]))
    try:
        answer = answerer.ask(SHELLS_Q)
    finally:
        release.set()
    assert answer.mode == "extractive"
    assert any("0.5 s" in n for n in answer.notes)


def test_timed_stream_total_timeout_and_usage():
    release = threading.Event()

    class Slow(ScriptedChatModel):
        def stream(self, messages):
            for i, piece in enumerate(super().stream(messages)):
                if i == 1:
                    release.wait()
                yield piece

    msgs = [{"role": "user", "content": "hi there"}]
    s = TimedStream(Slow(["abcdefgh"], chunk_size=2), msgs, first_s=60, total_s=0.5)
    got = []
    with pytest.raises(RagError, match="did not finish within 0.5 s"):
        for piece in s:
            got.append(piece)
    release.set()
    assert got == ["ab"]
    ok = TimedStream(ScriptedChatModel(["abcd"], chunk_size=2), msgs, first_s=60, total_s=60)
    assert list(ok) == ["ab", "cd"] and ok.usage["completion_tokens"] == 2


def test_last_usage_is_per_caller_thread():
    model = ScriptedChatModel(["one two three"], repeat_last=True, chunk_size=100)
    msgs = [{"role": "user", "content": "a b c"}]
    list(model.stream(msgs))
    seen = {}

    def other():
        seen["before"] = dict(model.last_usage)
        list(model.stream([{"role": "user", "content": "a b c d e f g"}]))
        seen["after"] = dict(model.last_usage)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["before"] == {}  # another caller's usage is not visible
    assert seen["after"]["prompt_tokens"] == 7
    assert model.last_usage["prompt_tokens"] == 3  # ours was not overwritten


def test_history_counts_in_the_length_limit(settings_factory, hash_embedder):
    history = [{"role": "user", "content": "x" * 1000},
               {"role": "assistant", "content": "y" * 1000}] * 100
    kept = trim_history(history, 2500)
    assert kept == history[-2:]
    assert trim_history(history, 0) == []
    model = ScriptedChatModel(["Почти 5 милиона снаряда [1]."], repeat_last=True)
    settings = settings_factory(mode="generate", max_history_chars=2500)
    answerer = make(settings, hash_embedder, model)
    answerer.ask(SHELLS_Q, history=history)
    sent = sum(len(m["content"]) for call in model.calls for m in call)
    assert sent < 20_000  # not the 200,000 characters of history


def test_auto_falls_back_on_a_real_http_500_and_half_stream(settings_factory, hash_embedder):
    with FakeOllama(models=["qwen2.5:7b"], replies=["Почти 5 [1]."],
                    stream_error="runner crashed") as server:
        from rag.llm.backends import OllamaChatModel

        settings = settings_factory(mode="auto", ollama_url=server.url)
        answerer = make(settings, hash_embedder, OllamaChatModel(settings))
        answer = answerer.ask(SHELLS_Q)
    assert answer.mode == "extractive" and answer.citations
    assert any("runner crashed" in n for n in answer.notes), answer.notes
