"""The pipeline: the stage table, the orchestrator that loops over it, and what a run leaves behind.

    table.py        every stage declared once: name, function, result, config, record step
    stages/         one module per stage: its result type and its function
    run.py          the orchestrator: timing, cache, MLflow nested runs and resume in one loop
    plan.py         ``raypipe plan``: cached or will run, and why (no Ray)
    context.py      what a stage can reach (RunContext)
    cache.py        stage cache keyed by code, config and upstream keys
    codeversion.py  a stage's code, computed from its imports
    summary.py      RunResult and the stage timer
    manifest.py     the run manifest: config hash, data fingerprint, seeds, code and package versions
    reproduce.py    ``raypipe reproduce RUN_ID``
    retrain.py      the closed loop: monitor -> retrain -> gate -> reload

Nothing is imported here: ``raypipe.pipeline.summary`` (in ``import raypipe``) must not pull in Ray.
"""
