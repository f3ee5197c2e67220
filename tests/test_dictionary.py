"""Bilingual dictionaries (rag.lang.dictionary): reading FreeDict's dictd files, looking words
up by their dictionary form, and what translations change in the refusal's name check."""

from __future__ import annotations

import dataclasses
import gzip
import logging
from pathlib import Path

import pytest

from rag.answering import refusal
from rag.answering.evidence import EvidenceSelector
from rag.answering.question import analyse
from rag.lang import dictionary
from rag.lang.terms import stems
from rag.types import Chunk, RagError, Retrieved
from tests.conftest import HashEmbedder

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(n: int) -> str:
    out = ""
    while True:
        out = _B64[n % 64] + out
        n //= 64
        if not n:
            return out


def write_pair(folder: Path, name: str, entries: dict[str, str]) -> None:
    """A dictd pair as FreeDict ships it: `<name>.index` pointing into gzipped `<name>.dict.dz`,
    each entry opening with its headword as written ("Biden <pn>", "sea <n>")."""
    body = b""
    index = ["00databaseshort\tA\tB"]
    for head, text in entries.items():
        first = text.split("\n", 1)[0].casefold()
        entry = text if first == head or first.startswith(head + " ") else f"{head}\n{text}"
        raw = f"{entry}\n".encode()
        index.append(f"{head}\t{_b64(len(body))}\t{_b64(len(raw))}")
        body += raw
    (folder / f"{name}.dict.dz").write_bytes(gzip.compress(body))
    (folder / f"{name}.index").write_text("\n".join(index) + "\n", encoding="utf-8")


ENG_BUL = {
    "kingdom": "kingdom /ˈkɪŋdəm/ <n>\n1. кра́лство, кралство\nrealm having as supreme ruler a king",
    "tank": "tank /tæŋk/ <n>\n1. танк\narmoured fighting vehicle\n2. резервоа́р\nclosed container",
    "united kingdom": "united kingdom <prop>\nОбединено кралство\ncountry in Western Europe",
    "prime minister": "prime minister <n>\nминистър-председател, премиер (разг.)\nhead of a "
                      "government",
}
ENG_POL = {"tank": "tank <N>\n 1.  czołg\n 2.  zbiornik", "election": "election <N>\n  wybory"}


@pytest.fixture
def dict_dir(tmp_path):
    write_pair(tmp_path, "freedict-eng-bul", ENG_BUL)
    write_pair(tmp_path, "freedict-eng-pol", ENG_POL)
    return tmp_path


def test_reads_every_pair_out_of_a_language(dict_dir):
    found = dictionary.load(dict_dir)
    assert set(found) == {"en"}
    en = found["en"]
    # Both pairs, sense numbers and stress marks gone, glosses and notes left out.
    assert en.words("tank") == {"танк", "резервоар", "czołg", "zbiornik"}
    assert en.words("kingdom") == {"кралство"}
    assert en.phrase(["prime", "minister"]) == (("министър", "председател"), ("премиер",))


def test_words_are_looked_up_by_their_dictionary_form(dict_dir):
    en = dictionary.load(dict_dir)["en"]
    assert "танк" in en.words("tanks")
    assert "wybory" in en.words("elections")
    assert en.words("tankers") == frozenset()  # no rule makes "tankers" a form of "tank"
    assert en.phrase(["united", "kingdom"]) == (("обединено", "кралство"),)
    assert en.phrase(["kingdom"]) == ()  # one word is words(), not a phrase


def test_a_missing_or_broken_folder_changes_nothing(tmp_path, caplog):
    assert dictionary.load(tmp_path / "nowhere") == {}
    write_pair(tmp_path, "freedict-eng-bul", ENG_BUL)
    (tmp_path / "freedict-eng-pol.index").write_text("tank\tA\tZZ\n", encoding="utf-8")
    (tmp_path / "freedict-eng-pol.dict.dz").write_bytes(b"not gzip")
    with caplog.at_level(logging.WARNING, logger="rag.lang.dictionary"):
        found = dictionary.load(tmp_path)
    assert found["en"].words("tank") == {"танк", "резервоар"}  # the good pair still read
    assert "freedict-eng-pol" in caplog.text and "skipped" in caplog.text
    # A gzip file whose body is damaged (not only its header) is skipped the same way.
    good = gzip.compress(bytes(range(256)) * 100)
    (tmp_path / "freedict-eng-pol.dict.dz").write_bytes(good[:20] + b"\xff" * 10 + good[30:])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag.lang.dictionary"):
        assert dictionary.load(tmp_path)["en"].words("tank") == {"танк", "резервоар"}
    assert "freedict-eng-pol" in caplog.text
    # Pairs out of a language without a pack, or other files, are ignored.
    write_pair(tmp_path, "freedict-xyz-bul", {"a": "a\nб"})
    assert set(dictionary.load(tmp_path)) == {"en"}


def test_dictionaries_load_once_and_only_when_asked(dict_dir, tmp_path, caplog):
    shared = dictionary.Dictionaries(dict_dir)
    assert shared._loaded is None
    assert shared.get("en") is shared.get("en") is not None
    assert shared.get("bg") is None
    assert dictionary.Dictionaries(None).all() == {}
    assert dictionary.Dictionaries(tmp_path / "empty").get("en") is None
    # One instance per folder, however it is spelled.
    assert dictionary.shared_dictionaries(dict_dir) is dictionary.shared_dictionaries(
        str(dict_dir / ".." / dict_dir.name))
    # A file where the folder should be: said so, and answering goes on without.
    with caplog.at_level(logging.INFO, logger="rag.lang.dictionary"):
        assert dictionary.Dictionaries(dict_dir / "freedict-eng-bul.index").all() == {}
    assert "is not a folder" in caplog.text


def test_the_sense_markers_of_an_entry_are_no_translations(tmp_path):
    write_pair(tmp_path, "freedict-eng-pol", {
        "can": "can <V>\n 1. a. móc\n b.\n 2.  puszka", "head": "head <N>\nI. <N> 1. głowa"})
    write_pair(tmp_path, "freedict-eng-bul", {"year": "year <n>\n1. годи́на, година 2.\nperiod"})
    en = dictionary.load(tmp_path)["en"]
    assert en.words("can") == {"móc", "puszka"}
    assert en.words("head") == {"głowa"}
    assert en.words("year") == {"година"}


def test_a_pack_with_malformed_inflections_is_rejected(tmp_path):
    import json

    from rag import lang

    data = json.loads((lang.LANG_DIR / "en.json").read_text(encoding="utf-8"))
    data["inflections"] = [["s"]]
    bad = tmp_path / "en.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RagError, match="inflections"):
        lang._load(bad)


# --- what translations change -----------------------------------------------------------------

UK_SAID = "Обединеното кралство заяви, че ще напусне съюза на 29 март."
OPEN = dataclasses.replace(refusal.default_model(), threshold=0.0)


def _decide(question: str, text: str, dictionary_: dictionary.Dictionary | None):
    chunk = Chunk(id="a:1", source="a", text=text, start=0, end=len(text), line_start=1,
                  line_end=1, language="bg")
    analysis = analyse(question, "en", dictionary_)
    sel = EvidenceSelector(HashEmbedder()).select(question, [Retrieved(chunk=chunk, rank=1,
                                                                       score=0.1)],
                                                  k=6, lang="en", analysis=analysis)
    return refusal.decide(sel, analysis, model=OPEN)


def test_a_translated_name_is_found_in_another_language(dict_dir):
    en = dictionary.load(dict_dir)["en"]
    question = "When will the United Kingdom leave the union?"
    without = _decide(question, UK_SAID, None)
    assert without.refuse and "'United Kingdom' is not in the articles" in without.reasons
    with_dict = _decide(question, UK_SAID, en)
    assert not any("not in the articles" in r for r in with_dict.reasons), with_dict.reasons


def test_a_name_the_dictionary_does_not_know_is_still_refused(dict_dir):
    en = dictionary.load(dict_dir)["en"]
    d = _decide("What did the Holy See say about the union?", UK_SAID, en)
    assert d.refuse and "'Holy See' is not in the articles" in d.reasons


def test_question_terms_carry_the_keys_of_their_translations(dict_dir):
    en = dictionary.load(dict_dir)["en"]
    plain = analyse("How many tanks were sent?", "en")
    translated = analyse("How many tanks were sent?", "en", en)
    assert [t.word for t in translated.counted] == ["tanks"]
    assert translated.counted[0].keys == plain.counted[0].keys | stems("танк") | stems(
        "резервоар") | stems("czołg") | stems("zbiornik")


@pytest.mark.skipif(not Path("/usr/share/dictd/freedict-eng-bul.index").exists(),
                    reason="needs Debian's dict-freedict-eng-bul (tests/run.sh installs it)")
def test_debians_english_bulgarian_dictionary():
    en = dictionary.load("/usr/share/dictd", sources=["en"])["en"]
    assert "танк" in en.words("tanks")
    assert "ваксина" in en.words("vaccines")
    assert ("обединено", "кралство") in en.phrase(["united", "kingdom"])


def test_a_translation_must_begin_the_counted_word(tmp_path):
    """"how many people": a far sense of a translation ("zaplnit", to fill) must not make an
    unrelated word ("заплаши", threatened) the counted thing and so hide the real count."""
    write_pair(tmp_path, "freedict-eng-ces", {"people": "people <n>\nzaplnit"})
    write_pair(tmp_path, "freedict-eng-bul", {"people": "people <n>\nхора\nhuman beings"})
    en = dictionary.load(tmp_path)["en"]
    analysis = analyse("How many people does the company employ?", "en", en)
    text = "Компанията заплаши да напусне страната, където работят около 14 000 души."
    assert refusal._counted_near_number(analysis.counted, text, 3)
    # The translation still finds the counted word in its inflected forms, and then the number
    # must stand next to it.
    assert refusal._counted_near_number(analysis.counted, "На площада имаше 300 хора.", 3)
    assert not refusal._counted_near_number(
        analysis.counted, "Бяха изпратени 300 полицаи и по улиците имаше много хората.", 3)


def test_a_translated_name_makes_the_article_about_it(tmp_path):
    """"How many members ... sent to China": the number must stand in an article about China,
    which a Bulgarian article calls Китай."""
    write_pair(tmp_path, "freedict-eng-bul", {"china": "China <prop>\nКитай\ncountry in Asia"})
    en = dictionary.load(tmp_path)["en"]
    question = "How many members does the expert team sent to China have?"
    text = "Екипът от 10 души ще пътува до Китай следващия месец."
    assert _decide(question, text, None).reasons == ("no quantity in the evidence",)
    assert not _decide(question, text, en).refuse


def test_digits_of_a_name_count_nothing():
    from rag.answering.kinds import satisfies

    assert not satisfies("quantity", "вирусът SARS-CoV-2, който причинява Covid-19")
    assert not satisfies("quantity", "на срещата на G7 и полета на F-16")
    assert satisfies("quantity", "екипът от 10 души")
    assert satisfies("quantity", "двама от тях, 2-ма лекари")  # a hyphen after digits is no name
    d = _decide("How many people are in the team?",
                "Екип заминава да разследва SARS-CoV-2, който причинява Covid-19.", None)
    assert d.reasons == ("no quantity in the evidence",)


def test_a_surname_that_is_also_a_word_is_not_found_by_its_translation(tmp_path):
    """"Gordon Brown" is not in an article about brown bears: a run of several words that is no
    headword needs each of its words, not only its last one translated."""
    write_pair(tmp_path, "freedict-eng-bul", {"brown": "brown <adj>\nкафяв\nof a colour"})
    en = dictionary.load(tmp_path)["en"]
    bears = "Кафявите мечки в парка са 40, заяви директорът."
    assert "'Gordon Brown' is not in the articles" in _decide(
        "What did Gordon Brown say about the park?", bears, en).reasons
    # Each word found, one of them translated: "Brown" of "Gordon Brown" there as "Гордън".
    assert not any("not in the articles" in r for r in _decide(
        "What did Gordon Brown say about the park?", "Гордън кафяв каза, че паркът е малък.",
        en).reasons)


def test_the_answerer_uses_the_dictionaries_it_is_given(dict_dir, settings_factory,
                                                         hash_embedder):
    from rag.answering.answer import Answerer

    chunk = Chunk(id="a:1", source="a.txt", text=UK_SAID, start=0, end=len(UK_SAID),
                  line_start=1, line_end=1, language="bg")

    class OnePassage:
        def retrieve(self, question, k=None):
            return [Retrieved(chunk=chunk, rank=1, score=0.1)]

    settings = settings_factory()
    question = "When will the United Kingdom leave the union?"
    with_dict = Answerer(OnePassage(), hash_embedder, settings,
                         dictionaries=dictionary.Dictionaries(dict_dir))
    assert any(n.translations for n in with_dict.analyse(question, "en").names)
    without = Answerer(OnePassage(), hash_embedder, settings)  # RAG_DICTIONARY_DIR is empty
    assert without.dictionaries.all() == {}
    assert not any(n.translations for n in without.analyse(question, "en").names)
    # warm() reads the dictionaries, so that the first question does not wait for them.
    fresh = dictionary.Dictionaries(dict_dir)
    Answerer(OnePassage(), hash_embedder, settings, dictionaries=fresh).warm([chunk])
    assert fresh._loaded


def test_a_common_word_is_one_the_dictionary_writes_in_lower_case(tmp_path):
    write_pair(tmp_path, "freedict-eng-bul", {
        "hospital": "hospital /ˈhɒs.pɪ.tl̩/ <n>\nболница\nmedical institution",
        "biden": "Biden /ˈbaɪdən/ <pn>\nБайдън\nsurname",
        "un-": "un- <prefix>\nне-\nnot",
        "jam": "jam <n>\nконфитюр\nfruit preserve",
        "james": "James <pn>\nЯков\nmale given name"})
    write_pair(tmp_path, "freedict-eng-ces", {"bill": "Bill <pn>\n [jmén] Vilém",
                                              "bills": "bills <n>\núčty"})
    en = dictionary.load(tmp_path)["en"]
    assert en.common("hospital") and en.common("hospitals")  # by its dictionary form too
    assert not en.common("biden")  # a proper noun only
    assert not en.common("szczecin")  # no entry at all
    assert not en.common("un")  # only a prefix
    # A word's own entries come first: "James" is a given name, whatever "jam" is.
    assert not en.common("james") and en.personal("james")
    assert not en.personal("jam") and not en.personal("hospital")
    assert en.personal("bill")  # the Czech pair's name tag
    assert en.common("bills") and not en.personal("bills")


POLISH_HOSPITAL = "Szpital Wojskowy w Szczecinie otrzymał do tej pory 75 dawek szczepionki."


def test_a_name_of_common_words_may_be_translated_so_it_only_weighs_in_the_score(tmp_path):
    """"the Military Hospital" of an English question is "Szpital Wojskowy" in a Polish
    article: not finding its spelling proves nothing, as for a one-word name. A person's name
    (a word the dictionary only knows as a proper noun, or does not know) still must be
    there."""
    write_pair(tmp_path, "freedict-eng-bul", {
        "military": "military <adj>\nвое́нен\nof soldiers",
        "hospital": "hospital <n>\nбо́лница\nmedical institution",
        "biden": "Biden <pn>\nБайдън\nsurname", "joe": "Joe <pn>\nДжо\ngiven name"})
    en = dictionary.load(tmp_path)["en"]
    question = "How many vaccine doses has the Military Hospital received?"
    without = _decide(question, POLISH_HOSPITAL, None)
    assert "'Military Hospital' is not in the articles" in without.reasons
    with_dict = _decide(question, POLISH_HOSPITAL, en)
    assert not any("not in the articles" in r for r in with_dict.reasons), with_dict.reasons
    assert with_dict.features[3] == 1.0  # counted with the one-word names the score weighs
    assert "'Joe Biden' is not in the articles" in _decide(
        "How many vaccine doses did Joe Biden receive?", POLISH_HOSPITAL, en).reasons


def test_a_person_whose_names_are_also_words_must_still_be_there(tmp_path):
    """"Bill Walker": both are words ("bill <n>", "walker <n>"), but the dictionary also knows
    Bill as a given name, so the run names a person, who is either in the passages or not."""
    write_pair(tmp_path, "freedict-eng-bul", {
        "bill": "Bill <pn>\nБилл\nmale given name\n\nbill <n>\nсметка\ninvoice",
        "walker": "walker <n>\nпешеходец\nperson who walks",
        "jack": "jack <n>\nкрик\nlifting device", "ma": "ma <n>\nмама\nmother"})
    en = dictionary.load(tmp_path)["en"]
    for name in ("Bill Walker", "Jack Ma"):  # "Ma" is too short to be judged a word
        analysis = analyse(f"How many doses did {name} receive?", "en", en)
        assert not analysis.names[0].common
        assert f"'{name}' is not in the articles" in _decide(
            f"How many doses did {name} receive?", POLISH_HOSPITAL, en).reasons
