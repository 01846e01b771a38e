// SinkView: attention-sink mass per layer/head/query position, and one head's attention pattern
// (sink column first). Arrays arrive as binary; token text is set with textContent only.
const ORANGE = [234, 88, 12], BLUE = [29, 78, 216];

function paint(canvas, width, height, colorAt) {
  canvas.width = Math.max(width, 1);
  canvas.height = Math.max(height, 1);
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(canvas.width, canvas.height);
  img.data.fill(255);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    const rgb = colorAt(x, y);
    if (!rgb) continue;
    const p = (y * canvas.width + x) * 4;
    img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2];
  }
  ctx.putImageData(img, 0, 0);
}

function render({ model, el }) {
  el.classList.add("wb-sinks");
  el.dataset.wb = "sinks";
  const layers = model.get("layer_ids"), L = layers.length;
  const H = model.get("num_heads"), T = model.get("num_tokens"), S = model.get("num_keys");
  const sink = new Float32Array(bytesOf(model.get("sink_prob")));
  const allBuf = bytesOf(model.get("patterns"));
  const all = allBuf.byteLength ? new Float32Array(allBuf) : null;
  const labels = model.get("labels") || [];
  const sinkAt = (l, hd, t) => sink[(l * H + hd) * T + t];
  const tokenName = (t) => (labels[t] !== undefined ? `token ${t} ${JSON.stringify(labels[t])}` : `token ${t}`);

  const bar = h("div", "wb-bar");
  bar.append(h("span", "wb-title", model.get("title") || "Attention sinks"),
    h("span", "wb-sub", `${L} layers × ${H} heads · ${T} query positions · orange = mass on the sink`));

  // Mean sink mass per (layer, head): a small clickable grid.
  const grid = h("div", "wb-grid");
  grid.style.gridTemplateColumns = `3em repeat(${H}, minmax(8px, 18px))`;
  const cells = [];
  for (let l = 0; l < L; l++) {
    grid.append(h("div", "wb-grid-label", `L${layers[l]}`));
    for (let hd = 0; hd < H; hd++) {
      let m = 0;
      for (let t = 0; t < T; t++) m += sinkAt(l, hd, t);
      m /= Math.max(T, 1);
      const c = h("div", "wb-grid-cell");
      c.dataset.layer = String(layers[l]); c.dataset.head = String(hd); c.dataset.mean = String(m);
      c.style.background = css(shade(ORANGE, m));
      c.title = `layer ${layers[l]} head ${hd}: mean sink mass ${m.toFixed(3)}`;
      c.addEventListener("click", () => select(l, hd));
      grid.append(c);
      cells.push(c);
    }
  }

  // Sink mass per query position: one row per (layer, head), a gap row between layers.
  const rowH = Math.max(2, Math.min(8, Math.floor(360 / Math.max(L * H, 1))));
  const colW = Math.max(1, Math.min(10, Math.floor(900 / Math.max(T, 1))));
  const map = h("canvas", "wb-map");
  const rowOf = (l, hd) => l * (H + 1) + hd;
  paint(map, T, L * (H + 1) - 1, (t, y) => {
    const l = Math.floor(y / (H + 1)), hd = y % (H + 1);
    return hd === H ? null : shade(ORANGE, sinkAt(l, hd, t));
  });
  map.style.width = `${map.width * colW}px`;
  map.style.height = `${map.height * rowH}px`;
  const mapScroll = h("div", "wb-map-scroll");
  mapScroll.append(map);
  const info = h("div", "wb-info", "Hover for values; click a head (grid or map) to see its attention pattern.");

  const patternTitle = h("div", "wb-panel-title");
  const pattern = h("canvas", "wb-pattern");
  const patternNote = h("div", "wb-note");
  const patternPanel = h("div", "wb-panel");
  patternPanel.append(patternTitle, pattern, patternNote);
  const top = h("div", "wb-panels");
  const gridPanel = h("div", "wb-panel");
  gridPanel.append(h("div", "wb-panel-title", "Mean sink mass per layer and head"), grid);
  top.append(gridPanel, patternPanel);
  const mapPanel = h("div", "wb-panel");
  mapPanel.append(h("div", "wb-panel-title", "Sink mass per query position (rows: layer, head; columns: tokens)"), mapScroll);
  el.append(bar, top, mapPanel, info);

  const mapCell = (ev) => {
    const r = map.getBoundingClientRect();
    const t = Math.floor((ev.clientX - r.left) / colW), y = Math.floor((ev.clientY - r.top) / rowH);
    const l = Math.floor(y / (H + 1)), hd = y % (H + 1);
    return t >= 0 && t < T && l >= 0 && l < L && hd < H ? [l, hd, t] : null;
  };
  map.addEventListener("mousemove", (ev) => {
    const c = mapCell(ev);
    if (c) info.textContent = `layer ${layers[c[0]]} · head ${c[1]} · ${tokenName(c[2])} · sink mass ${sinkAt(...c).toFixed(4)}`;
  });
  map.addEventListener("click", (ev) => { const c = mapCell(ev); if (c) select(c[0], c[1]); });

  function select(l, hd) {
    model.set("selected", [l, hd]);
    model.save_changes();
    showPattern();
  }
  function patternFor(l, hd) {
    if (all) return all.subarray((l * H + hd) * T * S, (l * H + hd + 1) * T * S);
    const [pl, ph] = model.get("pattern_of") || [];
    return pl === l && ph === hd ? new Float32Array(bytesOf(model.get("pattern"))) : null;
  }
  function showPattern() {
    const [l, hd] = model.get("selected") || [0, 0];
    cells.forEach((c, i) => c.classList.toggle("selected", i === l * H + hd));
    patternTitle.textContent = `Attention pattern · layer ${layers[l] ?? "?"} · head ${hd} (column 0: sink)`;
    const probs = S ? patternFor(l, hd) : null;
    pattern.dataset.layer = String(layers[l]); pattern.dataset.head = String(hd);
    if (!probs) {
      patternNote.textContent = !S ? "attn.probs is not in this trace."
        : model.get("_static") ? "This static export holds the pattern of the head selected when it was made only."
        : "Waiting for this head's pattern from the kernel.";
      pattern.dataset.ready = "0";
      return;
    }
    patternNote.textContent = "";
    paint(pattern, S + 1, T, (x, t) => (x === 0 ? shade(ORANGE, sinkAt(l, hd, t)) : shade(BLUE, probs[t * S + x - 1])));
    const cw = Math.max(1, Math.min(12, Math.floor(480 / (S + 1)), Math.floor(360 / Math.max(T, 1))));
    pattern.style.width = `${(S + 1) * cw}px`;
    pattern.style.height = `${T * cw}px`;
    pattern.dataset.ready = "1";
    pattern.onmousemove = (ev) => {
      const r = pattern.getBoundingClientRect();
      const x = Math.floor((ev.clientX - r.left) / cw), t = Math.floor((ev.clientY - r.top) / cw);
      if (x < 0 || x > S || t < 0 || t >= T) return;
      info.textContent = x === 0 ? `query ${tokenName(t)} → sink: ${sinkAt(l, hd, t).toFixed(4)}`
        : `query ${tokenName(t)} → key ${tokenName(x - 1)}: ${probs[t * S + x - 1].toFixed(4)}`;
    };
  }
  model.on("change:selected", showPattern);
  model.on("change:pattern", showPattern);
  showPattern();
  el.dataset.ready = "1";
  return () => { model.off("change:selected", showPattern); model.off("change:pattern", showPattern); };
}

export default { render };
