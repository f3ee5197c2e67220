"""The question set (`seeds/questions.jsonl`): its record type, loading and validation."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.eval.metrics import normalize_text
from rag.types import RagError

_FIELDS = ("id", "lang", "question", "sources", "facts", "evidence", "answerable")


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    question: str
    sources: tuple[str, ...] = ()
    facts: tuple[tuple[str, ...], ...] = ()
    evidence: tuple[str, ...] = ()
    answerable: bool = True

    @property
    def multi_article(self) -> bool:
        return self.answerable and len(self.sources) > 1

    @property
    def types(self) -> tuple[str, ...]:
        if not self.answerable:
            return ("unanswerable",)
        return ("answerable", "multi-article") if self.multi_article else ("answerable",)


def _str_list(obj: dict[str, Any], name: str, problems: list[str]) -> tuple[str, ...]:
    value = obj.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"'{name}' must be a list of non-empty strings")
        return ()
    return tuple(value)


def _parse_question(obj: Any) -> tuple[Question | None, list[str]]:
    if not isinstance(obj, dict):
        return None, [f"expected a JSON object, got {type(obj).__name__}"]
    problems: list[str] = []
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        problems.append(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_FIELDS)}"
        )
    qid = obj.get("id")
    if qid is None:
        problems.append("missing 'id'")
    elif not isinstance(qid, str) or not qid.strip():
        problems.append("'id' must be a non-empty string")
    text = obj.get("question")
    if not isinstance(text, str) or not text.strip():
        problems.append("missing question text ('question' must be a non-empty string)")
    lang = obj.get("lang")
    if not isinstance(lang, str) or not lang.strip():
        problems.append("'lang' must be a non-empty language code, e.g. \"en\"")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        problems.append("'answerable' must be true or false")
        answerable = True
    n_problems = len(problems)
    sources = _str_list(obj, "sources", problems)
    sources_ok = len(problems) == n_problems
    evidence = _str_list(obj, "evidence", problems)
    facts_raw = obj.get("facts", [])
    facts: tuple[tuple[str, ...], ...] = ()
    if not isinstance(facts_raw, list) or not all(
        isinstance(g, list) and g and all(isinstance(a, str) and a.strip() for a in g)
        for g in facts_raw
    ):
        problems.append("'facts' must be a list of groups, each a non-empty list of strings")
    else:
        facts = tuple(tuple(g) for g in facts_raw)
    dupes = sorted(s for s, n in Counter(sources).items() if n > 1)
    if dupes:
        problems.append(f"source(s) listed twice: {', '.join(dupes)}")
    if answerable and sources_ok and not sources:
        problems.append("an answerable question needs at least one file in 'sources'")
    if not answerable and (sources or facts or evidence):
        problems.append(
            "an unanswerable question must have empty 'sources', 'facts' and 'evidence'"
        )
    if problems:
        return None, problems
    question = Question(
        id=qid.strip(),
        lang=lang.strip().lower(),
        question=text.strip(),
        sources=sources,
        facts=facts,
        evidence=evidence,
        answerable=answerable,
    )
    return question, []


def _check_against_files(q: Question, data_dir: Path) -> list[str]:
    problems = []
    texts = []
    for source in q.sources:
        path = data_dir / source
        if not path.is_file():
            problems.append(f"source file not found: {path}")
        else:
            texts.append(normalize_text(path.read_text(encoding="utf-8", errors="replace")))
    if not problems:
        for phrase in q.evidence:
            if not any(normalize_text(phrase) in t for t in texts):
                problems.append(f"evidence phrase not found in its sources: {phrase!r}")
    return problems


def load_questions(path: str | Path, *, data_dir: str | Path | None = None) -> list[Question]:
    """Read and validate a JSONL question set; every problem is reported as `file:line: message`.

    With `data_dir`, also check that each source file exists there and that each evidence phrase
    occurs in one of the question's sources, which catches typos before a long run starts.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise RagError(f"cannot read question set {path}: {e.strerror or e}") from e
    questions: list[Question] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: invalid JSON: {e.msg} (column {e.colno})")
            continue
        q, errs = _parse_question(obj)
        if q is not None and q.id in seen:
            errs = [f"duplicate id {q.id!r} (first used on line {seen[q.id]})"]
        if q is not None and not errs and data_dir is not None:
            errs = _check_against_files(q, Path(data_dir))
        problems.extend(f"{where}: {e}" for e in errs)
        if q is not None and not errs:
            seen[q.id] = lineno
            questions.append(q)
    if problems:
        shown = problems[:20]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RagError(f"invalid question set {path}:\n" + "\n".join(shown) + more)
    if not questions:
        raise RagError(f"question set {path} holds no questions")
    return questions
