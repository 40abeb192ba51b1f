"""The ``raypipe`` command line: one module per command group. Errors become one line and an exit
code; ``--debug`` shows the traceback.

    run.py      run, tune, plan
    ci.py       ci (the pipeline as a CI gate)
    models.py   promote, rollback, audit, reproduce
    monitor.py  monitor
    serve.py    serve, predict
    data.py     datasets synth|flights, schema infer
    submit.py   submit
"""

from __future__ import annotations

import signal
import sys

from raypipe.cli import ci, data, models, monitor, run, serve, submit  # noqa: F401 - importing registers the commands
from raypipe.cli._common import app, err, interrupt_exit, on_sigterm

__all__ = ["app", "main"]


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        app()
    except KeyboardInterrupt:
        what, code = interrupt_exit()
        err.print(f"{what}: finished stages are cached, so the same command resumes")
        sys.exit(code)


if __name__ == "__main__":
    main()
