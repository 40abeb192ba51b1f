"""The data layer: reading and checking the source, the schema contract, statistics, the split.

ingest.py       discover Parquet files (hive partitions, filters), validate each file, read them
_filesource.py  Ray Data datasource reading whole files per task
schema.py       the schema contract: kinds, dtypes, ranges, categories, the label's task
records.py      JSON records validated against the contract (HTTP API, Model.predict)
domain.py       values outside the training range (the out_of_range policy; serving and batch)
profile.py      per-split column statistics as a Ray Data map-reduce
quality.py      the data-quality rules over the profile
split.py        the deterministic split (content hash or time)
splitfiles.py   model-input splits as memory-mapped Arrow IPC files
expressions.py  the arithmetic of ``features.derived``
datasets/       the shipped and generated datasets (flights, synth, synth logs)
"""
