"""Sweeps: the typed configuration (``config``, no Optuna) and the Optuna engine (``study``, the only module that
imports Optuna). The sweep stage (``visreps.stages.sweep``) supplies the objective."""
