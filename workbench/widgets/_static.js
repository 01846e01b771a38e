// Static runtime for workbench widgets: stands in for the kernel-side model so a widget's ES module
// renders from state embedded in the page (file://, no kernel, no network). Binary traits arrive as
// base64 and are handed to the module as DataView, like anywidget does. Nothing here touches innerHTML.
class StaticModel {
  constructor(state) {
    this.state = state;
    this.handlers = new Map();
  }
  get(name) { return this.state[name]; }
  set(name, value) {
    this.state[name] = value;
    for (const cb of this.handlers.get(`change:${name}`) || []) cb();
  }
  save_changes() {}
  send() {} // no kernel: requests for more data go nowhere, widgets fall back to embedded data
  on(event, cb) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(cb);
  }
  off(event, cb) {
    const list = this.handlers.get(event) || [];
    this.handlers.set(event, cb ? list.filter((f) => f !== cb) : []);
  }
}

function decodeState(value) {
  if (Array.isArray(value)) return value.map(decodeState);
  if (value && typeof value === "object") {
    if (typeof value.$binary === "string") {
      const raw = atob(value.$binary);
      const bytes = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
      return new DataView(bytes.buffer);
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, decodeState(v)]));
  }
  return value;
}

async function mount(root) {
  const spec = JSON.parse(root.querySelector("script.wb-spec").textContent);
  const url = URL.createObjectURL(new Blob([spec.esm], { type: "text/javascript" }));
  const mod = await import(url);
  URL.revokeObjectURL(url);
  const widget = mod.default || mod;
  const model = new StaticModel({ ...decodeState(spec.state), _static: true }); // widgets hide kernel-only controls
  const el = document.createElement("div");
  root.querySelector(".wb-fallback")?.remove();
  root.appendChild(el);
  if (widget.initialize) await widget.initialize({ model });
  await widget.render({ model, el });
}
