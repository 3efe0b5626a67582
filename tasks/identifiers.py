"""Caller-given names (session ids, instrument ids, users, job keys) free of control characters,
and any caller-given value made safe to put in a log line.

A newline in a session id would let whoever can enqueue write a line of their own
into the worker's log (a forged ``CRITICAL/MainProcess`` line, say), and other
control characters can rewrite a terminal. Such names are refused where they
enter (``check_name``); every caller-given value written to a log goes through
``for_log``, which escapes whatever is not printable.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, plus what Python's splitlines() also breaks lines at
# (U+2028 and U+2029; U+001C-U+001E and U+0085 are controls already).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# How much of a refused value an error message repeats.
SHOWN = 60


class InvalidNameError(ValueError):
    """A caller-given name with a control character; the message names the field."""


def shown(value: object) -> str:
    """``value`` for an error message: quoted, escaped, at most ``SHOWN`` characters."""
    text = repr(str(value))
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def control_character(value: str) -> str | None:
    """The first control character of ``value``, or None."""
    found = CONTROL.search(value)
    return found.group() if found else None


def check_name(field: str, value: object) -> None:
    """Raise ``InvalidNameError`` naming ``field`` when ``value`` has a control character."""
    if not isinstance(value, str):
        return  # types are checked where the value is parsed
    char = control_character(value)
    if char is not None:
        raise InvalidNameError(
            f"{field} must not contain control characters (found {char!r} in {shown(value)})"
        )


def for_log(value: object) -> str:
    """``value`` as one printable line: control characters escaped as ``\\n``, ``\\x1b``...

    Printable text (accents, CJK) is kept as it is, so a log stays readable.
    """
    text = str(value)
    if control_character(text) is None:
        return text
    return CONTROL.sub(lambda match: repr(match.group())[1:-1], text)
