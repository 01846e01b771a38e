// Helpers shared by every widget module: prepended to each NAME.js by _base.module_source (one home),
// so the modules use them without imports (anywidget and the static runtime load one ES module each).
// Text is only ever set with textContent: model output never becomes markup.
function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function bytesOf(x) {
  if (!x) return new ArrayBuffer(0);
  if (x instanceof ArrayBuffer) return x;
  return x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength); // DataView or typed array: aligned copy
}
const shade = (rgb, p) => rgb.map((c) => Math.round(255 - Math.max(0, Math.min(1, p)) * (255 - c)));
const css = (rgb) => `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
