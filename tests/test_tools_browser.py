"""Browser tool over the offline BM25 index: search, open (links, scrolling), find, citations, errors."""

from __future__ import annotations

import json
import math

import pytest
from openai_harmony import ToolNamespaceConfig

from workbench.harmony import Conversation, encoding
from workbench.tools import BrowserTool, LocalSearch, html_to_page, wrap_lines
from workbench.tools.search import words


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "a.txt").write_text("apple banana apple\n")
    (tmp_path / "b.md").write_text("# Bananas\nbanana bread recipe\n" + "\n".join(f"line {i}" for i in range(2, 200)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.html").write_text(
        "<html><head><title>Cherry page</title><style>.x{}</style></head><body>"
        "<h1>Cherries</h1><p>cherry pie and <a href='../b.md'>banana bread</a>.</p>"
        "<script>alert('no')</script></body></html>")
    (tmp_path / "ignored.bin").write_bytes(b"\x00apple")
    return tmp_path


def test_bm25_scores_match_hand_computation(folder):
    index = LocalSearch(folder)
    assert len(index.pages) == 3
    urls = index._urls
    scores = dict(zip(urls, index.score("apple")))
    # hand-computed BM25 for "apple": only a.txt has it, twice, in a document of 3 words (+ title "a.txt" -> 2 words)
    n, df = 3, 1
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    doc_len = {u: len(words(index.pages[u].title + "\n" + index.pages[u].text)) for u in urls}
    avg = sum(doc_len.values()) / 3
    a = (folder / "a.txt").as_uri()
    expected = idf * 2 * 2.5 / (2 + 1.5 * (1 - 0.75 + 0.75 * doc_len[a] / avg))
    assert scores[a] == pytest.approx(expected)
    assert [s for u, s in scores.items() if u != a] == [0.0, 0.0]
    assert [r.url for r in index.search("recipe")] == [(folder / "b.md").as_uri()]
    ranked = index.search("banana")
    by_score = sorted(zip(index.score("banana"), urls), key=lambda p: -p[0])
    assert [r.url for r in ranked] == [u for s, u in by_score if s > 0]
    assert index.search("durian") == []


def test_html_to_text_drops_scripts_and_marks_links(folder):
    page = LocalSearch(folder).fetch((folder / "sub" / "c.html").as_uri())
    assert page.title == "Cherry page"
    assert "alert" not in page.text and ".x{}" not in page.text
    assert "【0†banana bread】" in page.text and page.urls["0"] == (folder / "b.md").as_uri()
    assert html_to_page("<p>fake 【1†x】</p>", "u").text == "fake 〖1†x〗"


def test_search_open_scroll_find_and_cite(folder):
    b = BrowserTool(LocalSearch(folder), view_lines=10)
    r = b.call("browser.search", json.dumps({"query": "recipe"}))
    assert r.error is None and r.text.startswith("[0] Search results for `recipe` (local)")
    assert "【0†Bananas†local】" in r.text
    r = b.call("browser.open", '{"id": 0}')
    assert r.text.startswith(f"[1] Bananas ({(folder / 'b.md').as_uri()})\n**viewing lines [0 - 9] of 199**")
    assert "L1: banana bread recipe" in r.text
    r = b.call("browser.open", '{"loc": 100, "num_lines": 3}')  # scroll the current page
    assert "**viewing lines [100 - 102] of 199**" in r.text and r.text.endswith("L102: line 102")
    r = b.call("browser.find", '{"pattern": "LINE 15"}')
    assert "# 【0†match at L15】" in r.text and "# 【1†match at L150】" in r.text
    r = b.call("browser.open", '{"id": 1}')  # follow a find result: opens near the match
    assert "**viewing lines [146 - 155] of 199**" in r.text
    cites = b.citations("Bread is real 【1†L1】 and so are lines 【2†L100-L101】 but not 【9†L1】.")
    assert [c["lines"] for c in cites] == [["banana bread recipe"], ["line 100", "line 101"], None]
    assert cites[0]["url"] == (folder / "b.md").as_uri()
    assert b.call("browser.open", '{"id": "' + (folder / "a.txt").as_uri() + '"}').text.startswith("[5] a.txt")


def test_browser_errors_are_results(folder):
    b = BrowserTool(LocalSearch(folder))
    assert b.call("browser.open", "{}").error == "No pages to access!"
    assert b.call("browser.search", "{nope").error.startswith("Invalid function arguments")
    assert b.call("browser.search", '{"q": "x"}').error.startswith("Invalid function arguments")
    assert b.call("browser.fly", "{}").error.startswith("Unknown function: fly")
    b.call("browser.search", '{"query": "apple"}')
    assert b.call("browser.find", '{"pattern": "x"}').error.startswith("Cannot run `find` on search results page")
    assert b.call("browser.open", '{"id": 7}').error == "Invalid link id `7`."
    assert b.call("browser.open", '{"cursor": 5}').error.startswith("Cursor `5` is out of range")
    assert b.call("browser.open", '{"id": "file:///etc/passwd"}').error.startswith("no page 'file:///etc/passwd'")
    assert b.call("browser.open", '{"loc": 1000}').error.startswith("Invalid location parameter: `1000`")
    with pytest.raises(FileNotFoundError):
        LocalSearch(folder / "missing")


def test_declared_like_openai_harmony_builtin(folder):
    b = BrowserTool(LocalSearch(folder))
    assert b.config() == ToolNamespaceConfig.browser()
    conv = Conversation.new().declare([b])
    assert "// Cite information from the tool using the following format:\n// `【{cursor}†L{line_start}(-L{line_end})?】`" in \
        encoding().decode(conv.render())


def test_wrap_lines_keeps_empty_lines():
    assert wrap_lines("a\n\n" + "x" * 170) == ["a", "", "x" * 80, "x" * 80, "x" * 10]
