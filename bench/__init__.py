"""`make bench`: load benchmarks (bench/run.py) and an in-process profile (bench/profile.py)."""
