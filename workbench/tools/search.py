"""Search backends for the browser tool: the interface, and an offline BM25 index of a local folder.

A backend has a ``source`` name and two methods: ``search(query, topn) -> list[SearchResult]`` and
``fetch(url) -> Page``. Plug a web search service in by writing those two (``html_to_page`` turns
fetched HTML into a ``Page`` with the reference's link markup ``【{id}†{text}】``).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "moe.md").write_text("# Mixture of experts\\nA router picks the top-4 experts per token.")
>>> _ = (folder / "rope.txt").write_text("Rotary embeddings rotate query and key pairs.")
>>> index = LocalSearch(folder)
>>> [r.title for r in index.search("which experts does the router pick", topn=2)]
['Mixture of experts']
"""

from __future__ import annotations

import html as _html
import math
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin

_WORD = re.compile(r"\w+", re.UNICODE)
_LINK = re.compile(r"【\d+†([^†】]*)(?:†[^】]*)?】")
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")


@dataclass
class SearchResult:
    url: str
    title: str
    snippet: str
    line: int | None = None  # the line of the page the snippet comes from


@dataclass
class Page:
    """A page as the browser shows it: plain text whose links read ``【{id}†{text}】``, ``urls[id]``."""

    url: str
    title: str
    text: str
    urls: dict[str, str] = field(default_factory=dict)
    snippets: dict[str, SearchResult] | None = None  # set on search and find result pages


class SearchBackend(Protocol):
    source: str

    def search(self, query: str, topn: int) -> list[SearchResult]: ...

    def fetch(self, url: str) -> Page: ...


class BackendError(RuntimeError):
    """A search or fetch failed; the browser reports it to the model."""


# -- HTML to text ------------------------------------------------------------------------------


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre",
             "blockquote", "table", "ul", "ol", "header", "footer"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self, base_url: str):
        super().__init__(convert_charrefs=True)
        self.base_url, self.parts, self.urls, self.title = base_url, [], {}, None
        self._skip, self._link, self._link_text, self._in_title = 0, None, [], False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")
            if tag in ("h1", "h2", "h3"):
                self.parts.append("#" * int(tag[1]) + " ")
            if tag == "li":
                self.parts.append("* ")
        elif tag == "a":
            href = dict(attrs).get("href")
            if href and not href.startswith(("#", "javascript:", "mailto:")):
                self._link, self._link_text = urljoin(self.base_url, href), []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._link is not None:
            text = " ".join("".join(self._link_text).split()).replace("†", "‡")
            ids = {u: i for i, u in self.urls.items()}
            link_id = ids.get(self._link) or str(len(self.urls))
            self.urls[link_id] = self._link
            self.parts.append(f"【{link_id}†{text}】" if text else "")
            self._link = None
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title = (self.title or "") + data
        if self._skip:
            return
        data = data.replace("【", "〖").replace("】", "〗")  # keep page text from faking link markup
        (self._link_text if self._link is not None else self.parts).append(data)


def html_to_page(html: str, url: str, title: str | None = None) -> Page:
    """Plain text of an HTML page (scripts and styles dropped), links as ``【{id}†{text}】``."""
    parser = _HTMLText(url)
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = "\n".join(" ".join(line.split()) for line in text.splitlines())
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return Page(url=url, title=title or " ".join((parser.title or "").split()) or url, text=text, urls=parser.urls)


def text_to_page(text: str, url: str, title: str | None = None) -> Page:
    """A text or Markdown page; the title is the first ``# heading`` when there is one."""
    text = text.replace("【", "〖").replace("】", "〗")
    if title is None:
        m = re.search(r"^#\s+(.+)$", text, re.M)
        title = m.group(1).strip() if m else url.rsplit("/", 1)[-1]
    return Page(url=url, title=title, text=text.strip())


# -- BM25 over a local folder --------------------------------------------------------------------


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def read_text_file(path: Path, max_bytes: int) -> str | None:
    """The text of a regular file of at most ``max_bytes`` that is not binary (no NUL byte, valid
    UTF-8), opened without following a symlink; None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class LocalSearch:
    """An offline search backend: BM25 (k1=1.5, b=0.75) over the .txt/.md/.html files under ``folder``.

    Pages get URLs ``file:///absolute/path``; ``fetch`` only opens files that were indexed. It never
    leaves ``folder``: symbolic links (files or folders) are skipped, not followed; files over
    ``max_file_bytes`` and binary files are skipped; ``skipped`` lists what was left out and why.
    """

    source = "local"

    def __init__(self, folder: str | Path, *, k1: float = 1.5, b: float = 0.75, max_file_bytes: int = 4 << 20,
                 max_files: int = 10000):
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"browser folder {self.folder} does not exist")
        self.k1, self.b = k1, b
        self.pages: dict[str, Page] = {}
        self.skipped: dict[str, str] = {}
        for path in self._walk(max_files):
            if path.suffix.lower() not in TEXT_SUFFIXES:
                continue
            raw = read_text_file(path, max_file_bytes)
            if raw is None:
                self.skipped[str(path)] = f"not a regular text file of at most {max_file_bytes} bytes"
                continue
            url = path.as_uri()
            page = html_to_page(raw, url) if path.suffix.lower() in (".html", ".htm") else text_to_page(raw, url)
            self.pages[url] = page
        self._urls = list(self.pages)
        self._tf = [Counter(words(self.pages[u].title + "\n" + self.pages[u].text)) for u in self._urls]
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg = sum(self._len) / len(self._len) if self._len else 0.0
        self._df = Counter(w for tf in self._tf for w in tf)

    def _walk(self, max_files: int) -> list[Path]:
        """Files under the folder, without following any symbolic link (each link is recorded in ``skipped``)."""
        out: list[Path] = []
        for top, dirs, files in os.walk(self.folder, followlinks=False):
            for name in sorted(dirs):
                if os.path.islink(os.path.join(top, name)):
                    self.skipped[os.path.join(top, name)] = "symbolic link (not followed)"
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(top, d)))
            for name in sorted(files):
                path = Path(top) / name
                if path.is_symlink():
                    self.skipped[str(path)] = "symbolic link (not followed)"
                elif len(out) < max_files:
                    out.append(path)
        return sorted(out)

    def __repr__(self) -> str:
        return f"LocalSearch({str(self.folder)!r}, {len(self.pages)} pages)"

    def score(self, query: str) -> list[float]:
        """BM25 score of every page for ``query`` (in index order)."""
        n = len(self._urls)
        scores = [0.0] * n
        for w in set(words(query)):
            df = self._df.get(w, 0)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for i, tf in enumerate(self._tf):
                f = tf.get(w, 0)
                if f:
                    scores[i] += idf * f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * self._len[i] / self._avg))
        return scores

    def search(self, query: str, topn: int = 10) -> list[SearchResult]:
        scores = self.score(query)
        order = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], self._urls[i]))
        q = set(words(query))
        out = []
        for i in order[:topn]:
            page = self.pages[self._urls[i]]
            lines = page.text.splitlines() or [""]
            best = max(range(len(lines)), key=lambda j: (len(q & set(words(lines[j]))), -j))
            snippet = " ".join(_LINK.sub(lambda m: m.group(1), lines[best]).split())  # page links mean nothing here
            out.append(SearchResult(url=page.url, title=page.title,
                                    snippet=snippet[:200] + ("…" if len(snippet) > 200 else ""), line=best))
        return out

    def fetch(self, url: str) -> Page:
        page = self.pages.get(url)
        if page is None:
            raise BackendError(f"no page {url!r} in the local index {self.folder}")
        return page
