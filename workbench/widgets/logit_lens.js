// LogitLensView: stages x positions, each cell the top next token at that stage (textContent only),
// its background the top (or target) probability. Arrays arrive as binary.
const GREEN = [22, 163, 74];
const visible = (s) => s.replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/ /g, "·");

function render({ model, el }) {
  el.classList.add("wb-lens");
  el.dataset.wb = "logit-lens";
  const stages = model.get("stages"), positions = model.get("positions"), k = model.get("k");
  const S = stages.length, P = positions.length;
  const ids = new Int32Array(bytesOf(model.get("top_ids")));
  const probs = new Float32Array(bytesOf(model.get("top_probs")));
  const tbuf = bytesOf(model.get("target_prob"));
  const target = tbuf.byteLength ? new Float32Array(tbuf) : null;
  const text = new Map((model.get("id_text") || []).map(([i, t]) => [i, t]));
  const labels = model.get("labels") || [];
  const useTarget = model.get("value") === "target" && target;

  const bar = h("div", "wb-bar");
  bar.append(h("span", "wb-title", model.get("title") || "Logit lens"),
    h("span", "wb-sub", `${S} stages × ${P} positions · cell: top next token · green = ${useTarget ? "target" : "top"} probability`));
  const info = h("div", "wb-info", "Hover a cell for its top tokens.");
  const table = h("table", "wb-grid");
  const head = h("tr");
  head.append(h("th", "wb-corner", "stage \\ position"));
  for (let j = 0; j < P; j++) {
    const th = h("th", "wb-pos", labels[j] !== undefined ? visible(labels[j]) : String(positions[j]));
    th.dataset.position = String(positions[j]);
    head.append(th);
  }
  table.append(head);
  for (let i = 0; i < S; i++) {
    const tr = h("tr");
    tr.append(h("th", "wb-stage", stages[i]));
    for (let j = 0; j < P; j++) {
      const base = (i * P + j) * k;
      const top = ids[base];
      const p = useTarget ? target[i * P + j] : probs[base];
      const td = h("td", "wb-cell", visible(text.get(top) ?? `<${top}>`));
      td.dataset.stage = stages[i]; td.dataset.position = String(positions[j]);
      td.dataset.token = String(top); td.dataset.value = String(p);
      td.style.background = css(shade(GREEN, p));
      td.addEventListener("mouseenter", () => {
        const tops = [];
        for (let r = 0; r < k; r++) tops.push(`${JSON.stringify(text.get(ids[base + r]) ?? "")} ${probs[base + r].toFixed(3)}`);
        const where = labels[j] !== undefined ? `position ${positions[j]} ${JSON.stringify(labels[j])}` : `position ${positions[j]}`;
        info.textContent = `${stages[i]} · ${where} · ${tops.join(" · ")}` +
          (target ? ` · target p ${target[i * P + j].toFixed(4)}` : "");
      });
      tr.append(td);
    }
    table.append(tr);
  }
  const scroll = h("div", "wb-scroll");
  scroll.append(table);
  el.append(bar, scroll, info);
  el.dataset.ready = "1";
}

export default { render };
