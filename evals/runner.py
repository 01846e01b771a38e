"""The sweep runner: models x reasoning efforts x tasks x repeats, resumable, with bounded concurrency.

>>> result = run_sweep(["arithmetic", "dates"], [server("gpt-oss-20b", "http://127.0.0.1:8000/v1")],
...                    efforts=["low", "medium", "high"], limit=20, out="runs/demo", concurrency=8)  # doctest: +SKIP
>>> result.summary()  # doctest: +SKIP

Each job is one (task, sample, model, effort, repeat). The prompt is a Harmony conversation: a system
message with the reasoning effort, the task's instructions as the developer message, the sample as the
user message. A model is a ``Target``: a name and one or more backends (replicas of one model); jobs
go to the replica with the fewest in flight, so a sweep spreads over a fleet of servers. A failed call
is retried with exponential backoff (jittered) when the error is transient: a connection error, a 408,
429 or 5xx answer; any other error, or a sample that runs past ``timeout`` seconds, is recorded with
its error. Finished samples are logged as they complete (``logs``); running the same sweep into the
same folder skips every key already logged (and, with ``retry_errors``, re-runs those that failed).
``batch_size`` > 1 hands up to that many samples of one model to its backend at once
(``Backend.generate_batch``): the local model decodes them as one batch, with the same tokens as one at
a time (same per-sample seeds), several times faster on a small model; servers take them one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from workbench.backends import Backend
from workbench.backends.openai_compat import redact_url
from workbench.harmony import Conversation, parse_tokens

from .logs import LogWriter, latest_records
from .tasks import Sample, Task, get_task

EFFORTS = ("low", "medium", "high")


class SampleTimeout(TimeoutError):
    """A sample ran past the sweep's per-sample timeout (not retried)."""


@dataclass
class Target:
    """A model to evaluate: its name in the logs and the backends that serve it (replicas)."""

    name: str
    backends: list[Backend]
    _in_flight: list[int] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        if not self.backends:
            raise ValueError(f"model {self.name!r} has no backend")
        self._in_flight = [0] * len(self.backends)

    def acquire(self, avoid: int | None = None) -> int:
        """Index of the least busy replica (not ``avoid`` when there is another)."""
        with self._lock:
            order = sorted(range(len(self.backends)), key=lambda i: (i == avoid, self._in_flight[i], i))
            self._in_flight[order[0]] += 1
            return order[0]

    def release(self, i: int) -> None:
        with self._lock:
            self._in_flight[i] -= 1


def server(model: str, base_urls: str | Sequence[str], *, api_key: str | None = None, timeout: float = 600.0,
           name: str | None = None, api: str = "chat") -> Target:
    """A model behind one or more OpenAI-compatible servers (vLLM, Ollama, ``workbench serve``), spoken to
    through chat completions (``api="chat"``) or the Responses API (``api="responses"``)."""
    import openai

    from workbench.backends.openai_compat import OpenAIBackend

    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    backends = []
    for url in urls:
        # Retries are the runner's (counted and logged), not the client's own.
        client = openai.OpenAI(base_url=url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                               timeout=timeout, max_retries=0)
        backends.append(OpenAIBackend(model, client=client, api=api))
    return Target(name or model, backends)


def local(model, *, name: str | None = None, constrained: bool = False, device: str = "cpu") -> Target:
    """The workbench's own model in this process: a checkpoint path or a loaded model.

    ``constrained`` keeps decoding inside the Harmony grammar (what makes the random tiny model write
    well-formed messages); a trained model does not need it.
    """
    from workbench.backends import LocalBackend

    if isinstance(model, (str, os.PathLike)):
        name = name or Path(model).name
    backend = LocalBackend(model, constrained=constrained, device=device)
    return Target(name or "local", [backend])


def as_target(model) -> Target:
    if isinstance(model, Target):
        return model
    if isinstance(model, Backend):
        return Target(getattr(model, "model", None) or model.name, [model])
    if isinstance(model, (str, os.PathLike)):
        return local(model)
    raise TypeError(f"a model is a Target, a Backend or a checkpoint path, not {type(model).__name__}")


# -- one sample ----------------------------------------------------------------------------------

def transient(exc: BaseException) -> bool:
    """Worth retrying: connection trouble, 408/429/5xx answers."""
    if isinstance(exc, SampleTimeout):
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in (408, 409, 429) or status >= 500
    try:
        import httpx
        import openai

        if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def sample_seed(seed: int, *parts) -> int:
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Job:
    task: Task
    sample: Sample
    target: Target
    effort: str
    repeat: int

    @property
    def key(self) -> tuple:
        return (self.task.name, self.sample.id, self.target.name, self.effort, self.repeat)


@dataclass
class Settings:
    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    timeout: float = 600.0
    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0


def conversation(task: Task, sample: Sample, effort: str) -> Conversation:
    return Conversation.new(task.instructions, reasoning_effort=effort).user(task.prompt(sample))


def run_job(job: Job, s: Settings) -> dict:
    """Generate, parse and score one sample; returns its log record (errors are recorded, not raised)."""
    conv = conversation(job.task, job.sample, job.effort)
    seed = sample_seed(s.seed, *job.key[:2], job.effort, job.repeat)
    start = time.monotonic()
    tokens: list[int] = []
    transcript, trace = None, None
    error, attempts, replica = None, 0, None
    while True:
        attempts += 1
        replica = job.target.acquire(avoid=replica if attempts > 1 else None)
        backend = job.target.backends[replica]
        tokens, transcript, trace = [], None, None
        try:
            tokens, transcript, trace = generate_sample(backend, conv, job.task.tools, s, seed, job.effort)
            error = None
            break
        except Exception as e:  # noqa: BLE001 - a sample's failure is data, not a crash
            error = f"{type(e).__name__}: {e}"
            if not transient(e) or attempts > s.retries:
                break
            delay = min(s.max_backoff, s.backoff * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
            time.sleep(delay)
        finally:
            job.target.release(replica)
    latency = time.monotonic() - start
    return record_for(job, conv, tokens, error, latency, attempts, backend, transcript, trace)


def generate_sample(backend: Backend, conv: Conversation, tools: Sequence[str], s: Settings, seed: int,
                    effort: str):
    """One sample's completion: ``(tokens, transcript, tool trace or None)``.

    Without tools, one generation (``backend.stream``, the one decoder). With tools, the tool loop
    (``workbench.chat``) with the named tools; the tokens are then everything after the prompt as the
    model saw it: each generation, the tool's answer, ``<|start|>assistant``, the next generation.
    """
    deadline = time.monotonic() + s.timeout
    options = dict(max_new_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed)

    def check(_event=None) -> None:
        if time.monotonic() > deadline:
            raise SampleTimeout(f"sample ran past the timeout of {s.timeout:g} s")

    if not tools:
        turn = backend.stream(conv, reasoning_effort=effort, **options)
        for _ in turn:
            check()
        return turn.tokens, turn.transcript, None
    from workbench.harmony import encoding
    from workbench.toolloop import chat, tool_message

    made = make_tools(tools)
    try:
        result = chat(backend, conv, made, reasoning_effort=effort, on_event=check, **options)
    finally:
        for tool in made:
            getattr(tool, "close", lambda: None)()
    enc, tokens = encoding(), []
    for g, t in enumerate(result.transcripts):
        tokens += t.tokens
        for step in (x for x in result.trace if x.generation == g):
            tokens += enc.render(tool_message(step.recipient, step.result, step.channel))
        if g < len(result.transcripts) - 1:
            tokens += enc.encode("<|start|>assistant", allowed_special="all")
    return tokens, parse_tokens(tokens, channels=conv.channels), result.trace


def make_tools(names: Sequence[str]) -> list:
    """Fresh tool objects for one sample (the python tool's session is per conversation)."""
    from workbench.tools import PythonTool

    known = {"python": PythonTool}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown tool {unknown[0]!r} for a task; known: {', '.join(known)}")
    return [known[n]() for n in names]


def record_for(job: Job, conv: Conversation, tokens: list[int], error: str | None, latency: float, attempts: int,
               backend: Backend, transcript=None, trace=None) -> dict:
    """The log record of one sample. ``transcript`` is the decoded completion (parsed from ``tokens`` when
    not given); ``trace`` the tool trace of a tool-using task."""
    if transcript is None or error:
        transcript = parse_tokens(tokens, channels=conv.channels)
    final = transcript.final if not error else None
    score = job.task.scorer(final, job.sample)
    channel_counts: dict[str | None, int] = {}
    for e in transcript.events:
        channel_counts[e.channel] = channel_counts.get(e.channel, 0) + 1
    # return / call: the model finished its turn; end: a stream that stopped after <|end|>; length: cut off
    stop = "error" if error else {"empty": "length"}.get(transcript.stop_reason, transcript.stop_reason)
    task, sample, model, effort, repeat = job.key
    return {
        "task": task, "sample": sample, "model": model, "effort": effort, "repeat": repeat,
        "prompt": job.task.prompt(job.sample), "target": job.sample.target,
        "tokens": tokens, "token_level": bool(getattr(backend, "token_level", True)),
        "reasoning": "\n".join(transcript.texts("analysis")), "answer": final,
        "extracted": score.answer, "score": float(score.value), "correct": bool(score.correct),
        "scorer": repr(job.task.scorer),
        "reasoning_tokens": channel_counts.get("analysis", 0), "answer_tokens": channel_counts.get("final", 0),
        "completion_tokens": len(tokens), "stop_reason": stop, "parse_errors": [e.code for e in transcript.errors],
        "tool_trace": trace.to_dicts() if trace is not None else None,
        "latency": round(latency, 6), "attempts": attempts, "backend": redact_url(repr(backend)),
        "error": redact_url(error) if error else error,
        "time": time.time(),
    }


# -- the sweep -----------------------------------------------------------------------------------

@dataclass
class SweepResult:
    out: Path
    ran: int
    skipped: int
    failed: int
    elapsed: float

    def load(self):
        from .report import load

        return load(self.out)

    def summary(self):
        from .report import summary

        return summary(self.load())

    def __repr__(self) -> str:
        return (f"SweepResult({str(self.out)!r}: ran {self.ran}, skipped {self.skipped} already done, "
                f"{self.failed} failed, {self.elapsed:.1f} s)")


def plan(tasks: Iterable, models: Iterable, efforts: Sequence[str], repeats: int, limit: int | None,
         seed: int = 0) -> list[Job]:
    """Every job of a sweep, interleaved (repeat, task, sample, model, effort) so a partial run covers every cell."""
    for effort in efforts:
        if effort not in EFFORTS:
            raise ValueError(f"reasoning effort must be one of {EFFORTS}, not {effort!r}")
    tasks = [get_task(t, seed=seed) for t in tasks]
    targets = [as_target(m) for m in models]  # last: a checkpoint path loads a model
    for kind, names in (("task", [t.name for t in tasks]), ("model", [m.name for m in targets])):
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"two {kind}s share the name {sorted(dupes)[0]!r}; give them distinct names")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    jobs = []
    for repeat in range(repeats):
        for task in tasks:
            for sample in task.samples(repeat, limit):
                for target in targets:
                    for effort in efforts:
                        jobs.append(Job(task, sample, target, effort, repeat))
    return jobs


def run_sweep(
    tasks: Iterable[str | Task],
    models: Iterable[Target | Backend | str],
    *,
    out: str | os.PathLike,
    efforts: Sequence[str] = EFFORTS,
    repeats: int = 1,
    limit: int | None = None,
    concurrency: int = 1,
    batch_size: int = 1,
    max_tokens: int = 1024,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    timeout: float = 600.0,
    retries: int = 4,
    backoff: float = 0.5,
    retry_errors: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep into ``out``; see the module docstring. Returns counts; ``.load()`` the records."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    started = time.monotonic()
    jobs = plan(tasks, models, efforts, repeats, limit, seed)
    settings = Settings(max_tokens, temperature, top_p, seed, timeout, retries, backoff)
    out = Path(out)
    with LogWriter(out) as log:
        done = latest_records(out)
        todo = [j for j in jobs if j.key not in done or (retry_errors and done[j.key].get("error"))]
        _write_config(out, locals_for_config(jobs, efforts, repeats, limit, settings, concurrency))
        failed = _execute(todo, settings, log, concurrency, progress, total=len(jobs), batch_size=batch_size)
    return SweepResult(out, len(todo), len(jobs) - len(todo), failed, time.monotonic() - started)


def locals_for_config(jobs, efforts, repeats, limit, s: Settings, concurrency) -> dict:
    return {"tasks": sorted({j.task.name for j in jobs}), "models": sorted({j.target.name for j in jobs}),
            "efforts": list(efforts), "repeats": repeats, "limit": limit, "concurrency": concurrency,
            **{k: getattr(s, k) for k in ("max_tokens", "temperature", "top_p", "seed", "timeout", "retries")}}


def _write_config(out: Path, config: dict) -> None:
    from workbench.cache import atomic_path

    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2))


def run_batch(jobs: list[Job], s: Settings) -> list[dict]:
    """Generate several jobs of one model at once (``Backend.generate_batch``: ``LocalBackend`` decodes them
    as one batch, with the same tokens as one at a time), then parse and score each. Each record's latency
    is the batch's. If the batch fails, its jobs run one at a time (with the usual retries)."""
    if len(jobs) == 1:
        return [run_job(jobs[0], s)]
    target = jobs[0].target
    convs = [conversation(j.task, j.sample, j.effort) for j in jobs]
    seeds = [sample_seed(s.seed, *j.key[:2], j.effort, j.repeat) for j in jobs]
    replica = target.acquire()
    backend = target.backends[replica]
    start = time.monotonic()
    try:
        outs = backend.generate_batch(convs, seeds=seeds, max_new_tokens=s.max_tokens, temperature=s.temperature,
                                      top_p=s.top_p)
    except Exception:  # noqa: BLE001 - one at a time instead, where errors are recorded per sample
        outs = None
    finally:
        target.release(replica)
    if outs is None:
        return [run_job(j, s) for j in jobs]
    latency = time.monotonic() - start
    return [record_for(j, c, [int(t) for t in toks], None, latency, 1, backend)
            for j, c, toks in zip(jobs, convs, outs)]


def _groups(todo: list[Job], size: int) -> Iterator[list[Job]]:
    """Jobs in groups of up to ``size`` that share a model, in plan order (a group is yielded when full)."""
    open_groups: dict[str, list[Job]] = {}
    for job in todo:
        group = open_groups.setdefault(job.target.name, [])
        group.append(job)
        if len(group) >= size:
            yield open_groups.pop(job.target.name)
    yield from open_groups.values()


def _execute(todo: list[Job], s: Settings, log: LogWriter, concurrency: int, progress: bool, total: int,
             batch_size: int = 1) -> int:
    from tqdm.auto import tqdm

    failed = correct = finished = 0
    bar = tqdm(total=total, initial=total - len(todo), desc="sweep", unit="sample", disable=not progress,
               dynamic_ncols=True)
    pending = _groups(todo, batch_size)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sweep")
    running: set = set()
    clean = False
    try:
        for group in pending:  # keep at most `concurrency` groups submitted: nothing piles up in memory
            running.add(pool.submit(run_batch, group, s))
            if len(running) >= concurrency:
                break
        while running:
            finished_now, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished_now:
                nxt = next(pending, None)  # start the next samples first: the fsync below overlaps them
                if nxt is not None:
                    running.add(pool.submit(run_batch, nxt, s))
                for record in future.result():
                    log.write(record)
                    finished += 1
                    failed += bool(record["error"])
                    correct += record["correct"]
                    bar.update(1)
                bar.set_postfix(acc=f"{correct / max(1, finished):.2f}", errors=failed, refresh=False)
        clean = True
    finally:
        # On an interrupt, do not wait for samples in flight: they were not logged, so a re-run redoes them.
        pool.shutdown(wait=clean, cancel_futures=True)
        bar.close()
    return failed
