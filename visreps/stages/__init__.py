"""Stages and commands: each module orchestrates library layers and logs through ``visreps.tracking``."""
