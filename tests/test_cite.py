"""Citation markers, support verification and re-attribution, refusal detection and the
extractive refusal decision."""

from __future__ import annotations

import pytest

from rag.answering import cite
from rag.answering.evidence import EvidenceSelector
from rag.answering.prompts import LANGUAGES, phrase
from rag.types import Evidence, Sentence

try:
    from tests.conftest import SEEDS
except ImportError:  # pragma: no cover
    from conftest import SEEDS

BG = "003_101aaf086d020251.txt"
TEXT = (SEEDS / BG).read_text(encoding="utf-8")


def sentence_at(quote: str, source: str = BG, text: str = TEXT) -> Sentence:
    start = text.index(quote)
    line = text.count("\n", 0, start) + 1
    return Sentence(source=source, chunk_id=f"{source}:{start}", text=quote, start=start,
                    end=start + len(quote), line_start=line, line_end=line, title="t",
                    language="bg")


SHELLS = ("Почти 5 милиона артилерийски снаряда, както и балистични ракети, бяха изпратени от "
          "Северна Корея в Руската федерация")
BUSTS = ("КНДР \"винаги ще изпълнява вярно задълженията си по договора\", каза Ким Чен-ун на "
         "церемонията по подписването, преди която поднесе на Путин бюстове, изобразяващи него.")


def evidence(*quotes: str) -> list[Evidence]:
    return [Evidence(n=i, sentence=sentence_at(q), score=0.9) for i, q in enumerate(quotes, 1)]


def vectors(embedder, evs):
    return embedder.embed_passages([ev.sentence.text for ev in evs])


# --- markers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,numbers", [
    ("A [1].", [1]),
    ("A [1, 3] and B [2-4].", [1, 3, 2, 3, 4]),
    ("A [1–2][5]", [1, 2, 5]),
    ("A [[2]] B [1; 3]", [2, 1, 3]),
    ("no markers [x] [] here", []),
])
def test_parse_markers(text, numbers):
    assert cite.cited_numbers(text) == numbers


def test_absurd_range_is_checked_by_its_ends():
    assert cite.parse_numbers("1-900") == [1, 900]


def test_strip_markers():
    assert cite.strip_markers("Five million shells [1]. Tanks [2, 3].") == \
        "Five million shells. Tanks."


# --- verification ------------------------------------------------------------------------------


def test_out_of_range_markers_are_dropped_and_citations_renumbered(hash_embedder):
    evs = evidence(BUSTS, SHELLS)
    reply = "Почти 5 милиона артилерийски снаряда бяха изпратени [2][7]."
    v = cite.verify(reply, evs, hash_embedder, vectors(hash_embedder, evs))
    assert v.dropped_markers == 1
    assert cite.cited_numbers(v.text) == [1]  # renumbered from 2
    assert "[7]" not in v.text
    (c,) = v.citations
    assert c.n == 1 and c.quote == SHELLS
    assert TEXT[c.start:c.end] == c.quote
    assert c.lines[0] == TEXT.count("\n", 0, c.start) + 1
    assert 0 < c.support <= 1


def test_wrong_citation_is_reattributed_to_the_supporting_sentence(hash_embedder):
    evs = evidence(BUSTS, SHELLS)
    reply = "Почти 5 милиона артилерийски снаряда бяха изпратени от Северна Корея [1]."
    v = cite.verify(reply, evs, hash_embedder, vectors(hash_embedder, evs))
    assert v.reattributed == 1
    assert [c.quote for c in v.citations] == [SHELLS]
    assert v.unsupported_claims == ()


def test_unsupported_claim_is_left_uncited_and_flagged(hash_embedder):
    evs = evidence(BUSTS, SHELLS)
    reply = "Ким поднесе на Путин бюстове [1]. The moon is made of green cheese [2]."
    v = cite.verify(reply, evs, hash_embedder, vectors(hash_embedder, evs))
    assert cite.cited_numbers(v.text) == [1]
    assert "green cheese." in v.text and "green cheese [" not in v.text
    assert v.unsupported_claims == ("The moon is made of green cheese [2].",) or \
        v.unsupported_claims == ("The moon is made of green cheese.",)
    assert [c.quote for c in v.citations] == [BUSTS]


def test_numbers_must_match(hash_embedder):
    evs = evidence(SHELLS)
    reply = "Почти 7 милиона артилерийски снаряда бяха изпратени от Северна Корея [1]."
    v = cite.verify(reply, evs, hash_embedder, vectors(hash_embedder, evs))
    assert v.citations == ()
    assert v.unsupported_claims


def test_uncited_claim_gets_a_citation_when_evidence_supports_it(hash_embedder):
    evs = evidence(BUSTS, SHELLS)
    v = cite.verify("Ким поднесе на Путин бюстове преди церемонията по подписването.", evs,
                    hash_embedder, vectors(hash_embedder, evs))
    assert [c.quote for c in v.citations] == [BUSTS]
    assert v.text.endswith("[1].")


def test_markers_after_the_period_belong_to_the_sentence(hash_embedder):
    evs = evidence(BUSTS, SHELLS)
    reply = "Почти 5 милиона артилерийски снаряда бяха изпратени. [2]"
    v = cite.verify(reply, evs, hash_embedder, vectors(hash_embedder, evs))
    assert [c.quote for c in v.citations] == [SHELLS]
    assert v.text == "Почти 5 милиона артилерийски снаряда бяха изпратени [1]."


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_refusal_phrase_in_every_language_is_a_refusal(lang):
    assert cite.is_refusal(phrase("refusal", lang))


@pytest.mark.parametrize("reply", [
    "INSUFFICIENT CONTEXT", "Insufficient context.", "The articles don't say.",
    "The evidence does not mention this.", "", "   ",
])
def test_model_refusals(reply):
    assert cite.is_refusal(reply)


def test_an_answer_that_cites_is_not_a_refusal():
    assert not cite.is_refusal(
        "The articles don't say how many tanks, but they say Moscow supplies tanks and "
        "aircraft to Pyongyang, and that nearly five million shells were sent [1].")
    assert not cite.is_refusal("Five million shells [1].")


def _selection(question, quotes, embedder):
    from rag.types import Chunk, Retrieved

    retrieved = []
    for i, q in enumerate(quotes, 1):
        s = sentence_at(q)
        chunk = Chunk(id=s.chunk_id, source=BG, text=q, start=s.start, end=s.end,
                      line_start=s.line_start, line_end=s.line_end)
        retrieved.append(Retrieved(chunk=chunk, rank=i, score=0.1))
    return EvidenceSelector(embedder).select(question, retrieved, k=6)


# --- stray spaces left by removed markers -------------------------------------------------


@pytest.mark.parametrize("reply,expected", [
    ("Nearly five million shells were sent, according to South Korea [2].",
     "Nearly five million shells were sent, according to South Korea [1]."),
    ("Nearly five million shells were sent, according to South Korea [2] .",
     "Nearly five million shells were sent, according to South Korea [1]."),
    ('Shells were sent, said "South Korea [2]".', 'Shells were sent, said "South Korea" [1].'),
])
def test_no_space_before_the_full_stop_after_verification(hash_embedder, reply, expected):
    evs = [Evidence(n=1, sentence=sentence_at(BUSTS), score=0.9),
           Evidence(n=2, sentence=sentence_at(SHELLS), score=0.9)]
    # Support comes from shared words here (hash vectors), so the claim's words are the quote's.
    evs[1] = Evidence(n=2, score=0.9, sentence=Sentence(
        source=BG, chunk_id="x", text="Nearly five million shells were sent, according to "
        "South Korea.", start=0, end=10, line_start=1, line_end=1))
    checked = cite.verify(reply, evs, hash_embedder, vectors(hash_embedder, evs))
    assert checked.text == expected


def test_strip_markers_takes_the_space_before_the_marker_only():
    assert cite.strip_markers('He said [1] "yes" [2].') == 'He said "yes".'
    assert cite.strip_markers("Korea [1][2], and more [3].") == "Korea, and more."
