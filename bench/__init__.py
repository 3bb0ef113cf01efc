"""Load generator for chatd: fan-out latency/throughput and idle-connection memory.

Standard library only, so it measures the server and not a client library; see README.md.
"""
