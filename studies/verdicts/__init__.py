"""The studies' verdict code: a run's own tables in, the findings and their verdicts out.

One module per study (``truncation``, ``alds``, ``hybrid``, ``approx_error``). Each holds only
the pure functions that turn the seeds' stored results (``sweep.csv`` / ``combined.json``,
``cells.jsonl``) into the numbers a report quotes and the verdicts (holds / not significant /
does not hold, with the test and its p-value or interval), using :mod:`studies.common.stats`.
No training, sweeps, files or CLI here: these modules never import their study module (what
they need from its configuration is read from ``cfg`` by attribute), so their tests build small
tables by hand and run in milliseconds. The study modules import these functions back, so
``studies.truncation.findings`` and the like keep working.
"""
