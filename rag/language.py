"""Language identification (lingua) for articles and questions."""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

# Serbian, Croatian and Bosnian share one standard language; lingua's Serbian model knows the
# Cyrillic script only, so Serbian-Latin text comes back as "bs" or "hr". We keep that raw guess
# and normalise it to "sr" for everything that acts on the language (refusal text, lead-ins).
_NORMALISE = {"bs": "sr", "hr": "sr", "sh": "sr"}

# The languages we decide between; a closed set makes short questions far more reliable.
_CANDIDATES = ("ENGLISH", "BULGARIAN", "MACEDONIAN", "SERBIAN", "CROATIAN", "BOSNIAN",
               "UKRAINIAN", "RUSSIAN", "GERMAN", "FRENCH", "SPANISH", "SLOVENE", "POLISH")

NAMES = {
    "en": "English", "bg": "Bulgarian", "mk": "Macedonian", "sr": "Serbian (Latin script)",
    "uk": "Ukrainian", "ru": "Russian", "de": "German", "fr": "French", "es": "Spanish",
    "sl": "Slovene", "pl": "Polish",
}


@functools.cache
def _detector():
    from lingua import Language, LanguageDetectorBuilder

    langs = [getattr(Language, n) for n in _CANDIDATES]
    return LanguageDetectorBuilder.from_languages(*langs).build()


def detect(text: str, default: str = "en") -> tuple[str, str]:
    """Return (normalised ISO 639-1 code, raw guess) for `text`; `default` when undecidable."""
    if not text or not text.strip():
        return default, ""
    lang = _detector().detect_language_of(text)
    if lang is None:
        return default, ""
    raw = lang.iso_code_639_1.name.lower()
    return _NORMALISE.get(raw, raw), raw


def name(code: str) -> str:
    return NAMES.get(code, code)
