"""Hyper-parameter sweeps of a training config, the same on one machine and on SLURM (``terramind-ft sweep``).

``spec`` (the sweep.yaml schema and its check against the CLI parser), ``search`` (Optuna: storage, sampler,
pruner, search space, heartbeats, recovery), ``launch`` (submitit workers and one trial), ``results``
(results.csv / results.md / best.yaml), ``cli`` (the command).
"""
