"""The ``browser`` tool: ``search``, ``open`` and ``find`` over a search backend, as in the gpt-oss reference.

Every result is a page pushed on a stack; its index is the ``cursor`` shown as ``[cursor]`` before
the page. Pages are wrapped at 80 columns and shown with line numbers ``L{n}: ...`` through a window
(``num_lines``, default ``view_lines``) that ``open`` scrolls with ``loc``. The model cites what it
read as ``【{cursor}†L{start}-L{end}】``; ``citations(text)`` resolves such citations to pages and lines.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "sinks.md").write_text("# Attention sinks\\nEach head has one learned sink logit.")
>>> browser = BrowserTool(LocalSearch(folder))
>>> print(browser.call("browser.search", '{"query": "sink logit"}').text)  # doctest: +ELLIPSIS
[0] Search results for `sink logit` (local)
**viewing lines [0 - 1] of 1**
<BLANKLINE>
L0: # 【0†Attention sinks†local】
L1: Each head has one learned sink logit.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

from openai_harmony import ToolNamespaceConfig

from .base import ToolResult, error_result
from .search import BackendError, LocalSearch, Page, SearchBackend, SearchResult

CITATION = re.compile(r"【(?P<cursor>\d+)†L(?P<start>\d+)(?:-L(?P<end>\d+))?】")


class ToolUsageError(ValueError):
    """The model called the browser wrongly (bad cursor, bad link id...); the message explains."""


def wrap_lines(text: str, width: int = 80) -> list[str]:
    """Wrap each line at ``width`` (keeping empty lines), like the reference browser."""
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(textwrap.wrap(line, width=width, replace_whitespace=False, drop_whitespace=False) or [""])
    return out


class BrowserTool:
    namespace = "browser"
    builtin = True

    def __init__(self, backend: SearchBackend, *, max_results: int = 10, view_lines: int = 60):
        self.backend = backend
        self.max_results = max_results
        self.view_lines = view_lines
        self.pages: list[Page] = []  # the page stack; a page's index is its cursor

    def config(self) -> ToolNamespaceConfig:
        """openai-harmony's own browser description (search, open, find)."""
        return ToolNamespaceConfig.browser()

    def reset(self) -> None:
        self.pages.clear()

    # -- the tool-loop entry point ---------------------------------------------------------------

    def call(self, recipient: str, arguments: str) -> ToolResult:
        name = recipient.partition(".")[2]
        if name not in ("search", "open", "find"):
            return error_result(f"Unknown function: {name or recipient}; the browser has search, open and find")
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return error_result(f"Invalid function arguments: {e}")
        if not isinstance(args, dict):
            return error_result("Invalid function arguments: expected a JSON object")
        try:
            text = getattr(self, name)(**args)
        except TypeError as e:
            return error_result(f"Invalid function arguments: {e}")
        except (ToolUsageError, BackendError) as e:
            return ToolResult(text=str(e), error=str(e))
        return ToolResult(text=text, data={"cursor": len(self.pages) - 1, "url": self.pages[-1].url})

    # -- the three functions -----------------------------------------------------------------------

    def search(self, query: str, topn: int = 10, source: str | None = None, **_: Any) -> str:
        try:
            results = self.backend.search(str(query), min(int(topn), self.max_results))
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"Error during search for `{query}`: {e}") from e
        self.pages.append(self._results_page(query, results))
        return self._show(len(self.pages) - 1, 0)

    def open(self, id: int | str = -1, cursor: int = -1, loc: int = -1, num_lines: int = -1,
             view_source: bool = False, source: str | None = None, **_: Any) -> str:
        snippet = None
        if isinstance(id, str):
            try:
                page = self.backend.fetch(id)
            except BackendError:
                raise
            except Exception as e:
                raise BackendError(f"Error fetching URL `{id}`: {e}") from e
        else:
            current = self._page(cursor)
            if int(id) >= 0:
                url = current.urls.get(str(id))
                if url is None:
                    raise ToolUsageError(f"Invalid link id `{id}`.")
                snippet = (current.snippets or {}).get(str(id))
                page = self.backend.fetch(url)
            else:
                page = current  # scroll the page at `cursor`
        if loc < 0:
            loc = max(0, snippet.line - 4) if snippet is not None and snippet.line is not None else 0
        self.pages.append(page)
        return self._show(len(self.pages) - 1, loc, num_lines)

    def find(self, pattern: str, cursor: int = -1, **_: Any) -> str:
        page = self._page(cursor)
        if page.snippets is not None:
            raise ToolUsageError("Cannot run `find` on search results page or find results page")
        lines = wrap_lines(page.text)
        pattern_l = str(pattern).lower()
        chunks, snippets, i = [], {}, 0
        while i < len(lines) and len(chunks) < 50:
            if pattern_l in lines[i].lower():
                k = str(len(chunks))
                chunks.append(f"# 【{k}†match at L{i}】\n" + "\n".join(lines[i:i + 4]))
                snippets[k] = SearchResult(url=page.url, title=f"#{k}", snippet=lines[i], line=i)
                i += 4
            else:
                i += 1
        text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
        self.pages.append(Page(url=f"{page.url}/find?pattern={pattern}", text=text,
                               title=f"Find results for text: `{pattern}` in `{page.title}`",
                               urls={k: page.url for k in snippets}, snippets=snippets))
        return self._show(len(self.pages) - 1, 0)

    # -- display and citations ---------------------------------------------------------------------

    def _page(self, cursor: int) -> Page:
        if not self.pages:
            raise ToolUsageError("No pages to access!")
        if cursor is None or int(cursor) == -1:
            return self.pages[-1]
        if not 0 <= int(cursor) < len(self.pages):
            raise ToolUsageError(f"Cursor `{cursor}` is out of range. Available cursor indices: [0 - {len(self.pages) - 1}].")
        return self.pages[int(cursor)]

    def _results_page(self, query: str, results: list[SearchResult]) -> Page:
        parts, urls, snippets = [], {}, {}
        for i, r in enumerate(results):
            title = r.title.replace("†", "‡").replace("【", "〖").replace("】", "〗")
            parts.append(f"# 【{i}†{title}†{self.backend.source}】\n{r.snippet}")
            urls[str(i)], snippets[str(i)] = r.url, r
        text = "\n\n".join(parts) if parts else f"No results for `{query}`"
        return Page(url="", title=f"Search results for `{query}`", text=text, urls=urls, snippets=snippets)

    def _show(self, cursor: int, loc: int = 0, num_lines: int = -1) -> str:
        page = self.pages[cursor]
        lines = wrap_lines(page.text)
        total = len(lines)
        if loc >= total:
            self.pages.pop()
            raise ToolUsageError(f"Invalid location parameter: `{loc}`. Cannot exceed page maximum of {total - 1}.")
        end = min(total, loc + (num_lines if num_lines and num_lines > 0 else self.view_lines))
        body = "\n".join(f"L{i}: {lines[i]}" for i in range(loc, end))
        where = f" ({page.url})" if page.url else f" ({self.backend.source})"
        return f"[{cursor}] {page.title}{where}\n**viewing lines [{loc} - {end - 1}] of {total - 1}**\n\n{body}"

    def citations(self, text: str) -> list[dict]:
        """Resolve ``【{cursor}†L{a}-L{b}】`` citations in ``text``: cursor, lines, url, title and the quoted lines."""
        out = []
        for m in CITATION.finditer(text):
            cursor, start = int(m["cursor"]), int(m["start"])
            end = int(m["end"]) if m["end"] else start
            item = {"citation": m.group(0), "cursor": cursor, "start": start, "end": end, "url": None,
                    "title": None, "lines": None}
            if cursor < len(self.pages):
                page = self.pages[cursor]
                item.update(url=page.url, title=page.title, lines=wrap_lines(page.text)[start:end + 1])
            out.append(item)
        return out

    def __repr__(self) -> str:
        return f"BrowserTool({self.backend!r}, {len(self.pages)} pages open)"


__all__ = ["BrowserTool", "LocalSearch", "ToolUsageError", "wrap_lines", "CITATION"]
