// MXFP4View: histogram of block scale exponents, E2M1 code distribution, quantisation error.
const E2M1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];
const CODE_ORDER = [15, 14, 13, 12, 11, 10, 9, 8, 0, 1, 2, 3, 4, 5, 6, 7]; // by value: -6 .. -0, +0 .. 6
const fmt = (x) => (x === 0 ? "0" : Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4 ? x.toExponential(2) : x.toPrecision(3));

function chart(title, items, cls) {
  // items: [{label, count, tip}]
  const panel = h("div", "wb-panel " + cls);
  panel.append(h("div", "wb-panel-title", title));
  const bars = h("div", "wb-bars");
  const most = Math.max(1, ...items.map((i) => i.count));
  const every = Math.ceil(items.length / 12); // label at most about 12 bars
  items.forEach((it, n) => {
    const b = h("div", "wb-bar-item");
    b.dataset.count = String(it.count);
    b.dataset.label = it.label;
    b.title = it.tip;
    const fill = h("div", "wb-fill");
    fill.style.height = `${(100 * it.count) / most}%`;
    b.append(fill, h("div", "wb-bar-label", n % every ? "" : it.label));
    bars.append(b);
  });
  panel.append(bars);
  return panel;
}

function render({ model, el }) {
  el.classList.add("wb-mxfp4");
  el.dataset.wb = "mxfp4";
  const scales = new Int32Array(bytesOf(model.get("scale_counts")));
  const codes = new Int32Array(bytesOf(model.get("code_counts")));
  const errBuf = bytesOf(model.get("error_counts"));
  const s = model.get("summary") || {};
  el.append(h("div", "wb-title", "MXFP4 · " + (model.get("title") || "")));
  const facts = [`shape ${JSON.stringify(s.shape)}`, `${s.blocks} blocks of 32`, `scale exponents ${s.exponent_min}..${s.exponent_max}`];
  if (s.relative_error !== undefined)
    facts.push(`relative error ${fmt(s.relative_error)}`, `RMSE ${fmt(s.rmse)}`, `max |error| ${fmt(s.max_abs_error)}`);
  el.append(h("div", "wb-sub", facts.join(" · ")));
  const panels = h("div", "wb-panels");

  let lo = 255, hi = 0;
  scales.forEach((c, i) => { if (c) { lo = Math.min(lo, i); hi = Math.max(hi, i); } });
  const scaleItems = [];
  const total = scales.reduce((a, b) => a + b, 0) || 1;
  for (let i = Math.max(0, lo - 1); i <= Math.min(255, hi + 1); i++)
    scaleItems.push({ label: String(i - 127), count: scales[i], tip: `scale 2^${i - 127}: ${scales[i]} blocks (${(100 * scales[i] / total).toFixed(1)}%)` });
  panels.append(chart("Block scale exponents (E8M0, 2^e)", scaleItems, "wb-scales"));

  const ctotal = codes.reduce((a, b) => a + b, 0) || 1;
  panels.append(chart("E2M1 codes (by value)", CODE_ORDER.map((c) => ({
    label: (Object.is(E2M1[c], -0) ? "-0" : String(E2M1[c])), count: codes[c],
    tip: `code ${c} (${Object.is(E2M1[c], -0) ? "-0" : E2M1[c]}): ${codes[c]} elements (${(100 * codes[c] / ctotal).toFixed(1)}%)`,
  })), "wb-codes"));

  if (errBuf.byteLength) {
    const counts = new Int32Array(errBuf), edges = new Float32Array(bytesOf(model.get("error_edges")));
    panels.append(chart("Relative error per block (max |error| / block max)", Array.from(counts, (c, i) => ({
      label: fmt(edges[i]), count: c, tip: `${fmt(edges[i])} – ${fmt(edges[i + 1])}: ${c} blocks`,
    })), "wb-errors"));
  } else {
    panels.append(h("div", "wb-note", "Pass reference= (the dense weight) to see the quantisation error."));
  }
  el.append(panels);
  el.dataset.ready = "1";
}

export default { render };
