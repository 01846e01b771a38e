// SweepView: summary (model x effort x task, accuracy with its 95% interval) -> samples of a cell ->
// one sample's prompt, answer and Harmony token stream. Model text is only set with textContent.
const CHANNEL_CLASS = { analysis: "ch-analysis", commentary: "ch-commentary", final: "ch-final" };

const num = (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

function render({ model, el }) {
  el.classList.add("wb-sweep");
  el.dataset.wb = "sweep";
  const head = h("div", "wb-bar");
  const table = h("table", "wb-summary");
  const listHead = h("div", "wb-sub");
  const list = h("table", "wb-samples");
  const detail = h("div", "wb-detail");
  el.append(head, table, listHead, h("div", "wb-scroll", null), detail);
  el.querySelector(".wb-scroll").append(list);
  let cell = null; // [model, effort, task] filter

  function drawSummary() {
    const rows = model.get("summary") || [];
    head.replaceChildren(h("span", "wb-title", model.get("title") || "Eval sweep"),
      h("span", "wb-sub", `${(model.get("samples") || []).length} samples · ${rows.length} cells`));
    const tr = h("tr");
    for (const c of ["model", "effort", "task", "n", "accuracy [95% CI]", "", "reasoning tok", "latency s", "errors"])
      tr.append(h("th", null, c));
    table.replaceChildren(tr);
    rows.forEach((r, i) => {
      const row = h("tr", "wb-cell");
      row.dataset.index = String(i);
      if (cell && cell[0] === r.model && cell[1] === r.effort && cell[2] === r.task) row.classList.add("wb-on");
      const bar = h("span", "wb-ci");
      const lo = 100 * (r.ci_low ?? 0), hi = 100 * (r.ci_high ?? 0);
      const band = h("span", "wb-ci-band"); band.style.left = `${lo}%`; band.style.width = `${Math.max(0.5, hi - lo)}%`;
      const dot = h("span", "wb-ci-dot"); dot.style.left = `${100 * (r.accuracy ?? 0)}%`;
      bar.append(band, dot);
      const barCell = h("td"); barCell.append(bar);
      row.append(h("td", null, r.model), h("td", null, r.effort), h("td", null, r.task), h("td", "wb-num", r.n),
        h("td", "wb-num", `${num(r.accuracy, 3)} [${num(r.ci_low, 3)}, ${num(r.ci_high, 3)}]`), barCell,
        h("td", "wb-num", num(r.reasoning_tokens)), h("td", "wb-num", num(r.latency, 3)),
        h("td", "wb-num" + (r.errors ? " wb-bad" : ""), r.errors));
      row.addEventListener("click", () => {
        const same = cell && cell[0] === r.model && cell[1] === r.effort && cell[2] === r.task;
        cell = same ? null : [r.model, r.effort, r.task];
        drawSummary(); drawList();
      });
      table.append(row);
    });
  }

  function drawList() {
    const all = model.get("samples") || [];
    const picked = all.map((s, i) => [s, i]).filter(([s]) => !cell ||
      (s.model === cell[0] && s.effort === cell[1] && s.task === cell[2]));
    listHead.textContent = cell ? `samples of ${cell.join(" · ")} (${picked.length})` :
      `all samples (${picked.length}); click a summary row to filter`;
    const tr = h("tr");
    for (const c of ["", "task", "sample", "model", "effort", "rep", "extracted", "target", "reasoning tok", "latency s", "error"])
      tr.append(h("th", null, c));
    list.replaceChildren(tr);
    for (const [s, i] of picked.slice(0, 2000)) {
      const row = h("tr", "wb-sample" + (i === model.get("selected") ? " wb-on" : ""));
      row.dataset.index = String(i);
      row.append(h("td", s.correct ? "wb-ok" : "wb-bad", s.correct ? "✓" : "✗"), h("td", null, s.task),
        h("td", null, s.sample), h("td", null, s.model), h("td", null, s.effort), h("td", "wb-num", s.repeat),
        h("td", "wb-mono", s.extracted ?? "–"), h("td", "wb-mono", s.target), h("td", "wb-num", s.reasoning_tokens),
        h("td", "wb-num", num(s.latency, 3)), h("td", "wb-bad", s.error ?? ""));
      row.addEventListener("click", () => {
        model.set("selected", i);
        model.save_changes();
        drawList(); drawDetail();
      });
      list.append(row);
    }
  }

  function drawDetail() {
    const i = model.get("selected");
    const s = (model.get("samples") || [])[i];
    if (!s) { detail.replaceChildren(); return; }
    const entry = (model.get("streams") || {})[String(i)];
    const parts = [h("div", "wb-title", `${s.task} #${s.sample} · ${s.model} · ${s.effort} · repeat ${s.repeat}`)];
    if (!entry) {
      parts.push(h("div", "wb-sub", model.get("_static") ? "token stream not embedded in this export" : "loading…"));
      detail.replaceChildren(...parts);
      return;
    }
    parts.push(h("div", "wb-label", "prompt"), h("pre", null, entry.prompt ?? ""));
    parts.push(h("div", "wb-label", `answer · extracted ${s.extracted ?? "nothing"} · target ${s.target} · ` +
      (s.correct ? "correct" : "wrong")), h("pre", "ch-final", entry.answer ?? "(no final answer)"));
    parts.push(h("div", "wb-label", `token stream (${entry.tokens.length} tokens${entry.token_level ? "" :
      ", re-encoded from the server's text"})`));
    const stream = h("div", "wb-stream");
    for (const [text, kind, channel, error] of entry.tokens) {
      let c = "tok k-" + kind + " " + (channel ? CHANNEL_CLASS[channel] || "ch-other" : "ch-none");
      if (error) c += " err";
      const span = h("span", c, text);
      if (error) span.title = error;
      stream.append(span);
    }
    parts.push(stream);
    detail.replaceChildren(...parts);
  }

  drawSummary(); drawList(); drawDetail();
  const onStreams = () => drawDetail();
  const onData = () => { drawSummary(); drawList(); drawDetail(); };
  model.on("change:streams", onStreams);
  model.on("change:summary", onData);
  el.dataset.ready = "1";
  return () => { model.off("change:streams", onStreams); model.off("change:summary", onData); };
}

export default { render };
