"""The benchmark behind scripts/bench.py: workloads (workloads.py), the closed-loop client and CPU
accounting (load.py), the two-server harness (servers.py) and the report (report.py)."""
