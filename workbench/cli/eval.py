"""``workbench eval``: sweep models x reasoning efforts x tasks x repeats; print the summary, write plots.

    workbench eval --model ~/models/tiny --constrained --tasks arithmetic,dates --limit 20 --out runs/tiny
    workbench eval --base-url http://127.0.0.1:8000/v1 --base-url http://127.0.0.1:8001/v1 \\
        --model openai/gpt-oss-20b --efforts low,medium,high --tasks gpqa:gpqa_diamond.csv --concurrency 32
    workbench eval --base-url http://127.0.0.1:8000/v1 --api responses --model tiny --tasks product --out runs/py \\
        --grader-model judge --grader-base-url http://127.0.0.1:9000/v1     # python in the loop, a judge scores

    workbench eval --rescore --out runs/tiny [--tasks gpqa:gpqa_diamond.csv] [--dry-run]

Every option of ``workbench.evals.run_sweep`` has a flag. Re-running into the same ``--out`` resumes.
``--rescore`` scores a stored sweep again with the current scorers, without running any model
(``workbench.evals.rescore``): changed records are rewritten atomically, their old scores kept in
``rescored_from``; it prints what changed, then the summary and plots as after a sweep.
"""

from __future__ import annotations

from pathlib import Path

NAME = "eval"
HELP = "run an eval sweep (models x reasoning efforts x tasks), resumable; print the summary and write plots"
ORDER = 60


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def register(p) -> None:
    p.add_argument("--model", action="append", metavar="PATH|NAME",
                   help="a checkpoint folder (in-process), or with --base-url the served model's name; repeatable")
    p.add_argument("--base-url", action="append", metavar="URL",
                   help="an OpenAI-compatible server (vLLM, Ollama, workbench serve); repeat to spread over replicas")
    p.add_argument("--api-key", default=None, help="API key for the servers (default: $OPENAI_API_KEY or none)")
    p.add_argument("--api", choices=["chat", "responses"], default="chat",
                   help="with --base-url: chat completions or the Responses API (default: %(default)s)")
    p.add_argument("--grader-model", default=None, metavar="NAME",
                   help="score every task with this judge model (model-graded) instead of the task's own scorer")
    p.add_argument("--grader-base-url", default=None, metavar="URL", help="the judge's own OpenAI-compatible server")
    p.add_argument("--grader-api-key", default=None, help="API key for the judge's server")
    p.add_argument("--grader-api", choices=["chat", "responses"], default="chat", help="the judge's API")
    p.add_argument("--efforts", type=_csv, default=["low", "medium", "high"], help="comma-separated (default: %(default)s)")
    p.add_argument("--tasks", type=_csv, default=None,
                   help="comma-separated task specs: NAME, NAME:DIFFICULTY, gpqa:PATH, aime:PATH, jsonl:PATH "
                        "(default: arithmetic; with --rescore: the file tasks to find, built-in ones resolve by name)")
    p.add_argument("--limit", type=int, default=None, help="samples per task (default: all; built-in tasks have 100)")
    p.add_argument("--repeats", type=int, default=1, help="times each sample is asked (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=1, help="samples in flight at once (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="samples of one model generated as one batch (the local model decodes them together; "
                        "default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=1024, help="completion tokens per sample (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and the generated tasks")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per sample (default: %(default)s)")
    p.add_argument("--retries", type=int, default=4, help="retries on connection errors, 429, 5xx")
    p.add_argument("--backoff", type=float, default=0.5, help="first retry delay in s, doubled each time")
    p.add_argument("--no-retry-errors", dest="retry_errors", action="store_false",
                   help="on resume, keep samples that failed instead of running them again")
    p.add_argument("--constrained", action="store_true", help="in-process: keep decoding inside the Harmony grammar")
    p.add_argument("--out", default=None, help="the sweep folder (logs, plots); required unless --list-tasks")
    p.add_argument("--parquet", action="store_true", help="also write samples.parquet and summary.parquet")
    p.add_argument("--trace", type=_csv, default=None, metavar="NAMES",
                   help="in-process models: store these hook points (comma-separated names or globs) per token, "
                        "with Harmony labels, in OUT/activations after the sweep (resumable)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--list-tasks", action="store_true", help="print the task names, one per line, and exit")
    p.add_argument("--rescore", action="store_true",
                   help="score the sweep in --out again with the current scorers (no model runs); keeps old scores")
    p.add_argument("--dry-run", action="store_true", help="with --rescore: report what would change, write nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import evals

    if args.list_tasks:
        print("\n".join(evals.task_names()))
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (the folder the sweep logs to and resumes from)")
    if args.rescore:
        result = evals.rescore(args.out, args.tasks or [], seed=args.seed if args.seed else None, dry_run=args.dry_run)
        print(result)
        if result.changes:
            print(result.frame().to_string(index=False, max_rows=40))
        if args.dry_run:
            return 0
        return _report(evals, args)
    if args.dry_run:
        raise ValueError("--dry-run goes with --rescore")
    if not args.model:
        raise ValueError("--model is required: a checkpoint folder, or with --base-url the served model's name")
    for effort in args.efforts:
        if effort not in evals.EFFORTS:
            raise ValueError(f"reasoning effort must be one of {', '.join(evals.EFFORTS)}, not {effort!r}")
    if args.trace and args.base_url:
        raise ValueError("--trace needs the model in this process (a checkpoint folder), not --base-url")
    tasks = [evals.get_task(spec, seed=args.seed) for spec in args.tasks or ["arithmetic"]]  # before loading any model
    if bool(args.grader_model) != bool(args.grader_base_url):
        raise ValueError("--grader-model and --grader-base-url go together (the judge is a model on its own server)")
    if args.grader_model:
        import dataclasses

        judge = evals.model_graded(args.grader_model, args.grader_base_url, api_key=args.grader_api_key,
                                   api=args.grader_api)
        tasks = [dataclasses.replace(t, scorer=judge) for t in tasks]
    if args.base_url:
        models = [evals.server(name, args.base_url, api_key=args.api_key, timeout=args.timeout, api=args.api)
                  for name in args.model]
    else:
        models = [evals.local(path, constrained=args.constrained) for path in args.model]
    result = evals.run_sweep(
        tasks, models, out=args.out, efforts=args.efforts, repeats=args.repeats, limit=args.limit,
        concurrency=args.concurrency, batch_size=args.batch_size, max_tokens=args.max_tokens,
        temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, timeout=args.timeout, retries=args.retries, backoff=args.backoff,
        retry_errors=args.retry_errors, progress=args.progress)
    print(result)
    for target in models if args.trace else ():
        folder = Path(args.out) / "activations" / (target.name if len(models) > 1 else "")
        print(evals.record_sweep(args.out, target.backends[0], args.trace, tasks=tasks, model_name=target.name,
                                 folder=folder, seed=args.seed, progress=args.progress))
    return _report(evals, args)


def _report(evals, args) -> int:
    """Print the sweep's summary table; write its plots and parquet files as asked."""
    df = evals.load(args.out)
    table = evals.summary(df)
    print(evals.format_summary(table))
    if args.plots and len(table):
        for path in evals.write_plots(table, args.out):
            print(f"wrote {path}")
    if args.parquet:
        for path in (evals.to_parquet(df, f"{args.out}/samples.parquet"),
                     evals.to_parquet(table, f"{args.out}/summary.parquet")):
            print(f"wrote {path}")
    return 0
