// RouterView: heatmap of expert picks (tokens x layers), per-layer expert load, router logits of a
// selected token. Arrays arrive as binary (DataView); token text is set with textContent only.
function hslToRgb(hue, s, l) {
  const k = (n) => (n + hue / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return [Math.round(255 * f(0)), Math.round(255 * f(8)), Math.round(255 * f(4))];
}
export function expertColor(e) { return hslToRgb((e * 137.508) % 360, 0.65, 0.5); }
const blend = (rgb, w) => rgb.map((c) => Math.round(255 - Math.max(0, Math.min(1, w)) * (255 - c)));
const fmt = (x) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(3));

function render({ model, el }) {
  el.classList.add("wb-router");
  el.dataset.wb = "router";
  const layers = model.get("layer_ids"), L = layers.length;
  const T = model.get("num_tokens"), k = model.get("top_k"), E = model.get("num_experts");
  const idx = new Int16Array(bytesOf(model.get("expert_idx")));
  const wts = new Float32Array(bytesOf(model.get("expert_weights")));
  const logitsBuf = bytesOf(model.get("router_logits"));
  const logits = logitsBuf.byteLength ? new Float32Array(logitsBuf) : null;
  const labels = model.get("labels") || [];
  const at = (l, t, j) => (l * T + t) * k + j;
  const tokenName = (t) => (labels[t] !== undefined ? `token ${t} ${JSON.stringify(labels[t])}` : `token ${t}`);

  const bar = h("div", "wb-bar");
  bar.append(h("span", "wb-title", model.get("title") || "Expert routing"),
    h("span", "wb-sub", `${T} tokens × ${L} layers · top-${k} of ${E} experts · colour = expert, intensity = weight`));
  // Heatmap: one pixel per token, k rows per layer plus a white gap row; scaled up with CSS.
  const rowH = Math.max(12, 4 * k), cellW = Math.max(2, Math.min(14, Math.floor(900 / Math.max(T, 1))));
  const heat = h("canvas", "wb-heat");
  heat.width = Math.max(T, 1);
  heat.height = Math.max(L * (k + 1) - 1, 1);
  heat.style.width = `${heat.width * cellW}px`;
  heat.style.height = `${L * rowH}px`;
  const ctx = heat.getContext("2d");
  const img = ctx.createImageData(heat.width, heat.height);
  img.data.fill(255);
  const colors = Array.from({ length: E }, (_, e) => expertColor(e));
  for (let l = 0; l < L; l++) for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) {
    const rgb = blend(colors[idx[at(l, t, j)]] || [0, 0, 0], wts[at(l, t, j)]);
    const p = ((l * (k + 1) + j) * heat.width + t) * 4;
    img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2];
  }
  ctx.putImageData(img, 0, 0);
  const yLabels = h("div", "wb-ylabels");
  for (const i of layers) { const d = h("div", "", `L${i}`); d.style.height = `${rowH}px`; yLabels.append(d); }
  const cursor = h("div", "wb-cursor");
  const scroll = h("div", "wb-heat-scroll");
  const inner = h("div", "wb-heat-inner");
  inner.append(heat, cursor);
  scroll.append(inner);
  const heatRow = h("div", "wb-heat-row");
  heatRow.append(yLabels, scroll);
  const info = h("div", "wb-info", "Hover the heatmap for picks; click a cell for its router logits.");

  // Per-layer expert load: a grid of L x E cells, intensity = share of the layer's picks.
  const loadGrid = h("div", "wb-load");
  loadGrid.style.gridTemplateColumns = `3em repeat(${E}, minmax(6px, 14px))`;
  const loads = [];
  for (let l = 0; l < L; l++) {
    const row = new Array(E).fill(0), wsum = new Array(E).fill(0);
    for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) { const e = idx[at(l, t, j)]; row[e]++; wsum[e] += wts[at(l, t, j)]; }
    loads.push(row);
    loadGrid.append(h("div", "wb-load-label", `L${layers[l]}`));
    const most = Math.max(1, ...row);
    for (let e = 0; e < E; e++) {
      const c = h("div", "wb-load-cell");
      c.dataset.layer = String(layers[l]); c.dataset.expert = String(e); c.dataset.count = String(row[e]);
      c.style.background = css(blend(colors[e], row[e] / most));
      c.title = `layer ${layers[l]} · expert ${e}: ${row[e]} picks (${(100 * row[e] / Math.max(1, T * k)).toFixed(1)}%)` +
        (row[e] ? `, mean weight ${(wsum[e] / row[e]).toFixed(3)}` : "");
      loadGrid.append(c);
    }
  }
  const loadPanel = h("div", "wb-panel");
  loadPanel.append(h("div", "wb-panel-title", "Expert load per layer (picks; darker = more)"), loadGrid);

  const logitTitle = h("div", "wb-panel-title");
  const bars = h("div", "wb-bars");
  const logitPanel = h("div", "wb-panel");
  logitPanel.append(logitTitle, bars);
  const panels = h("div", "wb-panels");
  panels.append(loadPanel, logitPanel);
  el.append(bar, heatRow, info, panels);

  function cellAt(ev) {
    const r = heat.getBoundingClientRect();
    const t = Math.floor((ev.clientX - r.left) / cellW), l = Math.floor((ev.clientY - r.top) / rowH);
    return t >= 0 && t < T && l >= 0 && l < L ? [l, t] : null;
  }
  function describe(l, t) {
    const picks = [];
    for (let j = 0; j < k; j++) picks.push(`expert ${idx[at(l, t, j)]} (${wts[at(l, t, j)].toFixed(3)})`);
    info.textContent = `layer ${layers[l]} · ${tokenName(t)} · picks ${picks.join(", ")}`;
  }
  function showSelected() {
    let [l, t] = model.get("selected") || [0, 0];
    l = Math.max(0, Math.min(L - 1, l)); t = Math.max(0, Math.min(T - 1, t));
    if (!L || !T) return;
    cursor.style.left = `${t * cellW}px`; cursor.style.top = `${l * rowH}px`;
    cursor.style.width = `${cellW}px`; cursor.style.height = `${rowH}px`;
    logitTitle.textContent = `Router logits · layer ${layers[l]} · ${tokenName(t)}`;
    bars.replaceChildren();
    const picked = new Map();
    for (let j = 0; j < k; j++) picked.set(idx[at(l, t, j)], wts[at(l, t, j)]);
    const vals = logits ? Array.from(logits.subarray((l * T + t) * E, (l * T + t + 1) * E))
      : Array.from({ length: E }, (_, e) => picked.get(e) ?? 0);
    const lo = Math.min(...vals), hi = Math.max(...vals), span = hi - lo || 1;
    for (let e = 0; e < E; e++) {
      const b = h("div", "wb-logit" + (picked.has(e) ? " picked" : ""));
      b.dataset.expert = String(e);
      b.dataset.value = String(vals[e]);
      const fill = h("div", "wb-logit-fill");
      fill.style.height = `${Math.max(2, 100 * (vals[e] - lo) / span)}%`;
      fill.style.background = css(picked.has(e) ? colors[e] : blend(colors[e], 0.35));
      b.title = `expert ${e}: ${logits ? "logit " + fmt(vals[e]) : "weight " + fmt(vals[e])}` +
        (picked.has(e) ? ` · picked, weight ${picked.get(e).toFixed(3)}` : "");
      b.append(fill, h("div", "wb-logit-label", String(e)));
      bars.append(b);
    }
    if (!logits) logitPanel.dataset.missing = "router_logits";
  }
  heat.addEventListener("mousemove", (ev) => { const c = cellAt(ev); if (c) describe(...c); });
  heat.addEventListener("click", (ev) => {
    const c = cellAt(ev);
    if (!c) return;
    model.set("selected", c);
    model.save_changes();
    showSelected();
  });
  model.on("change:selected", showSelected);
  showSelected();
  el.dataset.ready = "1";
  return () => model.off("change:selected", showSelected);
}

export default { render };
