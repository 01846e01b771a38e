// ToolTraceView: tool calls as an expandable timeline (native <details>). All model and tool text is
// set with textContent.
const secs = (d) => (d >= 1 ? `${d.toFixed(2)} s` : `${(1000 * d).toFixed(1)} ms`);

function render({ model, el }) {
  el.classList.add("wb-tools");
  el.dataset.wb = "tool-trace";
  const head = h("div", "wb-bar");
  const list = h("ol", "wb-timeline");
  el.append(head, list);

  function draw() {
    const steps = model.get("steps") || [];
    const total = steps.reduce((a, s) => a + (s.duration || 0), 0);
    const errors = steps.filter((s) => s.error).length;
    head.replaceChildren(h("span", "wb-title", model.get("title") || "Tool calls"),
      h("span", "wb-sub", `${steps.length} steps · ${secs(total)} in tools · ${errors} errors`));
    const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.index));
    list.replaceChildren();
    let start = 0;
    steps.forEach((s, i) => {
      const li = h("li", "wb-step" + (s.error ? " wb-error" : ""));
      li.dataset.index = String(i);
      const det = h("details");
      det.dataset.index = String(i);
      if (open.has(String(i))) det.open = true;
      const sum = h("summary");
      const track = h("span", "wb-track");
      const fill = h("span", "wb-span");
      fill.style.left = `${total ? (100 * start) / total : 0}%`;
      fill.style.width = `${total ? Math.max(0.5, (100 * (s.duration || 0)) / total) : 0}%`;
      track.append(fill);
      start += s.duration || 0;
      sum.append(h("span", "wb-index", `#${s.index ?? i}`), h("span", "wb-recipient", s.recipient ?? "?"),
        track, h("span", "wb-duration", secs(s.duration || 0)));
      if (s.error) sum.append(h("span", "wb-badge", "error"));
      det.append(sum);
      const body = h("div", "wb-body");
      const section = (name, text, cls) => {
        if (text === null || text === undefined || text === "") return;
        body.append(h("div", "wb-label", name), h("pre", cls || "", String(text)));
      };
      section("arguments", s.arguments, "wb-args");
      section("result", s.result, "wb-result");
      section("error", s.error, "wb-error-text");
      if (s.token_span) {
        const where = `tokens ${s.token_span[0]}–${s.token_span[1]} of generation ${s.generation ?? 0}` +
          (s.channel ? ` · channel ${s.channel}` : "") + (s.content_type ? ` · ${s.content_type}` : "");
        const line = h("div", "wb-label", where);
        if (s.linked && !model.get("_static")) {
          const btn = h("button", "wb-show", "show in token stream");
          btn.addEventListener("click", () => { model.set("selected", i); model.save_changes(); });
          line.append(" ", btn);
        }
        body.append(line);
        if (s.span_text !== null && s.span_text !== undefined) body.append(h("pre", "wb-span-text", s.span_text));
      }
      det.append(body);
      li.append(det);
      list.append(li);
    });
    el.dataset.count = String(steps.length);
  }
  draw();
  model.on("change:steps", draw);
  el.dataset.ready = "1";
  return () => model.off("change:steps", draw);
}

export default { render };
