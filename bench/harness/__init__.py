"""The benchmark harness behind bench/run.py: environments, servers, load, results."""
