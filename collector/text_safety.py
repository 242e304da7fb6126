"""Which characters may travel in an identifier or a free text of a quality record. Pure.

Operator ids, command fields and the PLC's part number / die / lot strings end up in the
context of every event, in dashboards, CSV exports and audit logs. Three kinds of
character make such a string lie to whoever reads it:

- control characters (C0 including NUL, DEL, C1): cut a log line or a C string short,
  start terminal escape sequences, break CSV rows;
- bidirectional formatting characters (the "Trojan Source" family, U+202A-U+202E,
  U+2066-U+2069, the marks U+200E, U+200F, U+061C): make ``Q12`` display as something
  else, reorder a lot number on screen;
- the line and paragraph separators U+2028 / U+2029 (a new line that ``splitlines`` and
  browsers honour but a control-character filter would miss).

Commands carrying one are *refused* (the sender can fix the text). A PLC cannot be asked:
its strings are *sanitised* (each such character becomes U+FFFD, visibly wrong, never
silently merged into a different valid id) and counted by the caller.
"""

from __future__ import annotations

import unicodedata

REPLACEMENT = "\ufffd"
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
SEPARATORS = frozenset("\u2028\u2029")


def is_unsafe_char(ch: str) -> bool:
    """True for a control, bidirectional formatting or line/paragraph separator char."""
    return ch in BIDI_CONTROLS or ch in SEPARATORS or unicodedata.category(ch) == "Cc"


def first_unsafe(text: str) -> tuple[int, str] | None:
    """(index, char) of the first unsafe character, or None. Fast for clean text:
    every unsafe character is non-printable, so ``str.isprintable`` (C speed) answers
    the common case."""
    if text.isprintable():
        return None
    for index, ch in enumerate(text):
        if is_unsafe_char(ch):
            return index, ch
    return None


def describe(ch: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE`` (never the character itself: it is the problem)."""
    name = unicodedata.name(ch, "")
    if not name:
        name = "NUL" if ch == "\x00" else "control character"
    return f"U+{ord(ch):04X} {name}"


def problem(text: str) -> str | None:
    """A human sentence for a refused text, or None when it is safe."""
    found = first_unsafe(text)
    if found is None:
        return None
    index, ch = found
    return (f"contains {describe(ch)} at position {index} (control, NUL and "
            "bidirectional formatting characters are refused)")


def sanitise(text: str) -> tuple[str, int]:
    """(text with every unsafe character replaced by U+FFFD, how many were replaced)."""
    if text.isprintable():
        return text, 0
    out = []
    replaced = 0
    for ch in text:
        if is_unsafe_char(ch):
            out.append(REPLACEMENT)
            replaced += 1
        else:
            out.append(ch)
    return ("".join(out), replaced) if replaced else (text, 0)
