"""One analysis of a question, computed once and passed to evidence selection, refusal and
citation checking: its language, the names it asks about, the kind of answer it wants, its content
terms, and whether it refers back to the conversation.

All language knowledge comes from the packs in rag/lang/ (question words, answer-type cues,
pronouns, months): nothing here names a word of one language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from rag import lang as lang_packs
from rag.answering.kinds import asked_types, asks_across_articles, is_calendar_word
from rag.lang import PERSON
from rag.lang.dictionary import Dictionary
from rag.lang.terms import (
    QUESTION_WORDS,
    STOPWORDS,
    Term,
    Token,
    content_terms,
    name_token_keys,
    stems,
    tokens,
)
from rag.lang.text import normalize, words

_HAS_CONTENT = re.compile(r"[^\W_]", re.UNICODE)  # a letter or a digit
# Punctuation that ends a sentence or a clause inside a question.
_SENTENCE_END = re.compile(r"[.!?…:\n]")
_CLAUSE_PUNCT = re.compile(r"[,;:?!.()–—]")


@dataclass(frozen=True)
class Name:
    """A run of capitalised words of the question ("Li Keqiang", "UN") and its spelling keys."""

    text: str
    keys: frozenset[str]  # keys of every word of the run
    words: tuple[str, ...]  # the case-folded words of the run that carry the name
    # Keys of the run's last word: the surname or head noun ("Гутерреш" of "Антоніу Гутерреш",
    # "Irish" of "Northern Irish"), which must be there for the name to be.
    head: frozenset[str] = frozenset()
    size: int = 1  # words in the run, short ones included ("Ли Кецян" is two)
    # A dictionary's translations of the whole run ("United Kingdom" -> "Обединено кралство"),
    # each as the keys of its words: the name is there when every word of one of them is.
    translations: tuple[tuple[frozenset[str], ...], ...] = ()
    # Every word is a common word of the question's language and none a person's name
    # ("Red Sea", "Central Hospital"): a description that other languages translate rather
    # than transliterate, so not finding its spelling in the passages does not mean it is absent.
    common: bool = False

    def translated_in(self, keys: set[str] | frozenset[str]) -> bool:
        """Whether every word of one of the name's translations is among `keys`."""
        return any(all(not k.isdisjoint(keys) for k in t) for t in self.translations)


@dataclass(frozen=True)
class QuestionAnalysis:
    """What a question asks, as every answering step needs it."""

    text: str  # the question as it is answered (the standalone form of a follow-up)
    language: str  # code of the question's language (rag.lang)
    names: tuple[Name, ...]  # names the articles must mention for an answer
    answer_types: tuple[str, ...]  # kinds of answer asked first ("quantity", "date", ...)
    all_answer_types: tuple[str, ...]  # every kind asked, also in a second question
    wants_person: bool  # "who ...?", "what is the name of ...?"
    terms: tuple[Term, ...]  # content terms, one per spelling key
    counted: tuple[Term, ...]  # the thing a "how many" question counts
    across_articles: bool  # "Which articles ...?": quote each article that says it
    refers_back: bool  # uses a pronoun or ellipsis that needs the conversation
    has_content: bool  # holds a letter or digit at all

    @property
    def question_keys(self) -> frozenset[str]:
        return frozenset().union(*(t.keys for t in self.terms)) if self.terms else frozenset()


def has_content(question: str) -> bool:
    return bool(_HAS_CONTENT.search(question or ""))


def refers_back(question: str, lang: str | None = None) -> bool:
    """Whether a follow-up needs the conversation to be understood: it uses a pronoun that
    refers back ("When did he arrive?") or starts as an ellipsis ("And when?", "What about
    Italy?"). A new question that merely is short ("Who is Angela Merkel?") does not."""
    q = normalize(question)
    langs = [lang] if lang in lang_packs.packs() else None
    rx = lang_packs.pattern("refer_back", langs)
    if rx is not None and rx.search(q):
        return True
    start = lang_packs.pattern("ellipsis_starts", langs)
    if start is not None and (m := start.match(q)) is not None:
        # "And when?" — an ellipsis start; "And who is Angela Merkel?" is one too, but only short
        # questions lean on the previous one.
        return len(words(q)) <= 4 or m.end() == len(q.rstrip("?!. "))
    # A question of only question words and function words ("Why?", "Кога?") asks about the
    # previous subject.
    ws = words(q)
    return bool(ws) and all(w in QUESTION_WORDS or w in STOPWORDS for w in ws)


def _sentence_starts(text: str, toks: list[Token]) -> set[int]:
    starts = {0}
    for i in range(1, len(toks)):
        gap = text[toks[i - 1].start + len(toks[i - 1].text):toks[i].start]
        if _SENTENCE_END.search(gap):
            starts.add(i)
    return starts


def _possessive(word: str) -> str:
    """"leff's" -> "leff": an English possessive is not part of the name."""
    return word[:-2] if word.endswith("'s") and len(word) > 3 else word


def _names(question: str, toks: list[Token]) -> list[Name]:
    """Runs of capitalised words that are not a sentence's first word, a function or question
    word, or a month/weekday; a run followed by an article word ("the Serbian article") names
    the source, not something the articles must mention."""
    from rag.lang.terms import unify

    text = unify(question)
    starts = _sentence_starts(text, toks)
    out: list[Name] = []
    run: list[Token] = []
    padded = [*toks, None]
    for i, t in enumerate(padded):
        capital = (t is not None and i not in starts and t.text[:1].isupper()
                   and not is_calendar_word(t.norm))
        if capital and (t.norm in STOPWORDS or t.norm in QUESTION_WORDS):
            # A capitalised function word inside a sentence is part of a name when another
            # capitalised word follows ("Ли Кецян"), else it is not one ("What did We ...").
            nxt = padded[i + 1]
            capital = (nxt is not None and i + 1 not in starts and nxt.text[:1].isupper()
                       and nxt.norm not in STOPWORDS)
        if capital:
            run.append(t)
            continue
        source = t is not None and lang_packs.matches("article_words", t.norm)
        useful = [r for r in run if len(r.norm) >= 3 or r.text.isupper()]
        if useful and not source:
            keys = [name_token_keys(_possessive(r.norm)) for r in useful]
            out.append(Name(" ".join(r.text for r in run), frozenset().union(*keys),
                            tuple(_possessive(r.norm) for r in useful), keys[-1], len(run)))
        run = []
    return out


def _counted(question: str, toks: list[Token], terms: list[Term]) -> list[Term]:
    """The first two content terms after "how many" that are not names, in the same clause."""
    count_words = lang_packs.words("count_words")
    trigger = next((i for i, t in enumerate(toks) if t.norm in count_words), None)
    if trigger is None:
        return []
    from rag.lang.terms import unify

    text = unify(question)
    end = next((i for i in range(trigger + 1, len(toks))
                if _CLAUSE_PUNCT.search(text[toks[i - 1].start + len(toks[i - 1].text):
                                             toks[i].start])), len(toks))
    # The counted noun phrase ends at the first function word ("how many shells were sent",
    # "колко снаряда бяха изпратени"); names are what the count is about, not the thing counted.
    stop = next((i for i in range(trigger + 1, end)
                 if toks[i].norm in STOPWORDS or toks[i].norm in QUESTION_WORDS), end)
    return [t for t in terms if trigger < t.position < min(end, stop) and not t.name][:2]


def _translations(word: str, dictionary: Dictionary) -> set[str]:
    """Spelling keys of a word's dictionary translations; translations of one or two letters
    ("по", "za") would be found in any passage and are left out."""
    return {k for t in dictionary.words(word) if len(t) >= 3 or t.isdigit() for k in stems(t)}


def _translated(term: Term, dictionary: Dictionary) -> Term:
    """The term with the spelling keys of its dictionary translations added."""
    if term.word.isdigit():
        return term
    extra = _translations(term.word, dictionary) - term.keys
    return replace(term, keys=term.keys | extra, translated=frozenset(extra)) if extra else term


def _translate_name(name: Name, dictionary: Dictionary) -> Name:
    """Ways the name may stand in another language, each as the keys of its words.

    A run of several words that is a headword gets its translations ("United Kingdom" ->
    "Обединено кралство"). Another run is there when each of its words is, spelled as in the
    question or translated ("Northern Irish" -> "Северна" + "ирландски"): the translation of
    its last word alone would let a surname that is also a word ("Brown") pass for the person.
    A one-word name gets its word's translations."""
    if not name.words:
        return name
    if name.size > 1:
        phrases = dictionary.phrase(name.words)
        if phrases:
            found = [tuple(frozenset(stems(w)) for w in p if len(w) >= 3 or w.isdigit())
                     for p in phrases]
        else:
            translated = [_translations(w, dictionary) for w in name.words]
            found = ([tuple(name_token_keys(w) | t for w, t in zip(name.words, translated,
                                                                     strict=True))]
                     if any(translated) else [])
    else:
        found = [(frozenset(stems(t)),) for t in sorted(dictionary.words(name.words[0]))
                 if len(t) >= 3]
    # Every word of the run counts, short ones included ("Jack Ma" keeps "Ma" out of `words`).
    common = (name.size > 1 and len(name.words) == name.size
              and all(dictionary.common(w) and not dictionary.personal(w) for w in name.words))
    return replace(name, translations=tuple(k for k in found if k), common=common)


def analyse(question: str, language: str,
            dictionary: Dictionary | None = None) -> QuestionAnalysis:
    """The analysis of one question (cheap: word lists, regexes and, when a dictionary out of
    the question's language is installed, its translations of the question's words)."""
    toks = tokens(question)
    terms = content_terms(question, language, unique=False)
    names = _names(question, toks)
    if dictionary is not None:
        terms = [_translated(t, dictionary) for t in terms]
        names = [_translate_name(n, dictionary) for n in names]
    unique_terms: list[Term] = []
    seen: set[frozenset[str]] = set()
    for t in terms:
        if t.keys not in seen:
            seen.add(t.keys)
            unique_terms.append(t)
    main, every = asked_types(question)
    # "Who" in the question's own language: another pack's cue may be a word of this one
    # (Serbian "кога", whom, is Macedonian and Bulgarian "when").
    person = lang_packs.pattern(f"type:{PERSON}",
                                language if language in lang_packs.packs() else None)
    return QuestionAnalysis(
        text=question,
        language=language,
        names=tuple(names),
        answer_types=tuple(main),
        all_answer_types=tuple(every),
        wants_person=bool(person and person.search(normalize(question))),
        terms=tuple(unique_terms),
        counted=tuple(_counted(question, toks, terms)),
        across_articles=asks_across_articles(question),
        refers_back=refers_back(question, language),
        has_content=has_content(question),
    )
