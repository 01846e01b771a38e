"""What every workbench widget shares: anywidget plumbing, binary arrays, and static HTML export.

A widget is a small Python class on ``anywidget.AnyWidget`` with one ES module and one CSS file
beside it (``NAME.js``, ``NAME.css``); the module is served with the shared DOM helpers of ``_dom.js``
in front (``module_source``). Tensors travel as ``bytes`` traits (binary buffers on the
comm, ``DataView`` in JavaScript), never as JSON lists.

Static output: ``export_html(path)`` and ``_repr_html_`` embed the widget's synced state, its ES
module, its CSS and a small runtime (``_static.js``, a stand-in for the kernel-side model) in one
self-contained HTML snippet. The state and the module source sit in a ``<script
type="application/json">`` whose ``<``, ``>`` and ``&`` are escaped, so no model text can close the
script or open a tag; the widget code then inserts model text with ``textContent`` only.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np

try:
    import anywidget
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("workbench.widgets needs anywidget and ipywidgets: pip install 'gpt-oss-workbench[lab]'") from e

HERE = Path(__file__).parent
_BASE_TRAITS = frozenset(anywidget.AnyWidget.class_trait_names(sync=True))


def as_bytes(array, dtype) -> bytes:
    """A tensor or array as contiguous little-endian bytes of ``dtype`` (for a binary trait)."""
    if hasattr(array, "detach"):  # torch
        array = array.detach().to("cpu")
        if array.dtype.is_floating_point:
            array = array.float()
        array = array.numpy()
    return np.ascontiguousarray(np.asarray(array), dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def json_for_script(data) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` survive."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _encode_state(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$binary": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_state(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def module_source(name: str) -> str:
    """The ES module of widget ``name``: the shared helpers (``_dom.js``: ``h``, ``bytesOf``, ``shade``,
    ``css``) followed by ``NAME.js``, which uses them without importing."""
    return "\n".join((HERE / f).read_text(encoding="utf-8") for f in ("_dom.js", f"{name}.js"))


class WorkbenchWidget(anywidget.AnyWidget):
    """Base class: set ``_module`` to the stem of the .js/.css pair beside this file."""

    _module = ""

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_module"):
            cls._esm = module_source(cls._module)  # read once, before anywidget's __init_subclass__ runs
            cls._css = HERE / f"{cls._module}.css"
        super().__init_subclass__(**kwargs)

    # -- static output ---------------------------------------------------------------------------

    def static_state(self) -> dict:
        """The synced state that the ES module reads (this class's traits, not anywidget's own)."""
        names = sorted(set(self.trait_names(sync=True)) - _BASE_TRAITS)
        return {name: getattr(self, name) for name in names}

    def fallback_text(self) -> str:
        """Plain text shown where JavaScript does not run (GitHub's notebook view, e-mail)."""
        return type(self).__name__

    def html_snippet(self) -> str:
        return html_snippet(self)

    def _repr_html_(self) -> str:
        return html_snippet(self)

    def export_html(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Write a self-contained HTML page (works from file://, no kernel, no network)."""
        return export_html(path, [self], title=title or type(self).__name__)


def html_snippet(widget: WorkbenchWidget) -> str:
    wid = "wb-" + uuid.uuid4().hex[:12]
    spec = {
        "esm": module_source(widget._module),
        "state": _encode_state(widget.static_state()),
    }
    css = (HERE / f"{widget._module}.css").read_text(encoding="utf-8")
    runtime = (HERE / "_static.js").read_text(encoding="utf-8")
    return (
        f'<div class="wb-static" id="{wid}">'
        f"<style>{css}</style>"
        f'<pre class="wb-fallback">{html.escape(widget.fallback_text())}</pre>'
        f'<script type="application/json" class="wb-spec">{json_for_script(spec)}</script>'
        f'<script type="module">{runtime}\nmount(document.getElementById("{wid}"));</script>'
        f"</div>"
    )


def export_html(path: str | os.PathLike, widgets: Iterable[WorkbenchWidget], title: str = "workbench") -> Path:
    """Write several widgets into one self-contained page, atomically (temp file, then rename)."""
    path = Path(path)
    body = "\n".join(html_snippet(w) for w in widgets)
    page = (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f'<body style="font-family: system-ui, sans-serif; margin: 1em">\n{body}\n</body></html>\n')
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def without_widget_state(nb):
    """A copy of a notebook (an nbformat node or a dict) without its saved widget state.

    nbconvert (and GitHub) show a widget's ``application/vnd.jupyter.widget-view+json`` output only
    when the notebook holds widget state, and then need the widget manager from a CDN. Without the
    state they fall back to each workbench widget's ``text/html``: the self-contained static view.
    nbclient saves widget state by default, so strip it before converting for offline reading.
    """
    import copy

    nb = copy.deepcopy(nb)
    nb["metadata"].pop("widgets", None)
    return nb


def token_labels(tokens, count: int, batch: int = 0) -> list[str]:
    """Text for each of ``count`` token positions: from a transcript (event texts), strings, or token
    ids (decoded one at a time with the Harmony vocabulary; [B, T] ids: row ``batch``). None: none."""
    if tokens is None:
        return []
    if hasattr(tokens, "events"):
        labels = [e.text for e in tokens.events]
    else:
        if hasattr(tokens, "tolist"):
            tokens = tokens.tolist()
        tokens = list(tokens)
        if tokens and isinstance(tokens[0], list):  # batched ids
            tokens = tokens[batch]
        if all(isinstance(t, str) for t in tokens):
            labels = tokens
        else:
            from ..harmony import encoding

            enc = encoding()
            labels = []
            for t in tokens:
                try:
                    labels.append(enc.decode([int(t)]))
                except Exception:  # noqa: BLE001 - an id outside the vocabulary still gets a label
                    labels.append(f"<{t}>")
    if len(labels) != count:
        raise ValueError(f"got {len(labels)} token labels for {count} token positions in the trace")
    return [str(x) for x in labels]


def trace_layers(trace, suffix: str, limit: int = 1024) -> list[int]:
    """Layer numbers i for which ``blocks.{i}.{suffix}`` is in ``trace`` (any mapping with ``in``)."""
    keys = getattr(trace, "keys", None)
    if callable(keys):
        import re

        pattern = re.compile(r"blocks\.(\d+)\." + re.escape(suffix) + "$")
        found = sorted({int(m.group(1)) for k in keys() if (m := pattern.match(str(k)))})
    else:
        found = [i for i in range(limit) if f"blocks.{i}.{suffix}" in trace]
    if not found:
        have = list(keys())[:8] if callable(keys) else []
        raise KeyError(f"the trace has no 'blocks.{{i}}.{suffix}' tensors (run with names=['*.{suffix}'] to keep "
                       f"them); it has {have}{'...' if have else ''}")
    return found


def trace_tensor(trace, name: str, batch: int = 0):
    """``trace[name]`` as a CPU float/int tensor with its hook point's dims (``workbench.hooks``); a
    leading batch dim is indexed with ``batch``."""
    from ..hooks import point

    ndim = len(point(name).dims)
    t = trace[name]
    if not hasattr(t, "dim"):
        import torch

        t = torch.as_tensor(np.asarray(t))
    t = t.detach().to("cpu")
    if t.dim() == ndim + 1:
        t = t[batch]
    if t.dim() != ndim:
        raise ValueError(f"trace[{name!r}] has shape {list(t.shape)}; expected {ndim} dims (or {ndim + 1} with batch)")
    return t
