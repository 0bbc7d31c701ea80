"""The WebSocket benchmark harness behind ``bench/fanout.py`` and ``bench/resume_storm.py``.

``servers`` starts the servers under test (the daemon, the bare quart-trio
baseline, the Node reference), ``loadgen`` drives the Node load-generator
workers (their windows, stalls, and a storm's drop and resume),
``sampling`` watches a process's RSS, CPU and open sockets through
``/proc``, ``stats`` merges latency histograms, ``scenarios`` runs the
phases and ``report`` prints the table and writes the JSON.
"""
