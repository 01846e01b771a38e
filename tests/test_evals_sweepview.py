"""SweepView over a real sweep folder (made through the fake server): summary rows, samples, token streams
on demand, an escaped static export, and the export clicked through in chromium."""

from pathlib import Path

import pytest

from workbench.evals import load, run_sweep, server, summary
from workbench.evals.fake import FakeServer
from workbench.harmony import parse_tokens
from workbench.widgets.sweep import SweepView

HOSTILE = "</script><img src=x onerror=alert(1)><b>bold</b>"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")

    def answer(messages):
        q = messages[-1]["content"]
        return f"thinking {HOSTILE}", ("\\boxed{3}" if "word" in q else f"no idea {HOSTILE}")

    with FakeServer(answer=answer).start() as fake:
        run_sweep(["counting", "arithmetic"], [server("fake", fake.url)], out=out, efforts=["low", "high"], limit=5,
                  progress=False)
    return out


def test_view_holds_the_summary_and_opens_streams(folder):
    df = load(folder)
    table = summary(df)
    view = SweepView(df, table, title=str(folder))
    assert len(view.summary) == len(table) == 4
    assert [r["accuracy"] for r in view.summary] == pytest.approx(table["accuracy"].tolist())
    assert len(view.samples) == 20 and view.streams == {}
    view.selected = 3  # what a click in the browser does
    entry = view.streams["3"]
    expected = parse_tokens(df.iloc[3]["tokens"])
    assert [t[0] for t in entry["tokens"]] == [e.text for e in expected.events]
    assert [t[2] for t in entry["tokens"]] == [e.channel for e in expected.events]
    assert entry["answer"] == df.iloc[3]["answer"] and entry["prompt"] == df.iloc[3]["prompt"]
    assert view.token_stream(3).count == len(expected.events)
    assert "SweepView: 20 samples" in view.fallback_text()
    with pytest.raises(IndexError):
        view.token_stream(99)


def test_static_export_is_escaped(folder, tmp_path):
    df = load(folder)
    view = SweepView(df, summary(df), static_streams=20)
    page = view.export_html(tmp_path / "sweep.html").read_text()
    assert HOSTILE not in page and "<img" not in page and page.count("<script type=\"module\">") == 1
    assert "http://" not in page and "https://" not in page


@pytest.mark.browser
def test_static_export_in_chromium(folder, tmp_path):
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.fail("/usr/bin/chromium is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    from playwright.sync_api import sync_playwright

    path = SweepView(load(folder), summary(load(folder))).export_html(tmp_path / "sweep.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_selector("[data-wb=sweep][data-ready='1']")
        assert page.locator("tr.wb-cell").count() == 4
        page.locator("tr.wb-cell").nth(1).click()  # filter to one cell
        assert page.locator("tr.wb-sample").count() == 5
        page.locator("tr.wb-sample").nth(0).click()
        page.wait_for_selector(".wb-stream .tok")
        n = page.locator(".wb-stream .tok").count()
        assert n > 10 and page.locator(".wb-stream .ch-analysis").count() > 0
        text = page.locator(".wb-detail").inner_text()
        assert "<img src=x onerror=alert(1)>" in text  # shown as text...
        assert page.locator(".wb-detail img, .wb-detail b").count() == 0  # ...never as markup
        page.screenshot(path=str(tmp_path / "sweep.png"), full_page=True)
        browser.close()
    assert not dialogs and not errors


def test_view_takes_data_not_folders(folder):
    with pytest.raises(TypeError, match="evals.load"):
        SweepView(str(folder), [])
    rows = load(folder).to_dict("records")  # plain records and rows work as well as DataFrames
    view = SweepView(rows, summary(load(folder)).to_dict("records"))
    assert len(view.samples) == len(rows) and len(view.summary) == 4
