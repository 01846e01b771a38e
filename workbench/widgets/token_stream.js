// TokenStreamView: one <span> per Harmony token, grouped by message, coloured by channel and role.
// Model text is only ever set with textContent; class names come from fixed tables, never from text.
const KINDS = ["special", "header", "content", "stray", "invalid"];
const CHANNEL_CLASS = { analysis: "ch-analysis", commentary: "ch-commentary", final: "ch-final" };
const ROLE_CLASS = { user: "role-user", system: "role-system", developer: "role-developer", tool: "role-tool" };
const LEGEND = [["ch-analysis", "analysis"], ["ch-commentary", "commentary"], ["ch-final", "final"],
  ["role-user", "user"], ["role-system", "system / developer"], ["role-tool", "tool"], ["err", "parse error"]];
const CHUNK = 2000; // tokens added to the page per animation frame
// A message body is split into blocks of tokens so that appending re-lays out only the last block
// (one inline block of 10,000 spans costs ~200 ms of layout per append). Blocks end after a newline
// once they hold SOFT tokens, and in any case at HARD tokens.
const SOFT = 256, HARD = 1024;
const nextFrame = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (f) => setTimeout(f, 0);



// The batch wire format written by token_stream.py's encode_events.
function decode(data, strings, start) {
  const buf = bytesOf(data);
  if (buf.byteLength < 8) return [];
  const [n, nText] = new Uint32Array(buf, 0, 2);
  let o = 8;
  const take = (Type, count) => { const a = new Type(buf, o, count); o += a.byteLength; return a; };
  const ids = take(Float64Array, n), msg = take(Int32Array, n), lp = take(Float32Array, n);
  const off = take(Uint32Array, n + 1);
  const role = take(Uint32Array, n), chan = take(Uint32Array, n), rcpt = take(Uint32Array, n);
  const err = take(Uint32Array, n), kind = take(Uint8Array, n);
  const text = new TextDecoder().decode(new Uint8Array(buf, o, nText));
  const str = (i) => (i ? strings[i] ?? null : null);
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = {
      position: start + i, id: ids[i], message: msg[i] < 0 ? null : msg[i], logprob: lp[i],
      text: text.slice(off[i], off[i + 1]), role: str(role[i]), channel: str(chan[i]),
      recipient: str(rcpt[i]), error: str(err[i]), kind: KINDS[kind[i]] || "invalid",
    };
  }
  return out;
}

function classesOf(t) {
  let c = "tok k-" + t.kind;
  if (t.role && t.role !== "assistant") c += " " + (ROLE_CLASS[t.role] || "role-other");
  else if (t.channel) c += " " + (CHANNEL_CLASS[t.channel] || "ch-other");
  else if (t.role === "assistant") c += " ch-none";
  if (t.error) c += " err";
  if (t.text === "") c += " empty";
  return c;
}

function groupLabel(t) {
  if (t.message === null) return "outside any message";
  let s = `#${t.message} ${t.role ?? "?"}`;
  if (t.channel) s += ` · ${t.channel}`;
  if (t.recipient) s += ` → ${t.recipient}`;
  return s;
}

function render({ model, el }) {
  el.classList.add("wb-tokens");
  el.dataset.wb = "token-stream";
  const bar = h("div", "wb-bar");
  const title = h("span", "wb-title", model.get("title") || "Token stream");
  const toggleLabel = h("label", "wb-toggle");
  const toggle = h("input");
  toggle.type = "checkbox";
  toggleLabel.append(toggle, h("span", "", " special tokens"));
  const legend = h("span", "wb-legend");
  for (const [cls, name] of LEGEND) legend.append(h("span", "tok " + cls, name));
  const counter = h("span", "wb-count");
  bar.append(title, toggleLabel, legend, counter);
  const stream = h("div", "wb-stream");
  const info = h("div", "wb-info", "Hover a token for its id, position and logprob; click to pin it.");
  const errorList = h("ul", "wb-errors");
  el.append(bar, stream, info, errorList);

  let toks = [], spans = [], groups = [], strings = [""], errors = [], scheduled = false, pinned = -1, live = false;

  const setSpecial = () => {
    toggle.checked = !!model.get("show_special");
    el.classList.toggle("hide-special", !toggle.checked);
  };
  setSpecial();
  toggle.addEventListener("change", () => {
    model.set("show_special", toggle.checked);
    model.save_changes();
    el.classList.toggle("hide-special", !toggle.checked);
  });

  function newBlock(g) {
    g.block = h("div", "wb-block");
    g.body.append(g.block);
  }

  function addSpan(t) {
    const key = t.message ?? -1;
    let g = groups[groups.length - 1];
    if (!g || g.key !== key) {
      const box = h("div", "wb-msg" + (key < 0 ? " wb-outside" : ""));
      box.dataset.message = String(key);
      const body = h("div", "wb-msg-body");
      box.append(h("div", "wb-msg-head", groupLabel(t)), body);
      stream.append(box);
      g = { key, box, body, block: null, last: "" };
      groups.push(g);
      newBlock(g);
    } else {
      const n = g.block.childElementCount;
      if (n >= HARD || (n >= SOFT && g.last.endsWith("\n"))) newBlock(g);
    }
    const s = h("span", classesOf(t), t.text);
    s._wb = t.position;
    g.block.append(s);
    g.last = t.text;
    spans.push(s);
  }

  function truncate(n) {
    if (toks.length > n) toks.length = n;
    while (spans.length > n) {
      const s = spans.pop();
      const block = s.parentNode;
      s.remove();
      if (block && !block.firstChild) {
        const g = groups[groups.length - 1];
        block.remove();
        if (!g.body.firstChild) groups.pop().box.remove();
        else g.block = g.body.lastChild;
      }
    }
    const g = groups[groups.length - 1];
    if (g) g.last = g.block.lastChild ? g.block.lastChild.textContent : "";
  }

  function updateCounter() {
    const live = model.get("finished") ? "" : " · live";
    counter.textContent = `${spans.length} tokens · ${errors.length} errors${live}`;
    el.dataset.count = String(spans.length);
    el.dataset.received = String(toks.length);
  }

  function pump() {
    scheduled = false;
    // While streaming, keep the newest tokens in view unless the reader scrolled up.
    const follow = live && stream.scrollTop + stream.clientHeight >= stream.scrollHeight - 40;
    const end = Math.min(toks.length, spans.length + CHUNK);
    for (let i = spans.length; i < end; i++) addSpan(toks[i]);
    if (follow) stream.scrollTop = stream.scrollHeight;
    updateCounter();
    if (spans.length < toks.length) schedule();
    else showHighlight();
  }
  function schedule() {
    if (!scheduled) { scheduled = true; nextFrame(pump); }
  }

  function showErrors(rows) {
    errors = rows || [];
    errorList.replaceChildren();
    for (const [pos, code, detail] of errors) {
      const li = h("li");
      li.append(h("span", "wb-code", code), h("span", "", pos < toks.length ? ` token ${pos}: ` : " end of stream: "),
        h("span", "", detail));
      li.addEventListener("click", () => pin(pos));
      errorList.append(li);
    }
  }

  function describe(i) {
    const t = toks[i];
    if (!t) return;
    info.replaceChildren();
    const where = [t.role, t.channel].filter(Boolean).join(" · ");
    const parts = [`position ${t.position}`, `id ${t.id}`, t.kind];
    if (where) parts.push(where);
    if (t.recipient) parts.push(`to ${t.recipient}`);
    if (t.message !== null) parts.push(`message #${t.message}`);
    parts.push(Number.isNaN(t.logprob) ? "logprob —" : `logprob ${t.logprob.toFixed(3)} (p=${Math.exp(t.logprob).toFixed(3)})`);
    info.append(h("div", "wb-info-main", parts.join(" · ")), h("div", "wb-info-text", "text " + JSON.stringify(t.text)));
    if (t.error) info.append(h("div", "wb-info-error", "error: " + t.error));
  }

  function pin(i) {
    if (pinned >= 0 && spans[pinned]) spans[pinned].classList.remove("pinned");
    pinned = pinned === i ? -1 : i;
    if (pinned >= 0 && spans[pinned]) {
      spans[pinned].classList.add("pinned");
      spans[pinned].scrollIntoView({ block: "nearest" });
      describe(pinned);
    }
    model.set("selected", pinned);
    model.save_changes();
  }

  let lit = [];
  function showHighlight() {
    for (const s of lit) s.classList.remove("hl");
    lit = [];
    const [a, b] = model.get("highlight") || [];
    if (a === undefined) return;
    for (let i = Math.max(0, a); i <= Math.min(b ?? a, spans.length - 1); i++) {
      spans[i].classList.add("hl");
      lit.push(spans[i]);
    }
    if (lit.length) lit[0].scrollIntoView({ block: "nearest" });
  }

  stream.addEventListener("mouseover", (ev) => {
    const s = ev.target.closest?.(".tok");
    if (s && s._wb !== undefined && pinned < 0) describe(s._wb);
  });
  stream.addEventListener("click", (ev) => {
    const s = ev.target.closest?.(".tok");
    if (s && s._wb !== undefined) pin(s._wb);
  });

  const same = (a, b) => a.id === b.id && a.text === b.text && a.kind === b.kind && a.message === b.message &&
    a.role === b.role && a.channel === b.channel && a.recipient === b.recipient && a.error === b.error;
  // Synced state (at start, on snapshots and at the end): keep what agrees, replace the rest.
  function merge() {
    strings = model.get("strings") || [""];
    const all = decode(model.get("data"), strings, 0);
    let i = 0;
    while (i < toks.length && i < all.length && same(toks[i], all[i])) i++;
    if (i < toks.length && i < all.length) truncate(i);
    for (let j = toks.length; j < all.length; j++) toks.push(all[j]);
    showErrors(model.get("errors"));
    drain();
    schedule();
  }
  // A live batch: replace everything from its start on.
  function apply(msg, buffers) {
    live = true;
    strings = msg.strings || strings;
    truncate(msg.start);
    for (const t of decode(buffers && buffers[0], strings, msg.start)) toks.push(t);
    if (msg.errors) showErrors(msg.errors);
    schedule();
  }
  // Batches that came after a gap (this view started late) wait for a snapshot or a reply.
  let pending = [], asked = false, batches = 0;
  function drain() {
    while (pending.length && pending[0][0].start <= toks.length) {
      const [msg, buffers] = pending.shift();
      if (msg.end > toks.length) apply(msg, buffers);
    }
    if (!pending.length) asked = false;
  }
  function onMessage(msg, buffers) {
    if (!msg || msg.type !== "append") return;
    el.dataset.batches = String(++batches);
    if (msg.reply && msg.end <= toks.length) return;
    if (msg.start > toks.length) {
      pending.push([msg, buffers]);
      if (!asked) { asked = true; model.send({ type: "hello", have: toks.length }); }
      return;
    }
    apply(msg, buffers);
    drain();
  }
  const onFinished = () => updateCounter();
  merge();
  model.on("change:data", merge);
  model.on("change:show_special", setSpecial);
  model.on("change:highlight", showHighlight);
  model.on("change:finished", onFinished);
  model.on("msg:custom", onMessage);
  return () => {
    model.off("change:data", merge);
    model.off("change:show_special", setSpecial);
    model.off("change:highlight", showHighlight);
    model.off("change:finished", onFinished);
    model.off("msg:custom", onMessage);
  };
}

export default { render };
