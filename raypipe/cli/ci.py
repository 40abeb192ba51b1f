"""``raypipe ci``: the pipeline as a CI gate. Exit 0 when the new version passes the gate against
the champion, 1 when the champion stays, 2 or more for errors (each error's own code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from raypipe.cli._common import (
    AddressOption,
    SetOption,
    TrackingOption,
    WorkDirOption,
    app,
    err,
    out,
    run_pipeline_command,
    shutdown_local,
)
from raypipe.cli.run import ConfigArg, NoCacheOption, WaitLockOption

GATE_KEPT_CHAMPION = 1


@app.command()
def ci(
    config: ConfigArg,
    set_: SetOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Judge without moving any alias; the version is tagged raypipe.candidate=passed|failed."
        ),
    ] = False,
    verdict_path: Annotated[
        Path | None,
        typer.Option("--verdict", help="Write the verdict as JSON here, and its Markdown twin beside it (.md)."),
    ] = None,
    address: AddressOption = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    no_cache: NoCacheOption = False,
    wait_lock: WaitLockOption = False,
) -> None:
    """Run the pipeline (no serving) and judge the new version against the champion.

    Exit codes: 0 the version passed the gate (and took the alias, unless --dry-run);
    1 the gate kept the champion (the reason is printed); 2 or more: an error, as `raypipe run`.
    """
    from raypipe.pipeline.verdict import to_markdown, verdict

    overrides = [*(set_ or []), "register.enabled=true", *(["register.promote=false"] if dry_run else [])]
    try:
        result = run_pipeline_command(
            "ci", config, overrides, address, tracking_uri, work_dir, False, no_cache, None, wait_lock
        )
    except typer.Exit as e:
        # Exit 1 means "the champion stays" here: an error that would exit 1 elsewhere exits 2.
        raise typer.Exit(2 if e.exit_code == GATE_KEPT_CHAMPION else e.exit_code) from None
    v = verdict(result, dry_run=dry_run)
    markdown = to_markdown(v)
    if verdict_path:
        verdict_path.parent.mkdir(parents=True, exist_ok=True)
        verdict_path.write_text(json.dumps(v, indent=2, default=str))
        verdict_path.with_suffix(".md").write_text(markdown)
    out.print(escape(markdown), highlight=False, soft_wrap=True)
    shutdown_local()
    if not v["passed"]:
        err.print(f"gate: {escape(str(v['reason']))}", highlight=False, soft_wrap=True)
        raise typer.Exit(GATE_KEPT_CHAMPION)
