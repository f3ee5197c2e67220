"""Citation markers, support verification and re-attribution, refusal detection and the
extractive refusal decision."""

from __future__ import annotations

import pytest

from rag import cite
from rag.evidence import EvidenceSelector
from rag.prompts import LANGUAGES, phrase
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


def test_extractive_refusal_when_the_asked_kind_of_answer_is_missing(hash_embedder):
    sel = _selection("Колко танка е доставила Москва на Пхенян?", [BUSTS], hash_embedder)
    decision = cite.extractive_refusal(sel)
    assert decision.refuse and any("quantity" in r for r in decision.reasons)


def test_extractive_answer_when_the_number_is_there(hash_embedder):
    sel = _selection("Колко снаряда бяха изпратени от Северна Корея?", [BUSTS, SHELLS],
                     hash_embedder)
    decision = cite.extractive_refusal(sel)
    assert not decision.refuse
    assert decision.typed_evidence  # the sentence with the number, to be shown first
    n = decision.typed_evidence[0]
    assert sel.evidence[n - 1].sentence.text == SHELLS


def test_extractive_refusal_for_off_topic_questions():
    class Unrelated:  # every question/sentence pair scores 0.7: far below any real match
        id = "flat"

        def embed_queries(self, texts):
            import numpy as np

            return np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(texts), 1))

        def embed_passages(self, texts):
            import numpy as np

            v = np.array([0.7, (1 - 0.49) ** 0.5], dtype=np.float32)
            return np.tile(v, (len(texts), 1))

    sel = _selection("How do I bake banana bread?", [BUSTS, SHELLS], Unrelated())
    decision = cite.extractive_refusal(sel)
    assert decision.refuse and "off-topic" in decision.reasons[0]


def test_no_evidence_means_refusal(hash_embedder):
    sel = EvidenceSelector(hash_embedder).select("Anything?", [], k=3)
    assert cite.extractive_refusal(sel).refuse


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


# --- refusal rules: names, roles, counted things, actions ------------------------------------


def _sel(question, lang, sentences, embedder=None):
    """A selection over free-standing sentences (source, language, text)."""
    from rag.types import Chunk, Retrieved

    retrieved = []
    for i, (source, language, text) in enumerate(sentences, 1):
        chunk = Chunk(id=f"{source}:{i}", source=source, text=text, start=i * 1000,
                      end=i * 1000 + len(text), line_start=i * 10, line_end=i * 10,
                      language=language)
        retrieved.append(Retrieved(chunk=chunk, rank=i, score=0.1))
    from tests.conftest import HashEmbedder

    return EvidenceSelector(embedder or HashEmbedder()).select(question, retrieved, k=6,
                                                               lang=lang)


MATSEGORA = ("Брифингът се проведе дни след като посланикът на Русия в Северна Корея Александър "
             "Мацегора заяви пред руски медии, че включването на Северна Корея е подходящо.")
KIRBY = ("Говорителят на Съвета за национална сигурност Джон Кърби заяви, че Северна Корея е "
         "доставила на Русия пехотни ракети и снаряди.")
SHOIGU = "Миналия месец руският министър на отбраната Сергей Шойгу пътува до Северна Корея."
AMBASSADOR_SR = ("Severnokorejski ambasador u Moskvi nedavno se sastao sa izaslanicima dve "
                 "separatističke teritorije u Donbasu.")


def test_a_name_the_articles_never_mention_means_refusal():
    d = cite.extractive_refusal(_sel("What did Chinese President Xi Jinping say about Kim?",
                                     "en", [("a", "bg", KIRBY)]))
    assert d.refuse and any("Xi Jinping" in r for r in d.reasons)


def test_names_match_across_scripts_and_spellings():
    d = cite.extractive_refusal(_sel("What did John Kirby say about North Korea?", "en",
                                     [("a", "bg", KIRBY)]))
    assert not any("not in the articles" in r for r in d.reasons), d.reasons


def test_naming_the_source_article_is_not_a_name_to_find():
    ask = cite.analyse_question("Скільки ракет, згідно з сербською статтею?", "uk")
    assert not any("серб" in n.text for n in ask.names)


@pytest.mark.parametrize("question,lang,refuse", [
    ("Who is Russia's ambassador to the United Nations?", "en", True),
    ("Who is Russia's ambassador to North Korea?", "en", False),
    ("Кој е рускиот министер за надворешни работи?", "mk", True),
    ("Хто є міністром закордонних справ Росії?", "uk", True),
    ("Who is Russia's defence minister?", "en", False),
])
def test_a_role_must_appear_with_its_country_and_qualifier(question, lang, refuse):
    d = cite.extractive_refusal(_sel(question, lang, [("a", "bg", MATSEGORA),
                                                      ("b", "bg", SHOIGU)]))
    assert d.refuse is refuse, d.reasons
    if not refuse:
        assert d.role_evidence  # the sentence with the role, to quote first


def test_who_holds_a_role_needs_a_name_next_to_it():
    question = "Как се казва посланикът на Северна Корея в Москва?"
    without = cite.extractive_refusal(_sel(question, "bg", [("a", "sr", AMBASSADOR_SR)]))
    assert without.refuse and "a name" in without.reasons[0]
    named = AMBASSADOR_SR.replace("u Moskvi", "u Moskvi Sin Hong Čol")
    assert not cite.extractive_refusal(_sel(question, "bg", [("a", "sr", named)])).refuse
    # Without "who"/"what is the name", the role and its places are enough.
    about = "Какво направи посланикът на Северна Корея в Москва?"
    assert not cite.extractive_refusal(_sel(about, "bg", [("a", "sr", AMBASSADOR_SR)])).refuse


TANKS = ("Почти 5 милиона артилерийски снаряда бяха изпратени от Северна Корея в Руската "
         "федерация, в отговор Москва започна да снабдява Пхенян с танкове.")


def test_how_many_needs_the_number_next_to_the_counted_thing():
    shells = cite.extractive_refusal(_sel("How many artillery shells were sent to Russia?", "en",
                                          [("a", "bg", TANKS)]))
    assert not shells.refuse, shells.reasons
    tanks = cite.extractive_refusal(_sel("Скільки танків Росія передала Північній Кореї?", "uk",
                                         [("a", "bg", TANKS)]))
    assert tanks.refuse and any("quantity" in r for r in tanks.reasons)
    troops = cite.extractive_refusal(_sel("How many North Korean troops were sent?", "en",
                                          [("a", "bg", TANKS)]))
    assert troops.refuse


INVITED = "Глава Північної Кореї Кім Чен Ин 14 вересня запросив Путіна відвідати Пхеньян."


def test_the_question_action_must_be_in_the_dated_sentence():
    arrived = cite.extractive_refusal(_sel("На коя дата Путин пристигна в Пхенян?", "bg",
                                           [("a", "uk", INVITED)]))
    assert arrived.refuse and any("date" in r for r in arrived.reasons)
    invited = cite.extractive_refusal(_sel("Kog datuma je Kim pozvao Putina u Pjongjang?", "sr",
                                           [("a", "uk", INVITED)]))
    assert not invited.refuse and invited.typed_evidence, invited.reasons


def test_question_analysis_splits_clauses():
    ask = cite.analyse_question("According to South Korea's defence minister, how many shells "
                                "has North Korea sent?", "en")
    assert [(r.role, r.qualifiers) for r in ask.roles] == [
        ("minister", frozenset({"south_korea", "defence"}))]
    assert [t.concept for t in ask.counted] == ["shell", "north_korea"]
    assert not ask.roles[0].wants_name
