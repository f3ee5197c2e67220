"""Evaluation: metrics on hand-made cases, question-set checks, thresholds, run_eval end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.eval import evaluate as ev
from rag.eval.evaluate import (
    Question,
    answer_language_match,
    check_thresholds,
    citation_precision,
    citation_support,
    citation_validity,
    evidence_at_k,
    evidence_offset,
    evidence_within_chars,
    fact_recall,
    false_refusal,
    hit_at_k,
    load_questions,
    parse_citation_markers,
    parse_min,
    recall_at_k,
    reciprocal_rank,
    refusal_accuracy,
    run_eval,
    score_question,
    summarize,
    tokens_per_second,
)
from rag.types import Answer, Backend, Chunk, Citation, RagError, Retrieved, Timings

# --------------------------------------------------------------------------------------------
# Source-level retrieval metrics
# --------------------------------------------------------------------------------------------


def test_hit_at_k():
    ranked = ["a", "b", "c"]
    assert hit_at_k(ranked, ["a"], 1) == 1.0
    assert hit_at_k(ranked, ["c"], 2) == 0.0
    assert hit_at_k(ranked, ["c"], 3) == 1.0
    assert hit_at_k(ranked, ["c"], 10) == 1.0  # k beyond the list is fine
    assert hit_at_k([], ["a"], 5) == 0.0
    assert hit_at_k(ranked, [], 5) is None  # unanswerable: not applicable
    with pytest.raises(ValueError):
        hit_at_k(ranked, ["a"], 0)


def test_reciprocal_rank_counts_passages_including_duplicates():
    assert reciprocal_rank(["a", "b"], ["a"]) == 1.0
    assert reciprocal_rank(["x", "x", "b"], ["b"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "y"], ["b"]) == 0.0
    assert reciprocal_rank([], ["b"]) == 0.0
    assert reciprocal_rank(["a"], []) is None
    # Any expected source counts, the first one met decides.
    assert reciprocal_rank(["x", "b", "a"], ["a", "b"]) == 0.5


def test_recall_at_k_multi_source_and_duplicates():
    assert recall_at_k(["a", "a", "a", "b"], ["a", "b"], 3) == 0.5
    assert recall_at_k(["a", "a", "a", "b"], ["a", "b"], 4) == 1.0
    # A repeated source is counted once, never as two found sources.
    assert recall_at_k(["a", "a"], ["a", "b"], 5) == 0.5
    assert recall_at_k(["a"], ["a", "a"], 5) == 1.0  # duplicate expectations too
    assert recall_at_k([], ["a"], 5) == 0.0
    assert recall_at_k(["a"], [], 5) is None


def test_a_collapsed_passage_counts_for_every_article_that_carries_it():
    ranked = [["x"], ["copy1.txt", "gold.txt"], ["y"]]
    assert hit_at_k(ranked, ["gold.txt"], 1) == 0.0
    assert hit_at_k(ranked, ["gold.txt"], 2) == 1.0
    assert reciprocal_rank(ranked, ["gold.txt"]) == 0.5
    assert recall_at_k([["a", "b"]], ["a", "b", "c"], 1) == pytest.approx(2 / 3)
    # A plain string is one source, not a set of characters.
    assert hit_at_k(["ab"], ["a"], 1) == 0.0


# --------------------------------------------------------------------------------------------
# Passage-level evidence metrics
# --------------------------------------------------------------------------------------------


def test_evidence_at_k_case_and_whitespace_insensitive():
    texts = ["Nothing here.", "Почти 5 МИЛИОНА\n  артилерийски   снаряда бяха изпратени"]
    assert evidence_at_k(texts, ["5 милиона артилерийски снаряда"], 2) == 1.0
    assert evidence_at_k(texts, ["5 милиона артилерийски снаряда"], 1) == 0.0
    assert evidence_at_k(texts, ["absent", "nothing HERE"], 1) == 1.0  # any phrase counts
    assert evidence_at_k([], ["x"], 3) == 0.0
    assert evidence_at_k(texts, [], 3) is None
    assert evidence_at_k(texts, ["   "], 3) is None  # blank phrases are no evidence


def test_evidence_offset_and_within_chars():
    first = "x" * 100
    second = "aaa the answer bbb"
    texts = [first, second]
    # 100 chars + 1 separator + "aaa the answer" (14) = 115 characters read.
    assert evidence_offset(texts, ["the answer"]) == 115
    assert evidence_within_chars(texts, ["the answer"], 115) == 1.0
    assert evidence_within_chars(texts, ["the answer"], 114) == 0.0
    assert evidence_within_chars(texts, ["the answer"]) == 1.0  # default 2000
    assert evidence_within_chars(texts, []) is None
    assert evidence_within_chars([], ["x"]) == 0.0
    # The earliest phrase wins; later duplicates of a passage do not matter.
    assert evidence_offset(["a b c", "a b c"], ["c", "a"]) == 1


def test_evidence_straddling_two_passages_does_not_count():
    texts = ["the first half of the ans", "wer is here"]
    assert evidence_within_chars(texts, ["the answer is here"], 2000) == 0.0
    assert evidence_offset(texts, ["ans wer"]) is None
    assert evidence_at_k(texts, ["answer is"], 2) == 0.0


def test_evidence_within_chars_rejects_bad_n():
    with pytest.raises(ValueError):
        evidence_within_chars(["a"], ["a"], 0)


# --------------------------------------------------------------------------------------------
# Answer metrics
# --------------------------------------------------------------------------------------------


def test_fact_recall():
    facts = [["5 million", "5 милиона"], ["ballistic missile", "балистични ракети"]]
    assert fact_recall("Nearly 5 MILLION shells and ballistic\nmissiles.", facts) == 1.0
    assert fact_recall("Около 5 милиона снаряда.", facts) == 0.5
    assert fact_recall("", facts) == 0.0
    assert fact_recall(None, facts) == 0.0
    assert fact_recall("anything", []) is None
    assert fact_recall("anything", [[""]]) is None  # a group of blanks is no fact


def test_parse_citation_markers():
    assert parse_citation_markers("A [1]. B [2, 3]. C [4-6] D [7–8]") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert parse_citation_markers("repeat [1][1] and [ 2 ,3 ]") == [1, 1, 2, 3]
    assert parse_citation_markers("mixed [1, 3-4]") == [1, 3, 4]
    assert parse_citation_markers("reversed [5-3] kept by its ends") == [5, 3]
    assert parse_citation_markers("absurd [1-100000]") == [1, 100000]
    assert parse_citation_markers("") == []
    assert parse_citation_markers(None) == []
    assert parse_citation_markers("not markers: [a] [] [1.5] (1)") == []


def test_citation_validity():
    assert citation_validity("x [1] y [2]", 2) == 1.0
    assert citation_validity("x [1] y [3]", 2) == 0.5  # [3] is out of range
    assert citation_validity("x [1-4]", 2) == 0.5
    assert citation_validity("x [0]", 2) == 0.0
    assert citation_validity("x [2] [5]", {2, 5}) == 1.0  # the numbers citations actually carry
    assert citation_validity("no markers", 3) is None
    assert citation_validity("", 3) is None
    assert citation_validity("x [1]", 0) == 0.0


def test_citation_precision():
    assert citation_precision(["a", "b"], ["a"]) == 0.5
    assert citation_precision(["a", "a"], ["a", "c"]) == 1.0
    assert citation_precision([], ["a"]) is None
    assert citation_precision(["a"], []) is None


def _cit(n: int, source: str, quote: str, start: int = 0, chunk_id: str = "c1") -> dict:
    return {"n": n, "source": source, "chunk_id": chunk_id, "quote": quote,
            "start": start, "end": start + len(quote)}


def test_citation_support_with_dict_and_callable():
    files = {"a.txt": "Hello world. The answer is 42."}
    good = _cit(1, "a.txt", "The answer is 42.", 13)
    wrong_quote = _cit(2, "a.txt", "The answer is 43.", 13)
    unknown_file = _cit(3, "b.txt", "Hello")
    empty = _cit(4, "a.txt", "")
    assert citation_support([good], files) == 1.0
    assert citation_support([good, wrong_quote, unknown_file, empty], files) == 0.25
    assert citation_support([good, wrong_quote], files.get) == 0.5
    assert citation_support([], files) is None

    def raising(source: str) -> str:
        raise OSError("gone")

    assert citation_support([good], raising) == 0.0


def test_citation_support_offsets_and_records():
    files = {"a.txt": "The answer. The answer."}
    at_second = _cit(1, "a.txt", "The answer.", 12)
    misplaced = _cit(2, "a.txt", "The answer.", 3)
    assert citation_support([at_second, misplaced], files) == 1.0  # substring only
    assert citation_support([at_second, misplaced], files, check_offsets=True) == 0.5
    # Citation records are accepted as well as their JSON form.
    record = Citation(1, "a.txt", "c1", 0, 11, (1, 1), "The answer.", 1.0)
    assert citation_support([record], files, check_offsets=True) == 1.0
    assert citation_support([record], {"c1": "The answer."}, key="chunk_id") == 1.0


def test_refusal_metrics():
    assert refusal_accuracy(answerable=False, refused=True) == 1.0
    assert refusal_accuracy(answerable=False, refused=False) == 0.0
    assert refusal_accuracy(answerable=True, refused=True) is None
    assert false_refusal(answerable=True, refused=True) == 1.0
    assert false_refusal(answerable=True, refused=False) == 0.0
    assert false_refusal(answerable=False, refused=True) is None


def test_answer_language_match():
    assert answer_language_match("bg", "bg") == 1.0
    assert answer_language_match("EN", "en-US") == 1.0
    assert answer_language_match("hr", "sr") == 1.0  # folded like the language identifier does
    assert answer_language_match("en", "bg") == 0.0
    assert answer_language_match("", "bg") is None
    assert answer_language_match(None, "bg") is None


def test_tokens_per_second():
    assert tokens_per_second({"eval_count": 50, "eval_duration": 2_000_000_000}, {}) == 25.0
    timings = {"retrieve_ms": 100, "first_token_ms": 500, "total_ms": 2500}
    assert tokens_per_second({"completion_tokens": 40}, timings) == 20.0
    assert tokens_per_second({"completion_tokens": 9}, {"retrieve_ms": 100, "total_ms": 1000}) == 10
    assert tokens_per_second({}, timings) is None
    assert tokens_per_second(None, None) is None
    assert tokens_per_second({"tokens_per_s": 7}, {}) == 7.0


# --------------------------------------------------------------------------------------------
# Question set loading
# --------------------------------------------------------------------------------------------

GOOD = {
    "id": "q01", "lang": "en", "question": "How many shells?", "sources": ["a.txt"],
    "facts": [["5 million", "5 милиона"]], "evidence": ["5 милиона снаряда"], "answerable": True,
}
UNANSWERABLE = {"id": "q02", "lang": "bg", "question": "Кой спечели?", "sources": [], "facts": [],
                "evidence": [], "answerable": False}


def _write(tmp_path: Path, *objs: object, raw: str = "") -> Path:
    path = tmp_path / "questions.jsonl"
    lines = [json.dumps(o, ensure_ascii=False) for o in objs]
    path.write_text("\n".join(lines) + "\n" + raw, encoding="utf-8")
    return path


def test_load_questions_ok(tmp_path):
    multi = {**GOOD, "id": "q03", "sources": ["a.txt", "b.txt"]}
    path = _write(tmp_path, GOOD, UNANSWERABLE, multi)
    path.write_text(path.read_text() + "\n\n", encoding="utf-8")  # trailing blank lines are fine
    qs = load_questions(path)
    assert [q.id for q in qs] == ["q01", "q02", "q03"]
    assert qs[0] == Question("q01", "en", "How many shells?", ("a.txt",),
                             (("5 million", "5 милиона"),), ("5 милиона снаряда",), True)
    assert qs[0].types == ("answerable",)
    assert qs[1].types == ("unanswerable",)
    assert qs[2].types == ("answerable", "multi-article")
    with pytest.raises(AttributeError):
        qs[0].id = "x"  # frozen


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({**GOOD, "type": "x"}), "unknown field(s) 'type'"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "id"}), "missing 'id'"),
        (json.dumps({**GOOD, "id": 7}), "'id' must be a non-empty string"),
        (json.dumps({**GOOD, "question": "  "}), "missing question text"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "question"}), "missing question text"),
        (json.dumps({**GOOD, "sources": []}), "answerable question needs at least one file"),
        (json.dumps({**GOOD, "sources": "a.txt"}), "'sources' must be a list"),
        (json.dumps({**GOOD, "sources": ["a.txt", "a.txt"]}), "listed twice"),
        (json.dumps({**GOOD, "facts": ["5 million"]}), "'facts' must be a list of groups"),
        (json.dumps({**GOOD, "facts": [[]]}), "'facts' must be a list of groups"),
        (json.dumps({**GOOD, "evidence": [1]}), "'evidence' must be a list"),
        (json.dumps({**GOOD, "answerable": "yes"}), "'answerable' must be true or false"),
        (json.dumps({**GOOD, "lang": ""}), "'lang' must be"),
        (json.dumps({**UNANSWERABLE, "sources": ["a.txt"]}), "unanswerable question must have"),
    ],
)
def test_load_questions_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, UNANSWERABLE, raw=line + "\n")
    with pytest.raises(RagError) as err:
        load_questions(path)
    assert f"{path}:2: " in str(err.value)
    assert message in str(err.value)


def test_load_questions_duplicate_id_and_all_problems_reported(tmp_path):
    path = _write(tmp_path, GOOD, {**GOOD, "question": "again"}, {**GOOD, "id": "q9", "lang": 3})
    with pytest.raises(RagError) as err:
        load_questions(path)
    text = str(err.value)
    assert f"{path}:2: duplicate id 'q01' (first used on line 1)" in text
    assert f"{path}:3: 'lang' must be" in text


def test_load_questions_missing_and_empty_files(tmp_path):
    with pytest.raises(RagError, match="cannot read question set"):
        load_questions(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(RagError, match="holds no questions"):
        load_questions(tmp_path / "empty.jsonl")


def test_load_questions_checks_sources_and_evidence_against_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("Почти 5 МИЛИОНА\nснаряда бяха изпратени.", encoding="utf-8")
    path = _write(tmp_path, GOOD)
    assert load_questions(path, data_dir=data)[0].id == "q01"
    with pytest.raises(RagError, match="source file not found"):
        load_questions(_write(tmp_path, {**GOOD, "sources": ["zzz.txt"]}), data_dir=data)
    with pytest.raises(RagError, match="evidence phrase not found"):
        load_questions(_write(tmp_path, {**GOOD, "evidence": ["6 милиона"]}), data_dir=data)


# --------------------------------------------------------------------------------------------
# score_question / summarize
# --------------------------------------------------------------------------------------------

Q_MULTI = Question("m1", "en", "q?", ("a.txt", "b.txt"), (("alpha",), ("beta",)), ("alpha is",))
Q_NONE = Question("u1", "bg", "q?", answerable=False)


def _hit(rank: int, source: str, text: str, chunk_id: str | None = None) -> dict:
    cid = chunk_id or f"{source}#{rank}"
    return {"rank": rank, "source": source, "chunk_id": cid, "text": text}


def test_score_question_retrieval_only():
    record = {"retrieved": [_hit(2, "b.txt", "beta"), _hit(1, "x.txt", "alpha is here")],
              "retrieve_ms": 12.5}
    s = score_question(Q_MULTI, record, k=2)
    # Sorted by rank: x.txt then b.txt.
    assert s["hit@1"] == 0.0 and s["hit@2"] == 1.0 and s["mrr"] == 0.5
    assert s["recall@2"] == 0.5
    assert s["evidence@2"] == 1.0 and s["evidence@2000chars"] == 1.0
    assert s["retrieve_ms"] == 12.5
    assert "total_ms" not in s and "tokens_per_s" not in s  # no generation, no columns
    assert "fact_recall" not in s  # no answer, no answer metrics


def test_a_phrase_in_a_hits_context_counts_and_a_context_quote_is_supported():
    hit = {**_hit(1, "a.txt", "the meeting opened", "a#1"), "start": 100,
           "context": [{"chunk_id": "a#2", "start": 200, "end": 220, "lines": [3, 3],
                        "text": "alpha is the answer"}]}
    s = score_question(Q_MULTI, {"retrieved": [hit]}, k=1)
    assert s["evidence@1"] == 1.0  # "alpha is" stands in the context passage
    record = {"answer": "Alpha [1].", "language": "en", "insufficient_context": False,
              "citations": [_cit(1, "a.txt", "alpha is", 0, "a#2")], "retrieved": [hit]}
    assert score_question(Q_MULTI, record, k=1)["citation_support"] == 1.0
    without = {**hit, "context": []}
    assert score_question(Q_MULTI, {"retrieved": [without]}, k=1)["evidence@1"] == 0.0


def test_score_question_answer_record():
    record = {
        "answer": "Alpha and beta [1]. More [2] and [9].",
        "language": "en",
        "insufficient_context": False,
        "citations": [_cit(1, "a.txt", "alpha is", 0, "a.txt#1"),
                      _cit(2, "x.txt", "nope", 0, "x#2")],
        "retrieved": [_hit(1, "a.txt", "alpha is here", "a.txt#1"),
                      _hit(2, "x.txt", "other", "x#2")],
        "timings": {"retrieve_ms": 10, "first_token_ms": 110, "total_ms": 1110},
        "usage": {"completion_tokens": 30},
    }
    s = score_question(Q_MULTI, record, k=5)
    assert s["fact_recall"] == 1.0
    assert s["citation_validity"] == pytest.approx(2 / 3)  # [9] points at nothing
    assert s["citation_precision"] == 0.5
    assert s["citation_support"] == 0.5  # "nope" is not in chunk x#2
    assert s["refusal_accuracy"] is None and s["false_refusal_rate"] == 0.0
    assert s["answer_language_match"] == 1.0
    assert s["recall@5"] == 0.5
    assert s["tokens_per_s"] == 30.0
    # With file texts, support is checked at the file offsets instead.
    s2 = score_question(Q_MULTI, record, source_texts={"a.txt": "alpha is", "x.txt": "nope"})
    assert s2["citation_support"] == 1.0


def test_score_question_unanswerable_and_empty_answer():
    refused = {"answer": "", "language": "bg", "insufficient_context": True, "retrieved": []}
    s = score_question(Q_NONE, refused)
    assert s["refusal_accuracy"] == 1.0
    assert s["false_refusal_rate"] is None
    assert s["hit@1"] is None and s["mrr"] is None and s["fact_recall"] is None
    assert s["citation_validity"] is None and s["citation_precision"] is None
    empty = {"answer": "", "insufficient_context": False, "retrieved": []}
    s = score_question(Q_MULTI, empty)
    assert s["fact_recall"] == 0.0 and s["hit@5"] == 0.0 and s["evidence@5"] == 0.0
    assert s["answer_language_match"] is None


def _row(qid, lang, answerable, scores, sources=("a",)):
    return {"id": qid, "lang": lang, "answerable": answerable,
            "expected_sources": list(sources) if answerable else [], "scores": scores}


def test_summarize_averages_only_where_applicable():
    rows = [
        _row("1", "en", True, {"hit@1": 1.0, "refusal_accuracy": None, "total_ms": 100.0}),
        _row("2", "en", True, {"hit@1": 0.0, "refusal_accuracy": None, "total_ms": 300.0},
             sources=("a", "b")),
        _row("3", "bg", False, {"hit@1": None, "refusal_accuracy": 1.0, "total_ms": 200.0}),
    ]
    out = summarize(rows)
    o = out["overall"]
    assert o["n"] == 3 and o["n_answerable"] == 2 and o["n_unanswerable"] == 1
    assert o["hit@1"] == 0.5 and o["refusal_accuracy"] == 1.0
    assert o["counts"] == {"hit@1": 2, "refusal_accuracy": 1, "total_ms": 3}
    assert o["total_ms_p50"] == 200.0 and o["total_ms_p95"] == 290.0
    assert out["by_language"]["bg"]["hit@1"] is None
    assert out["by_language"]["en"]["hit@1"] == 0.5
    assert out["by_type"]["multi-article"]["n"] == 1
    assert out["by_type"]["multi-article"]["hit@1"] == 0.0
    assert out["by_type"]["unanswerable"]["refusal_accuracy"] == 1.0


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------


def test_parse_min():
    assert parse_min(["hit@5=1.0", "mrr=0.5, bg:fact_recall=0.6"]) == {
        "hit@5": 1.0, "mrr": 0.5, "bg:fact_recall": 0.6}
    assert parse_min([]) == {}
    for bad, message in [("hit@5", "expected METRIC=VALUE"), ("=1", "expected METRIC=VALUE"),
                         ("hit@5=", "expected METRIC=VALUE"), ("hit@5=high", "not a number"),
                         ("hit@5=nan", "finite")]:
        with pytest.raises(RagError, match=message):
            parse_min([bad])
    with pytest.raises(RagError, match="given twice"):
        parse_min(["mrr=0.1", "mrr=0.2"])


SUMMARY = {
    "overall": {"n": 2, "hit@1": 0.5, "hit@5": 1.0, "mrr": 0.75, "fact_recall": None,
                "false_refusal_rate": 0.1, "total_ms_p50": 900.0, "counts": {}},
    "by_language": {"bg": {"n": 1, "hit@1": 0.0, "hit@5": 1.0}},
    "by_type": {"answerable": {"n": 2, "hit@1": 0.5}},
}


def test_check_thresholds():
    assert check_thresholds(SUMMARY, {"hit@5": 1.0, "mrr": 0.7}) == []
    fails = check_thresholds(SUMMARY, {"hit@1": 0.6})
    assert fails == ["hit@1 = 0.5 is below the minimum 0.6"]
    assert check_thresholds(SUMMARY, {"bg:hit@1": 0.1}) == ["bg:hit@1 = 0 is below the minimum 0.1"]
    assert check_thresholds(SUMMARY, {"answerable:hit@1": 0.5}) == []
    (unknown,) = check_thresholds(SUMMARY, {"hit@7": 0.5})
    assert "unknown metric 'hit@7'" in unknown and "hit@5" in unknown and "mrr" in unknown
    (group,) = check_thresholds(SUMMARY, {"xx:hit@1": 0.5})
    assert "unknown group 'xx'" in group and "bg" in group
    (missing,) = check_thresholds(SUMMARY, {"fact_recall": 0.5})
    assert "not measured" in missing
    (wrong_way,) = check_thresholds(SUMMARY, {"false_refusal_rate": 0.0})
    assert "lower-is-better" in wrong_way
    assert check_thresholds(SUMMARY, {}, {"false_refusal_rate": 0.2, "total_ms_p50": 1000}) == []
    (too_slow,) = check_thresholds(SUMMARY, {}, {"total_ms_p50": 500})
    assert "above the maximum 500" in too_slow
    (no_judge,) = check_thresholds(SUMMARY, {"faithfulness": 0.9})
    assert "no judge" in no_judge


# --------------------------------------------------------------------------------------------
# run_eval end to end with a fake pipeline
# --------------------------------------------------------------------------------------------

def _approx(x: float):
    return pytest.approx(x, abs=1e-4)  # summaries round to 4 decimals


CORPUS = {
    "a.txt": "Alpha news. The answer is forty-two.",
    "b.txt": "Beta news. Tanks were sent.",
    "c.txt": "Gamma news. Nothing relevant.",
}


def _chunk(source: str) -> Chunk:
    text = CORPUS[source]
    return Chunk(id=f"{source}#0", source=source, text=text, start=0, end=len(text),
                 line_start=1, line_end=1, language="en")


class FakePipeline:
    """Ranks files by a scripted order per question and answers with a scripted text."""

    def __init__(self, script: dict[str, tuple[list[str], str, bool]], lang: str = "en"):
        self.script = script
        self.lang = lang
        self.calls = 0

    def retrieve(self, question: str, k: int) -> list[Retrieved]:
        self.calls += 1
        order, _, _ = self.script[question]
        if order == ["boom"]:
            raise RuntimeError("index exploded")
        return [Retrieved(_chunk(s), rank, 1.0 / rank) for rank, s in enumerate(order[:k], 1)]

    def ask(self, question: str) -> Answer:
        hits = self.retrieve(question, 3)
        _, text, refused = self.script[question]
        cits = []
        if not refused and hits:
            top = hits[0].chunk
            quote = top.text.split(". ")[1]
            start = top.text.index(quote)
            end = start + len(quote)
            cits.append(Citation(1, top.source, top.id, start, end, (1, 1), quote, 0.9))
        return Answer(
            question=question, answer=text, language=self.lang, mode="extractive",
            insufficient_context=refused, citations=tuple(cits), retrieved=tuple(hits),
            backend=Backend("scripted", "fake"),
            timings=Timings(retrieve_ms=5.0, first_token_ms=50.0, total_ms=250.0),
            usage={"completion_tokens": 20},
        )


QUESTIONS = [
    Question("q1", "en", "What is the answer?", ("a.txt",), (("forty-two", "42"),),
             ("answer is forty-two",)),
    Question("q2", "bg", "What was sent?", ("b.txt",), (("tanks",),), ("tanks were sent",)),
    Question("q3", "en", "Both?", ("a.txt", "b.txt"), (("alpha",), ("beta",)), ("alpha news",)),
    Question("q4", "bg", "Who won the lottery?", answerable=False),
]
SCRIPT = {
    "What is the answer?": (["a.txt", "c.txt", "b.txt"], "The answer is forty-two [1].", False),
    "What was sent?": (["c.txt", "b.txt", "a.txt"], "Nothing useful [1] [4].", False),
    "Both?": (["a.txt", "a.txt", "c.txt"], "", True),
    "Who won the lottery?": (["c.txt", "a.txt", "b.txt"], "Insufficient context.", True),
}


def test_run_eval_end_to_end(tmp_path):
    out = tmp_path / "run"
    settings = {"embed_model": "e5", "chunk_size": 110, "data_dir": Path("x")}
    summary = run_eval(FakePipeline(SCRIPT), QUESTIONS, out, k=3, progress=False,
                       settings_dict=settings)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4"]
    for key in ("id", "question", "lang", "retrieved", "answer", "citations",
                "insufficient_context", "backend", "timings", "scores"):
        assert key in rows[0]
    assert rows[0]["backend"] == {"name": "scripted", "model": "fake"}

    saved = json.loads((out / "summary.json").read_text())
    assert {"overall", "by_language", "by_type", "settings", "run"} <= set(saved)
    assert saved["settings"]["data_dir"] == "x"
    o = summary["overall"]
    assert o["n"] == 4 and o["n_answerable"] == 3
    assert o["hit@1"] == _approx(2 / 3)
    assert o["hit@3"] == 1.0
    assert o["mrr"] == _approx((1 + 0.5 + 1) / 3)
    assert o["recall@3"] == _approx((1 + 1 + 0.5) / 3)
    assert o["refusal_accuracy"] == 1.0 and o["counts"]["refusal_accuracy"] == 1
    assert o["false_refusal_rate"] == _approx(1 / 3)
    assert o["fact_recall"] == _approx(1 / 3)
    # q2 cites [1] and [4] with one citation: one valid marker of two; q1's marker is valid.
    assert o["citation_validity"] == _approx(0.75)
    assert o["citation_precision"] == 0.5  # q1 cites a.txt (right), q2 cites c.txt (wrong)
    assert o["citation_support"] == 1.0
    assert o["total_ms_p50"] == 250.0 and o["first_token_ms_p95"] == 50.0
    assert o["tokens_per_s"] == 100.0
    assert summary["by_language"]["en"]["answer_language_match"] == 1.0
    assert summary["by_language"]["bg"]["answer_language_match"] == 0.0
    assert summary["by_type"]["multi-article"]["n"] == 1
    assert summary["run"]["k"] == 3 and summary["run"]["backends"] == {"scripted/fake": 4}
    assert summary["run"]["peak_rss_mb"] > 0

    report = (out / "report.md").read_text()
    assert "| metric | overall | bg | en |" in report
    assert "| hit@1 | 0.667 |" in report
    assert "## Worst 5 questions" in report and "q2" in report
    assert "| chunk_size | 110 |" in report
    for name in ("retrieval.png", "answers.png", "latency.png"):
        assert (out / name).stat().st_size > 1000
        assert f"]({name})" in report
    assert check_thresholds(summary, {"hit@3": 1.0}) == []
    assert check_thresholds(summary, {"hit@1": 1.0}) != []


def test_run_eval_retrieval_only_with_baseline_and_errors(tmp_path):
    ours = FakePipeline(SCRIPT)
    base_script = {**SCRIPT, "What is the answer?": (["boom"], "", False),
                   "What was sent?": (["b.txt"], "", False)}
    base = FakePipeline(base_script)
    summary = run_eval(ours, QUESTIONS, tmp_path, k=2, retrieval_only=True, baseline=base,
                       progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert rows[0]["answer"] is None and rows[0]["timings"]["retrieve_ms"] >= 0
    assert "fact_recall" not in summary["overall"]
    assert "total_ms_p50" not in summary["overall"] and "retrieve_ms_p50" in summary["overall"]
    b = summary["baseline"]
    assert b["overall"]["errors"] == 1
    # The failed question scores as a miss, not as "not applicable".
    assert b["overall"]["counts"]["hit@1"] == 3
    assert b["overall"]["hit@1"] == _approx(2 / 3)
    assert summary["overall"]["hit@1"] == _approx(2 / 3)
    assert b["ratios"]["hit@1"] == 1.0
    assert b["ratios"]["mrr"] == _approx(round((2.5 / 3) / (2 / 3), 3))
    base_rows = (tmp_path / "results_baseline.jsonl").read_text().splitlines()
    assert "index exploded" in json.loads(base_rows[0])["error"]
    report = (tmp_path / "report.md").read_text()
    assert "## Compared with the baseline" in report and "| mrr | " in report
    assert not (tmp_path / "answers.png").exists()
    assert (tmp_path / "baseline.png").stat().st_size > 1000
    assert (tmp_path / "retrieval.png").stat().st_size > 1000


def test_run_eval_judge_reported_apart(tmp_path):
    seen = []

    def judge(question: str, answer: str, evidence: list[str]) -> bool:
        seen.append((question, evidence))
        return "forty-two" in answer

    summary = run_eval(FakePipeline(SCRIPT), QUESTIONS, tmp_path, k=3, progress=False,
                       judge=judge)
    # Refused answers are not judged; the two answered questions are.
    assert [q for q, _ in seen] == ["What is the answer?", "What was sent?"]
    assert seen[0][1] == ["The answer is forty-two."]  # the cited quote is the evidence
    assert summary["judge"] == {"faithfulness": 0.5, "n": 2, "errors": 0}
    assert "faithfulness" not in summary["overall"]
    assert check_thresholds(summary, {"faithfulness": 0.5}) == []
    assert "LLM judge" in (tmp_path / "report.md").read_text()


def test_run_eval_rejects_bad_input(tmp_path):
    with pytest.raises(RagError):
        run_eval(FakePipeline(SCRIPT), [], tmp_path, progress=False)
    with pytest.raises(ValueError):
        run_eval(FakePipeline(SCRIPT), QUESTIONS, tmp_path, k=0, progress=False)


def test_git_commit_outside_a_repo_is_none(tmp_path):
    assert ev.git_commit(tmp_path) is None


def test_run_eval_masks_credentials_in_settings(tmp_path):
    settings = {"auth_password": "hunter2", "openai_api_key": "sk-1", "auth_user": None,
                "backend": "ollama"}
    summary = run_eval(FakePipeline(SCRIPT), QUESTIONS[:1], tmp_path, progress=False,
                       settings_dict=settings)
    assert summary["settings"] == {"auth_password": "***", "openai_api_key": "***",
                                   "auth_user": None, "backend": "ollama"}
    assert "hunter2" not in (tmp_path / "summary.json").read_text()
    assert "hunter2" not in (tmp_path / "report.md").read_text()


def test_run_eval_keeps_records_of_an_interrupted_run(tmp_path):
    class Interrupting(FakePipeline):
        def ask(self, question: str) -> Answer:
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().ask(question)

    with pytest.raises(KeyboardInterrupt):
        run_eval(Interrupting(SCRIPT), QUESTIONS, tmp_path, progress=False)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["q1", "q2"]


def test_format_summary_is_an_aligned_text_table(tmp_path):
    base = FakePipeline({**SCRIPT, "What was sent?": (["b.txt"], "Tanks [1].", False)})
    summary = run_eval(FakePipeline(SCRIPT), QUESTIONS, tmp_path, k=3, baseline=base,
                       progress=False)
    text = ev.format_summary(summary)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "overall", "bg", "en", "baseline", "ours/base"]
    hit1 = next(line for line in lines if line.startswith("hit@1 "))
    assert hit1.split() == ["hit@1", "0.667", "0.000", "1.000", "1.000", "0.67×"]
    assert any(line.startswith("total_ms_p50 ↓") for line in lines)


def test_run_eval_warns_when_the_pipeline_retrieves_fewer_than_k(tmp_path, caplog):
    run_eval(FakePipeline(SCRIPT), QUESTIONS[:2], tmp_path, k=5, progress=False)
    assert "fewer than k=5" in caplog.text
