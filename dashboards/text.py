"""User data (sample ids, class and model names, finding titles, errors, reviewers' comments)
as literal text in the Streamlit elements that render markdown."""

from __future__ import annotations

import re

INLINE_MARKUP = re.compile(r"([\\`*_{}\[\]<>!|~$&^]|:(?=//)|(?<=\bwww)\.)")
"""Punctuation that starts markup anywhere in a line: emphasis, code, links and images
(`![x](url)` needs the brackets), autolinks (`<url>`, the `://` of `http://`, `www.`), HTML,
tables, strike-through, Streamlit's `:colour[...]` and `$LaTeX$`."""
BLOCK_MARKER = re.compile(r"^(\s*)(?:([#+\-=])|(\d+)([.)]))", re.MULTILINE)
"""Punctuation that is markup only at the start of a line: headings, lists, setext rules."""


def literal(text: object) -> str:
    """`text` escaped for `st.markdown`, `st.caption`, `st.error`, headers, metric values and
    image captions: it shows as written, never as markup (an image `![x](http://...)` loads
    nothing, a link is no link). CommonMark shows any backslash-escaped punctuation as itself."""
    escaped = INLINE_MARKUP.sub(r"\\\1", str(text))
    return BLOCK_MARKER.sub(
        lambda m: m[1] + (f"\\{m[2]}" if m[2] else f"{m[3]}\\{m[4]}"), escaped
    )
