"""One module per stage: its result type (how it is stored in the cache) and its function.

A stage function's name is its output and its parameters are its inputs: ``ctx`` (the
:class:`~raypipe.pipeline.context.RunContext`), then the results of the upstream stages it
reads, by stage name. The table that orders them is :mod:`raypipe.pipeline.table`.
"""
