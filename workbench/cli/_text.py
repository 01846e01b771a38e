"""Text fit for a terminal: what the CLI prints from files, checkpoints or a model is untrusted.

>>> terminal_text("tensor\\x1b]0;pwned\\x07 \\u202eevil\\nnext")
'tensor\\\\x1b]0;pwned\\\\x07 \\\\u202eevil\\nnext'

Every character that is not printable (C0/C1 controls such as ESC, which start terminal escape
sequences; DEL; Unicode format characters such as the bidi overrides U+202A-U+202E and U+2066-U+2069,
which reorder what a reader sees) is shown as its Python escape; newlines and tabs stay.
"""

from __future__ import annotations


def terminal_text(text: str, keep: str = "\n\t") -> str:
    """``text`` with every non-printable character but those in ``keep`` escaped (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)
