"""``workbench demo`` on a fresh user cache: it builds the vocabulary and the built-in nano model itself, the
model reasons, calls python (which runs) and answers right; the summary and a report that renders offline in
chromium from file:// show it, with routing, sinks and the MXFP4 view."""

from __future__ import annotations

import os
import subprocess


def test_demo_report_from_a_fresh_cache(browser, tmp_path, artifacts, guard_factory):
    env = dict(os.environ, WORKBENCH_CACHE=str(tmp_path / "fresh-cache"))
    env.pop("TIKTOKEN_ENCODINGS_BASE", None)
    report = tmp_path / "report.html"
    r = subprocess.run(["workbench", "demo", "--out", str(report)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tool loop: " in r.stdout and "expert load over" in r.stdout and "sink mass" in r.stdout
    assert "python calls: 1, ran without error: 1" in r.stdout and "[0] analysis" in r.stdout
    assert f"final answer: 7,919 × 48,611 = {7919 * 48611:,}" in r.stdout  # the default question, answered right
    assert "expert load entropy by channel" in r.stdout
    assert f"report: {report}" in r.stdout
    assert (tmp_path / "fresh-cache" / "models").is_dir() and (tmp_path / "fresh-cache" / "tiktoken").is_dir()

    n_tokens = int(r.stdout.split("expert load over ")[1].split()[0])
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    guard = guard_factory(page)
    page.goto(report.as_uri())
    page.wait_for_function("""n => {
        const s = document.querySelector('[data-wb="token-stream"]');
        return s && s.dataset.count === String(n) &&
          ['tool-trace', 'router', 'sinks', 'mxfp4'].every(k => document.querySelector(`[data-wb="${k}"]`));
    }""", arg=n_tokens, timeout=120_000)
    assert page.locator('[data-wb]').count() == 5  # token stream, tool trace, router, sinks, MXFP4
    page.screenshot(path=str(artifacts / "demo-report.png"), full_page=True)
    assert guard.outside() == [] and guard.errors == [] and guard.dialogs == []
    page.close()
