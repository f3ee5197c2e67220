"""Prompt templates and user-facing phrases, read from rag/data/prompts/ (settings.prompts_dir).

Template syntax: `{name}` is a variable (a Python identifier in single braces); `{{` and `}}` are
literal braces. Any other brace is left alone, so prose or JSON examples in a prompt need no
escaping. Substitution is a single pass: a value containing `{question}` is inserted verbatim,
never expanded again (evidence text is untrusted article content).

`Prompt.format()` is strict both ways: a variable the file uses but the caller did not pass, and a
variable the caller passed that the file does not use, are both errors. Editing a prompt file so
that it drops or invents a variable therefore fails loudly instead of silently changing answers.

Phrases (`phrases.json`) are keyed by phrase, then by language code; a language without its own
text falls back to English. The phrases every answer needs in its own language (the refusal, the
extractive lead-in, the request to rephrase, the language's name) come from the language packs
(`rag/lang/<code>.json`); a `phrases.json` entry for the same key and language overrides them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from rag import lang as lang_packs
from rag.types import Evidence, RagError

log = logging.getLogger(__name__)

def packaged_prompts_dir() -> Path:
    """The prompt files shipped inside the package (rag/data/prompts), wherever it is
    installed: an editable checkout or a wheel in site-packages."""
    return Path(str(resources.files("rag").joinpath("data", "prompts")))


DEFAULT_PROMPTS_DIR = packaged_prompts_dir()
PHRASES_FILE = "phrases.json"
FALLBACK_LANGUAGE = "en"
# The languages answers are given in (defined once, by the language packs).
LANGUAGES = lang_packs.LANGUAGES

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _prompts_dir(settings_or_dir: Any) -> Path:
    if settings_or_dir is None:
        return DEFAULT_PROMPTS_DIR
    if isinstance(settings_or_dir, str | Path):
        return Path(settings_or_dir)
    prompts_dir = getattr(settings_or_dir, "prompts_dir", None)
    if prompts_dir is None:
        raise TypeError(f"expected Settings, a directory or None, got {type(settings_or_dir)!r}")
    return Path(prompts_dir)


def parse_variables(template: str) -> frozenset[str]:
    """The variable names a template uses (escaped `{{name}}` is not a variable)."""
    return frozenset(m.group(1) for m in _TOKEN.finditer(template) if m.group(1))


@dataclass(frozen=True)
class Prompt:
    name: str
    path: Path
    template: str
    variables: frozenset[str]

    def format(self, **values: Any) -> str:
        missing = sorted(self.variables - values.keys())
        if missing:
            raise RagError(
                f"Prompt {self.path} needs variable(s) {', '.join(missing)} "
                f"that were not given (it uses: {', '.join(sorted(self.variables))})"
            )
        extra = sorted(values.keys() - self.variables)
        if extra:
            raise RagError(
                f"Prompt {self.path} has no variable(s) {', '.join(extra)} "
                f"(it uses: {', '.join(sorted(self.variables)) or 'none'})"
            )

        def sub(m: re.Match[str]) -> str:
            token = m.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            return str(values[m.group(1)])

        return _TOKEN.sub(sub, self.template)


def load_prompt(name: str, settings_or_dir: Any = None) -> Prompt:
    """Read `<prompts_dir>/<name>` (".txt" is added when `name` has no suffix).

    Read on every call, not cached: prompts are tiny and this lets someone tune a prompt file
    while the UI is running.
    """
    directory = _prompts_dir(settings_or_dir)
    path = directory / (name if Path(name).suffix else f"{name}.txt")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RagError(f"Prompt file {path} does not exist (prompts_dir is {directory})") from None
    except OSError as e:
        raise RagError(f"Cannot read prompt file {path}: {e}") from e
    # A trailing newline is an editor artifact, not part of the message.
    template = text.rstrip()
    return Prompt(name=Path(name).stem, path=path, template=template,
                  variables=parse_variables(template))


@lru_cache(maxsize=8)
def _load_phrases(path: Path, mtime_ns: int) -> dict[str, dict[str, str]]:
    del mtime_ns  # part of the cache key only: an edited file is re-read
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RagError(f"Phrase file {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(t, str) for t in v.values()) for v in data.values()
    ):
        raise RagError(f"Phrase file {path} must map phrase -> language code -> text")
    return data


@lru_cache(maxsize=1)
def _pack_phrases() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {"language_name": {}}
    for code, p in lang_packs.packs().items():
        for key, text in p.phrases.items():
            table.setdefault(key, {})[code] = text
        if p.answers_in_own_language:
            table["language_name"][code] = p.name
    return table


def phrases(settings_or_dir: Any = None) -> dict[str, dict[str, str]]:
    """All phrases: {phrase key: {language code: text}} (language packs, then phrases.json)."""
    path = _prompts_dir(settings_or_dir) / PHRASES_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise RagError(f"Phrase file {path} does not exist") from None
    merged = {k: dict(v) for k, v in _pack_phrases().items()}
    # A phrase the file defines is the file's, in every language (English fills the gaps).
    merged.update({k: dict(v) for k, v in _load_phrases(path, mtime).items()})
    return merged


def phrase(key: str, lang: str | None, settings_or_dir: Any = None) -> str:
    """The phrase `key` in language `lang` ("sr", "sr-Latn" and "SR" all mean Serbian); English
    when that language has no text of its own."""
    table = phrases(settings_or_dir)
    if key not in table:
        raise RagError(f"Unknown phrase {key!r}; known: {', '.join(sorted(table))}")
    texts = table[key]
    code = (lang or "").replace("_", "-").split("-")[0].lower()
    if code in texts:
        return texts[code]
    if code:
        log.debug("phrase %r has no %r text; using %s", key, code, FALLBACK_LANGUAGE)
    try:
        return texts[FALLBACK_LANGUAGE]
    except KeyError:
        raise RagError(f"Phrase {key!r} has no {FALLBACK_LANGUAGE!r} text") from None


def _lines(a: int, b: int) -> str:
    return f"line {a}" if a == b else f"lines {a}–{b}"


def render_evidence(evidence: Sequence[Evidence]) -> str:
    """The `{evidence}` block of the answer prompt: `[n] <title> (<file>, lines a–b)` then the
    text. Neighbouring context is included so the model reads the sentence in place; the
    citation still points at the sentence's own span."""
    blocks = []
    for ev in evidence:
        s = ev.sentence
        title = s.title or s.source
        parts = (ev.context_before, s.text, ev.context_after)
        text = " ".join(p.strip() for p in parts if p.strip())
        blocks.append(f"[{ev.n}] {title} ({s.source}, {_lines(s.line_start, s.line_end)})\n{text}")
    return "\n\n".join(blocks)


def answer_messages(
    evidence: str, question: str, lang: str, settings_or_dir: Any = None
) -> list[dict[str, str]]:
    """System + user messages for a generated answer; `evidence` is `render_evidence(...)`.

    Each prompt file gets the subset of {evidence, question, language_name, refusal} it uses; a
    file that uses any other variable still fails in `Prompt.format`."""
    values = {
        "evidence": evidence,
        "question": question,
        "language_name": phrase("language_name", lang, settings_or_dir),
        "refusal": phrase("refusal", lang, settings_or_dir),
    }
    messages = []
    for role, name in (("system", "answer_system"), ("user", "answer_user")):
        prompt = load_prompt(name, settings_or_dir)
        used = {k: v for k, v in values.items() if k in prompt.variables}
        messages.append({"role": role, "content": prompt.format(**used)})
    return messages


def render_history(messages: Sequence[Mapping[str, str]]) -> str:
    """The `{history}` block of the condense prompt: one "User:"/"Assistant:" line per turn."""
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(
        f"{names[m['role']]}: {' '.join(m['content'].split())}"
        for m in messages
        if m.get("role") in names and m.get("content")
    )


def condense_messages(
    history: str, question: str, settings_or_dir: Any = None
) -> list[dict[str, str]]:
    """The single user message asking for a standalone version of a follow-up question."""
    prompt = load_prompt("condense", settings_or_dir)
    return [{"role": "user", "content": prompt.format(history=history, question=question)}]
