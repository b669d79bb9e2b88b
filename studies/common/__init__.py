"""Plumbing shared by the studies (``python -m studies NAME``).

- ``data``: datasets (digits and mnist5k bundled; CIFAR / MNIST files, read as untrusted input),
  ``safe_pickle``: the restricted unpickler for CIFAR batches.
- ``training``: training and evaluation loops, per-example correctness, ``SplitAccuracy``.
- ``checkpoints``: safetensors checkpoints keyed by their training configuration.
- ``levels``: choosing levels (chi, thresholds, budgets) on the validation split.
- ``stats``: verdicts (holds / not significant / does not hold) with a named test and its
  p-value or bootstrap interval; mean and spread over seeds.
- ``report``: Markdown tables that render, CSV text, verdict sentences.
- ``cli``: argument types and checks, one line and exit status 2 for every user error, Ctrl-C.
- ``runner``: the output-folder lock, stale temporaries, seeds, JSON artefacts checked before
  reuse, Dask executors, and ``run_seeds`` putting them in order.
"""
