"""Answering: question → retrieval → evidence → (generated or extractive) answer with citations.

`Answerer` is built from injected parts (retriever, embedder, settings, optional chat model), so
the UI, the CLI, the benchmarks and the tests all run the same code:

- `generate`: the LLM writes a short answer from numbered evidence, streamed; afterwards every
  claim's citation is verified (rag.answering.cite) and the final text carries only markers that
  hold.
- `extractive`: no model writes anything; the answer is the best evidence sentences, verbatim,
  each with its [n], under a lead-in in the question's language — or the refusal text when the
  evidence does not answer the question.
- `auto` (the default): `generate` when the configured LLM answers `check()`, else `extractive`
  with a note saying what to start.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rag import lang as lang_packs
from rag.answering import cite, prompts, refusal
from rag.answering.evidence import (
    EvidenceSelector,
    Selection,
    as_evidence,
    asks,
    needs_context,
)
from rag.answering.kinds import satisfies
from rag.answering.question import QuestionAnalysis, analyse, has_content, refers_back
from rag.embed import Embedder
from rag.lang import detect as language
from rag.lang.dictionary import Dictionaries, shared_dictionaries
from rag.lang.terms import Term, name_keys, term_set
from rag.lang.text import words
from rag.llm.backends import ChatModel, complete
from rag.types import Answer, Backend, Chunk, Citation, Evidence, RagError, Retrieved, Timings

logger = logging.getLogger(__name__)

# "reset": forget the text streamed so far (a failed generation is replaced by a fallback).
AnswerEvent = (tuple[Literal["delta"], str] | tuple[Literal["reset"], str]
               | tuple[Literal["answer"], Answer])

EXTRACTIVE = Backend("extractive", "")
# How long a backend's check() result is trusted: a server started later is picked up soon.
CHECK_TTL_S = 30.0
# Evidence sentences numbered for the LLM prompt (the extractive answer shows fewer).
PROMPT_EVIDENCE = 6
# The extractive answer: up to `settings.evidence_sentences` sentences within this many
# characters (the first sentence is always shown whole).
EXTRACTIVE_BUDGET = 600
# A further sentence is shown only if its score is this close to the best one's.
EXTRACTIVE_MARGIN = 0.06
EXTRACTIVE_OTHER_MARGIN = 0.0
# A lower sentence holding a kind of answer the shown ones lack ("... and when?") is quoted when
# it scores within this of the best one, and (unless EXTRACTIVE_FILL_OTHER) only from an
# article already quoted: another article's date is as often another event's date.
EXTRACTIVE_FILL_MARGIN = 9.0
EXTRACTIVE_FILL_OTHER = True
# "Which articles ...?": another article's best sentence holding a key term of the question is
# quoted when it scores within this of the best sentence (scores of one question spread ~0.3).
ACROSS_ARTICLES_MARGIN = 0.2
# Retrieval depth for evidence selection, as a multiple of settings.top_k: the sentence ranking
# reorders passages, so it is given more than the top few to choose from.
RETRIEVE_FACTOR = 3


class Retriever(Protocol):
    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]: ...


@dataclass
class _Check:
    ok: bool
    error: str
    at: float


class Answerer:
    """Answers questions over the index; one instance serves many questions (thread-safe)."""

    def __init__(self, retriever: Retriever, embedder: Embedder, settings: Any,
                 chat_model: ChatModel | None = None, *,
                 selector: EvidenceSelector | None = None, use_name_vectors: bool = True,
                 dictionaries: Dictionaries | None = None):
        self.retriever = retriever
        self.embedder = embedder
        self.settings = settings
        self.chat_model = chat_model
        self.selector = selector or EvidenceSelector(embedder)
        # Translations of question words into the articles' languages (none when no dictionary
        # is installed; rag.lang.dictionary).
        self.dictionaries = (dictionaries if dictionaries is not None
                             else shared_dictionaries(getattr(settings, "dictionary_dir", None)))
        # Spellings of one name across languages (Japan/Япония) are matched by e5 word vectors.
        self.refusal_model = refusal.default_model()
        self.name_matcher = (refusal.NameMatcher(embedder)
                             if use_name_vectors and self.refusal_model.name_similarity <= 1.0
                             else None)
        # Languages of the indexed articles seen so far (warm() and retrieval): a question is
        # identified among these and the languages answers are given in.
        self.article_languages: set[str] = set()
        self._check: _Check | None = None
        self._check_lock = threading.Lock()

    # --- public API ------------------------------------------------------------------------
    def ask(self, question: str, history: list[dict] | None = None,
            mode: str | None = None) -> Answer:
        """The complete answer (blocking)."""
        answer: Answer | None = None
        for kind, value in self.stream(question, history, mode):
            if kind == "answer":
                answer = value  # type: ignore[assignment]
        assert answer is not None
        return answer

    def stream(self, question: str, history: list[dict] | None = None,
               mode: str | None = None) -> Iterator[AnswerEvent]:
        """("delta", text) pieces as the answer is produced, then ("answer", Answer).

        Generated answers stream token by token; the final Answer holds the verified text (its
        markers may differ from the streamed ones when a citation was dropped or moved).
        Extractive answers arrive as one delta.
        """
        t0 = time.perf_counter()
        question = self._validate(question)
        history = trim_history(history, self.settings.max_history_chars)
        if not has_content(question):
            answer = self._rephrase(question, history, t0)
            yield ("delta", answer.answer)
            yield ("answer", answer)
            return
        lang, raw = language.detect_question(question, self.article_languages)
        logger.debug("question language %s (raw %s)", lang, raw)
        chosen, no_llm = self._choose_mode(mode)
        notes = [] if no_llm is None else [self.fallback_note(lang, no_llm)]

        standalone = self._standalone(question, history, chosen, lang)
        asked = standalone or question

        tr = time.perf_counter()
        k = max(self.settings.top_k, self.settings.top_k * RETRIEVE_FACTOR)
        retrieved = tuple(self.retriever.retrieve(asked, k))
        retrieve_ms = (time.perf_counter() - tr) * 1000
        self.article_languages |= {r.chunk.language for r in retrieved if r.chunk.language}

        if chosen == "generate":
            try:
                yield from self._generate(question, asked, lang, retrieved, standalone, notes,
                                          t0, retrieve_ms)
                return
            except Exception as e:
                why = str(e) if isinstance(e, RagError) else f"{type(e).__name__}: {e}"
                self._backend_failed(why)
                if (mode or self.settings.mode) != "auto":
                    if isinstance(e, RagError):
                        raise
                    raise RagError(f"The language model failed while answering ({why}).") from e
                # auto: whatever broke (an error, a 500, a reply that is not JSON, a stream cut
                # short, a backend that hangs), the user still gets the articles' sentences.
                logger.warning("generation failed, answering extractively: %s", why)
                notes = [*notes, prompts.phrase("llm_failed", lang, self.settings)
                         .replace("{why}", _short(why))]
                yield ("reset", "")  # the streamed part is replaced by the answer below
            answer = self._extractive(question, asked, lang, retrieved, standalone, notes,
                                      t0, retrieve_ms)
            yield ("delta", answer.answer)
            yield ("answer", answer)
        else:
            answer = self._extractive(question, asked, lang, retrieved, standalone, notes,
                                      t0, retrieve_ms)
            yield ("delta", answer.answer)
            yield ("answer", answer)

    def warm(self, chunks: Iterable[Chunk | Retrieved]) -> int:
        """Embed the sentences of these passages ahead of time, in batches, so that the first
        extractive answers are as fast as later ones: call it with every stored chunk at
        start-up (e.g. `store.iter_chunks()`, in a background thread). Sentences already
        embedded are skipped, so calling it again after indexing new articles is cheap.
        Returns how many sentences were embedded."""
        items = list(chunks)
        self.dictionaries.all()  # read now rather than on the first question
        self.article_languages |= {(c.chunk if isinstance(c, Retrieved) else c).language
                                   for c in items} - {""}
        return self.selector.warm(items)

    def analyse(self, question: str, lang: str) -> QuestionAnalysis:
        """The question's analysis, with the translations of its words when a dictionary out of
        its language is installed."""
        return analyse(question, lang, self.dictionaries.get(lang))

    def _rephrase(self, question: str, history: list[dict] | None, t0: float) -> Answer:
        """A question with no letter or digit: ask for words, in the language of the
        conversation's last question when there is one, else English."""
        previous = next((str(m.get("content") or "") for m in reversed(history or [])
                         if m.get("role") == "user" and has_content(str(m.get("content") or ""))),
                        "")
        lang = (language.detect_question(previous, self.article_languages)[0] if previous
                else lang_packs.FALLBACK)
        text = prompts.phrase("rephrase", lang, self.settings)
        return Answer(
            question=question, answer=text, language=lang, mode="extractive",
            insufficient_context=True, citations=(), retrieved=(), backend=EXTRACTIVE,
            timings=Timings(retrieve_ms=0.0, first_token_ms=None,
                            total_ms=(time.perf_counter() - t0) * 1000),
            usage={}, standalone_question=None, notes=(),
        )

    # --- input and mode --------------------------------------------------------------------
    def _validate(self, question: str) -> str:
        q = (question or "").strip()
        if not q:
            raise RagError("The question is empty: type a question about the articles.")
        limit = self.settings.max_question_chars
        if len(q) > limit:
            raise RagError(
                f"The question is too long ({len(q)} characters; the limit is {limit}). "
                "Ask something shorter, or raise max_question_chars."
            )
        return q

    def _choose_mode(self, mode: str | None) -> tuple[str, str | None]:
        """(mode, why there is no LLM) — the reason is None unless `auto` fell back to
        extractive ("" when no model is configured at all)."""
        wanted = mode or self.settings.mode
        if wanted not in ("auto", "generate", "extractive"):
            raise RagError(f"Unknown answer mode {wanted!r}: use auto, generate or extractive.")
        if wanted == "extractive":
            return "extractive", None
        if self.chat_model is None:
            if wanted == "generate":
                raise RagError(
                    "Generate mode needs an LLM, and none is configured: start Ollama "
                    f"(`ollama serve`, then `ollama pull {self.settings.ollama_model}`) or use "
                    "mode=extractive."
                )
            return "extractive", ""
        # Generate mode insists on the LLM: a remembered failure is checked again, not trusted.
        status = self._backend_status(recheck_failure=wanted == "generate")
        if status.ok:
            return "generate", None
        if wanted == "generate":
            raise RagError(status.error)
        return "extractive", status.error

    def fallback_note(self, lang: str, error: str) -> str:
        """The one note of an extractive fallback, in the question's language: no LLM answered,
        so these are the articles' own sentences, and the command(s) to run for a written
        answer (the backend's English error with its details goes to the log)."""
        model = self.chat_model
        backend = model.backend.name if model is not None else self.settings.backend
        commands = list(dict.fromkeys(re.findall(r"`([^`]+)`", error)))
        if backend == "ollama":
            name = model.backend.model if model is not None else self.settings.ollama_model
            # A fresh install needs both; "model not found" needs the pull only.
            if not any(c.startswith("ollama pull") for c in commands):
                commands = [*(commands or ["ollama serve"]), f"ollama pull {name}"]
        run = ", ".join(f"`{c}`" for c in commands) or error or backend
        key = "needs_ollama" if backend == "ollama" else "needs_llm"
        return prompts.phrase(key, lang, self.settings).replace("{run}", run)

    def _backend_failed(self, why: str) -> None:
        """A generation failed although the check passed: trust the check no longer, so auto
        mode answers extractively at once instead of trying a dead backend until the TTL."""
        with self._check_lock:
            self._check = _Check(False, why, time.monotonic())

    def _backend_status(self, recheck_failure: bool = False) -> _Check:
        """chat_model.check(), remembered for CHECK_TTL_S seconds."""
        with self._check_lock:
            now = time.monotonic()
            stale = self._check is None or now - self._check.at > CHECK_TTL_S
            if stale or (recheck_failure and not self._check.ok):
                try:
                    assert self.chat_model is not None
                    self.chat_model.check()
                    self._check = _Check(True, "", now)
                except RagError as e:
                    logger.info("LLM backend not available: %s", e)
                    self._check = _Check(False, str(e), now)
            return self._check

    # --- follow-up questions ---------------------------------------------------------------
    def _standalone(self, question: str, history: list[dict] | None, mode: str,
                    lang: str | None = None) -> str | None:
        """A self-contained version of a follow-up question, or None without history."""
        turns = [m for m in history or [] if m.get("role") in ("user", "assistant")
                 and str(m.get("content") or "").strip()]
        if not turns or not refers_back(question, lang):
            # A new question, however short, is asked as it is (finding 14 of issue 10).
            return None
        if mode == "generate" and self.chat_model is not None:
            messages = prompts.condense_messages(prompts.render_history(turns), question,
                                                 self.settings)
            try:
                text = complete(self.chat_model, messages)
            except RagError as e:
                logger.warning("condensing failed, using the heuristic: %s", e)
            else:
                cleaned = _clean_condensed(text)
                if cleaned:
                    return cleaned
        return condense_heuristic(turns, question)

    # --- extractive --------------------------------------------------------------------------
    def _extractive(self, question: str, asked: str, lang: str, retrieved: tuple[Retrieved, ...],
                    standalone: str | None, notes: list[str], t0: float,
                    retrieve_ms: float) -> Answer:
        analysis = self.analyse(asked, lang)
        selection = self.selector.select(asked, retrieved, k=PROMPT_EVIDENCE, lang=lang,
                                         analysis=analysis)
        decision = refusal.decide(selection, analysis, model=self.refusal_model,
                                  matcher=self.name_matcher,
                                  embedder_id=getattr(self.embedder, "id", None))
        if decision.refuse:
            logger.info("extractive refusal: %s", "; ".join(decision.reasons))
            text = prompts.phrase("refusal", lang, self.settings)
            citations: tuple[Citation, ...] = ()
        else:
            shown = pick_extractive(selection, self.settings.evidence_sentences,
                                    decision.typed_evidence)
            lead = prompts.phrase("extractive_lead_in", lang, self.settings)
            lines = [f"{ev.sentence.text} [{i}]" for i, ev in enumerate(shown, start=1)]
            text = lead + "\n" + "\n".join(lines)
            citations = tuple(cite.make_citation(i, ev, 1.0)
                              for i, ev in enumerate(shown, start=1))
        return Answer(
            question=question, answer=text, language=lang, mode="extractive",
            insufficient_context=decision.refuse, citations=citations, retrieved=retrieved,
            backend=EXTRACTIVE,
            timings=Timings(retrieve_ms=retrieve_ms, first_token_ms=None,
                            total_ms=(time.perf_counter() - t0) * 1000),
            usage={}, standalone_question=standalone, notes=tuple(notes),
        )

    # --- generate ----------------------------------------------------------------------------
    def _generate(self, question: str, asked: str, lang: str, retrieved: tuple[Retrieved, ...],
                  standalone: str | None, notes: list[str], t0: float,
                  retrieve_ms: float) -> Iterator[AnswerEvent]:
        model = self.chat_model
        assert model is not None
        selection = self.selector.select(asked, retrieved, k=PROMPT_EVIDENCE, lang=lang,
                                         analysis=self.analyse(asked, lang))
        evidence = selection.evidence
        timings = dict(retrieve_ms=retrieve_ms, first_token_ms=None)
        if not evidence:
            text = prompts.phrase("refusal", lang, self.settings)
            yield ("delta", text)
            yield ("answer", self._refusal(question, lang, retrieved, model, standalone, notes,
                                           t0, timings, {}))
            return
        messages = prompts.answer_messages(prompts.render_evidence(evidence), question, lang,
                                           self.settings)
        parts: list[str] = []
        stream = TimedStream(model, messages, self.settings.llm_first_token_timeout,
                             self.settings.llm_timeout)
        for piece in stream:
            if timings["first_token_ms"] is None:
                timings["first_token_ms"] = (time.perf_counter() - t0) * 1000
            parts.append(piece)
            yield ("delta", piece)
        reply = "".join(parts).strip()
        usage = dict(stream.usage)
        if cite.is_refusal(reply):
            yield ("answer", self._refusal(question, lang, retrieved, model, standalone, notes,
                                           t0, timings, usage))
            return
        vectors = self.selector.sentence_vectors([ev.sentence for ev in evidence])
        checked = cite.verify(reply, evidence, self.embedder, vectors)
        if checked.dropped_markers:
            logger.info("dropped %d citation number(s) outside 1..%d", checked.dropped_markers,
                        len(evidence))
        yield ("answer", Answer(
            question=question, answer=checked.text, language=lang, mode="generate",
            insufficient_context=False, citations=checked.citations, retrieved=retrieved,
            backend=model.backend,
            timings=Timings(retrieve_ms=timings["retrieve_ms"],
                            first_token_ms=timings["first_token_ms"],
                            total_ms=(time.perf_counter() - t0) * 1000),
            usage=usage, standalone_question=standalone, notes=tuple(notes),
            unsupported_claims=checked.unsupported_claims,
        ))

    def _refusal(self, question: str, lang: str, retrieved: tuple[Retrieved, ...],
                 model: ChatModel, standalone: str | None, notes: list[str], t0: float,
                 timings: dict, usage: dict) -> Answer:
        return Answer(
            question=question, answer=prompts.phrase("refusal", lang, self.settings),
            language=lang, mode="generate", insufficient_context=True, citations=(),
            retrieved=retrieved, backend=model.backend,
            timings=Timings(retrieve_ms=timings["retrieve_ms"],
                            first_token_ms=timings["first_token_ms"],
                            total_ms=(time.perf_counter() - t0) * 1000),
            usage=usage, standalone_question=standalone, notes=tuple(notes),
        )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def trim_history(history: list[dict] | None, limit: int) -> list[dict] | None:
    """The most recent turns whose text fits in `limit` characters (older ones are dropped:
    a follow-up refers to what was said last)."""
    if not history:
        return history
    kept: list[dict] = []
    used = 0
    for m in reversed(history):
        n = len(str(m.get("content") or ""))
        if used + n > limit:
            logger.info("history trimmed to the last %d of %d messages (%d characters max)",
                        len(kept), len(history), limit)
            break
        kept.append(m)
        used += n
    return list(reversed(kept))


def _short(why: str, limit: int = 160) -> str:
    why = " ".join(why.split())
    return why if len(why) <= limit else why[: limit - 1] + "…"


class TimedStream:
    """A chat model's stream read through a queue, so that the reader can give up: no first
    token within `first_s`, or no end within `total_s`, raises RagError. The model's stream
    runs on a daemon thread (a hung HTTP read cannot be interrupted; the thread ends when the
    client's own timeout fires), and is closed as soon as the reader stops."""

    def __init__(self, model: ChatModel, messages: list, first_s: float, total_s: float):
        self.model = model
        self.first_s = first_s
        self.total_s = total_s
        self.usage: dict = {}
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(messages,), daemon=True,
                                        name="llm-stream")
        self._thread.start()

    def _run(self, messages: list) -> None:
        gen = None
        try:
            gen = self.model.stream(messages)
            for piece in gen:
                if self._stop.is_set():
                    return
                self._queue.put(("piece", piece))
            # last_usage is per thread: this thread's stream is the one it describes.
            self._queue.put(("done", dict(self.model.last_usage or {})))
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            self._queue.put(("error", e))
        finally:
            if gen is not None and hasattr(gen, "close"):
                gen.close()

    def __iter__(self) -> Iterator[str]:
        start = time.monotonic()
        first = True
        try:
            while True:
                wait = self.first_s if first else self.total_s - (time.monotonic() - start)
                try:
                    kind, value = self._queue.get(timeout=max(0.0, wait))
                except queue.Empty:
                    raise RagError(
                        f"the language model sent nothing within {self.first_s:g} s"
                        if first else
                        f"the language model did not finish within {self.total_s:g} s"
                    ) from None
                if kind == "piece":
                    first = False
                    yield value
                elif kind == "done":
                    self.usage = value
                    return
                else:
                    raise value
        finally:
            self._stop.set()


def pick_extractive(selection: Selection, max_sentences: int,
                    first_choice: Sequence[int] = ()) -> list[Evidence]:
    """The evidence to quote: the best sentence (or the best one in `first_choice`: holding the
    asked-for kind of answer, e.g. a number for "how many", or the asked-about role), then the
    next best while they score close to it and fit the length budget. With `only` (the
    sentences naming the asked-about role), a further sentence must be one of them (or answer
    another part of the question): "France's ambassador to Poland" is not answered by Poland's
    ambassador.

    Another article's sentence must score at least as high as the best one (a wrong file cited
    costs precision), except for questions about the articles themselves ("Which articles quote
    Jean Dupont?"): there each other article's best sentence that holds a key term of the
    question (one that only some of the articles mention, such as "Dupont") is quoted too."""
    # A sentence that asks ("Who will pay for it?") states nothing: quote it only when nothing
    # else was found (in the question sets no answer sentence asks; 2 of 334 quotes did).
    evidence = ([ev for ev in selection.evidence if not asks(ev.sentence.text)]
                or list(selection.evidence))
    if not evidence:
        return []
    first = next((ev for ev in evidence if ev.n in first_choice), evidence[0])
    shown = [first]
    used = len(first.sentence.text)
    top = evidence[0].score
    analysis = selection.analysis or analyse(selection.question, selection.lang or "en")
    all_types = analysis.all_answer_types
    across = analysis.across_articles
    keys, names = key_terms(selection) if across else ([], [])

    def fits(ev: Evidence) -> bool:
        return (used + len(ev.sentence.text) <= EXTRACTIVE_BUDGET
                and not (needs_context(ev.sentence) and not ev.context_before))

    if across and (keys or names):
        for ev in _candidates(selection):
            if asks(ev.sentence.text):
                continue
            if len(shown) >= max_sentences or top - ev.score > ACROSS_ARTICLES_MARGIN:
                break
            if ev.sentence.source in {s.sentence.source for s in shown} or not fits(ev):
                continue
            lang = ev.sentence.language or None
            # A key name ("Dupont") must be there; otherwise any key term will do.
            if (all(not n.isdisjoint(name_keys(_text(ev), lang)) for n in names) if names
                    else any(t.found_in(term_set(_text(ev), lang)) for t in keys)):
                shown.append(ev)
                used += len(ev.sentence.text)
    for ev in evidence:
        if len(shown) >= max_sentences:
            break
        if any(ev.sentence.start == s.sentence.start and ev.sentence.source == s.sentence.source
               for s in shown):
            continue
        same_article = ev.sentence.source in {s.sentence.source for s in shown}
        margin = EXTRACTIVE_MARGIN if same_article else EXTRACTIVE_OTHER_MARGIN
        close = top - ev.score <= margin
        # A later part of the question ("... and when?") may be answered by a lower sentence.
        fills_type = (top - ev.score <= EXTRACTIVE_FILL_MARGIN
                      and (same_article or EXTRACTIVE_FILL_OTHER)
                      and any(satisfies(t, ev.sentence.text)
                              and not any(satisfies(t, s.sentence.text) for s in shown)
                              for t in all_types))
        if (close or fills_type) and fits(ev):
            shown.append(ev)
            used += len(ev.sentence.text)
    return shown


def key_terms(selection: Selection) -> tuple[list[Term], list[frozenset[str]]]:
    """(terms, names): terms of the question that some but at most half of the retrieved
    articles mention, and the question's names (as name keys) that some but not all of them
    mention. They tell the articles that answer apart from the others (a spokesman's
    name, an agency, "partnership"; not "Italy" in news about Italy)."""
    terms: dict[str, set[str]] = {}
    names: dict[str, set[str]] = {}
    for c in selection.ranked:
        lang = c.sentence.language or None
        terms.setdefault(c.sentence.source, set()).update(term_set(c.sentence.text, lang))
        names.setdefault(c.sentence.source, set()).update(name_keys(c.sentence.text, lang))
    half = len(terms) / 2
    analysis = selection.analysis or analyse(selection.question, selection.lang or "en")
    asked = [n.keys for n in analysis.names]
    # A name is rarer than a word: any name that some but not all articles mention is key.
    key_names = [n for n in asked
                 if 0 < sum(not n.isdisjoint(k) for k in names.values()) < len(names)]
    # A word of a name is judged with its name: "Jae" of "Moon Jae-in" is spelled differently
    # in every language, but Moon is in all the articles.
    keys = [t for t in selection.terms
            if 0 < sum(t.found_in(k) for k in terms.values()) <= half
            and all(t.keys.isdisjoint(n) for n in asked)]
    return keys, key_names


def _text(ev: Evidence) -> str:
    return " ".join(p for p in (ev.context_before, ev.sentence.text) if p)


def _candidates(selection: Selection, limit: int = 30) -> Iterator[Evidence]:
    """Ranked sentences as evidence, skipping repeated text (a heading repeated in the body)."""
    seen: set[str] = set()
    for c in selection.ranked[:limit]:
        key = " ".join(words(c.sentence.text))
        if not key or key in seen:
            continue
        seen.add(key)
        yield as_evidence(0, c, selection.sentences)


def condense_heuristic(history: Sequence[dict], question: str) -> str | None:
    """Without an LLM, a follow-up that refers back (the caller checked: a pronoun, or an
    ellipsis such as "And when?") is asked together with the previous user question ("Where did
    the two leaders meet? And when?"): nothing is rewritten, so nothing is invented."""
    previous = next((str(m["content"]).strip() for m in reversed(history)
                     if m.get("role") == "user" and str(m.get("content") or "").strip()), None)
    if not previous or previous == question:
        return None
    return f"{previous} {question}"


def _clean_condensed(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    first = re.sub(r"^(standalone question|question)\s*:\s*", "", lines[0], flags=re.I)
    return first.strip().strip('"“”«»\'').strip()

