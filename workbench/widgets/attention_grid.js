// AttentionGridView: every head of one layer as a small attention pattern (column 0: the sink), one
// enlarged on click. Arrays arrive as binary; token text is set with textContent only.
const ORANGE = [234, 88, 12], BLUE = [29, 78, 216];

function paint(canvas, probs, sink, hd, T, S) {
  canvas.width = S + 1;
  canvas.height = Math.max(T, 1);
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(canvas.width, canvas.height);
  for (let t = 0; t < T; t++) for (let x = 0; x <= S; x++) {
    const rgb = x === 0 ? shade(ORANGE, sink[hd * T + t]) : shade(BLUE, probs[(hd * T + t) * S + x - 1]);
    const p = (t * canvas.width + x) * 4;
    img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function render({ model, el }) {
  el.classList.add("wb-attn-grid");
  el.dataset.wb = "attention-grid";
  const layer = model.get("layer"), H = model.get("num_heads"), T = model.get("num_tokens"), S = model.get("num_keys");
  const probs = new Float32Array(bytesOf(model.get("probs")));
  const sink = new Float32Array(bytesOf(model.get("sink_prob")));
  const labels = model.get("labels") || [];
  const tokenName = (t) => (labels[t] !== undefined ? `token ${t} ${JSON.stringify(labels[t])}` : `token ${t}`);

  const bar = h("div", "wb-bar");
  bar.append(h("span", "wb-title", model.get("title") || `Attention · layer ${layer}`),
    h("span", "wb-sub", `${H} heads · ${T} queries × ${S} keys · column 0 (orange) = sink, blue = key weight`));
  const info = h("div", "wb-info", "Hover a pattern for values; click a head to enlarge it.");
  const thumbW = Math.max(40, Math.min(160, Math.floor(960 / Math.max(Math.min(H, 8), 1)) - 12));
  const cell = Math.max(1, thumbW / (S + 1));

  function hover(canvas, hd, scale) {
    canvas.addEventListener("mousemove", (ev) => {
      const r = canvas.getBoundingClientRect();
      const x = Math.floor((ev.clientX - r.left) / scale), t = Math.floor((ev.clientY - r.top) / scale);
      if (x < 0 || x > S || t < 0 || t >= T) return;
      info.textContent = x === 0 ? `head ${hd} · query ${tokenName(t)} → sink: ${sink[hd * T + t].toFixed(4)}`
        : `head ${hd} · query ${tokenName(t)} → key ${tokenName(x - 1)}: ${probs[(hd * T + t) * S + x - 1].toFixed(4)}`;
    });
  }

  const grid = h("div", "wb-heads");
  const heads = [];
  for (let hd = 0; hd < H; hd++) {
    let m = 0;
    for (let t = 0; t < T; t++) m += sink[hd * T + t];
    m /= Math.max(T, 1);
    const box = h("div", "wb-head");
    box.dataset.head = String(hd);
    box.dataset.meanSink = String(m);
    const canvas = h("canvas", "wb-thumb");
    paint(canvas, probs, sink, hd, T, S);
    canvas.style.width = `${(S + 1) * cell}px`;
    canvas.style.height = `${T * cell}px`;
    hover(canvas, hd, cell);
    box.append(h("div", "wb-head-title", `head ${hd} · sink ${m.toFixed(2)}`), canvas);
    box.addEventListener("click", () => { model.set("selected", hd); model.save_changes(); show(); });
    grid.append(box);
    heads.push(box);
  }

  const bigTitle = h("div", "wb-panel-title");
  const big = h("canvas", "wb-big");
  const bigScale = Math.max(1, Math.min(14, Math.floor(560 / (S + 1)), Math.floor(420 / Math.max(T, 1))));
  const detail = h("div", "wb-panel");
  detail.append(bigTitle, big);
  el.append(bar, grid, detail, info);

  let bigHead = -1;
  function show() {
    const hd = Math.max(0, Math.min(H - 1, model.get("selected")));
    heads.forEach((b, i) => b.classList.toggle("selected", i === hd));
    bigTitle.textContent = `Layer ${layer} · head ${hd} (column 0: sink)`;
    paint(big, probs, sink, hd, T, S);
    big.style.width = `${(S + 1) * bigScale}px`;
    big.style.height = `${T * bigScale}px`;
    big.dataset.head = String(hd);
    if (bigHead !== hd) {
      bigHead = hd;
      big.onmousemove = (ev) => {
        const r = big.getBoundingClientRect();
        const x = Math.floor((ev.clientX - r.left) / bigScale), t = Math.floor((ev.clientY - r.top) / bigScale);
        if (x < 0 || x > S || t < 0 || t >= T) return;
        info.textContent = x === 0 ? `head ${hd} · query ${tokenName(t)} → sink: ${sink[hd * T + t].toFixed(4)}`
          : `head ${hd} · query ${tokenName(t)} → key ${tokenName(x - 1)}: ${probs[(hd * T + t) * S + x - 1].toFixed(4)}`;
      };
    }
  }
  model.on("change:selected", show);
  show();
  el.dataset.ready = "1";
  return () => model.off("change:selected", show);
}

export default { render };
