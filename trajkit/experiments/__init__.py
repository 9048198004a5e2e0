"""Built-in experiments behind ``trajkit record``: configs, datasets, models, dynamics, replica ensembles.

Public API:

- :func:`run_experiment` (config, out, overrides=(), quiet=False, dry_run=False, device=None, threads=None)
  → summary (one ensemble, or one per stage of a ``[[stages]]`` protocol)
- :func:`load_config` (path or dict, overrides) → the resolved config dict
- :func:`build_model` (spec) → the ``nn.Module`` of an archive's ``model.spec``
- :func:`build_dataset` (spec) → the :class:`Dataset` of an archive's ``dataset.spec``
- :func:`config_from_archive` (path) → the config stored in a run's archive
- :func:`rebuild` (archive, step=None) → the run's module at a snapshot, its data and a batched loss

See docs/EXPERIMENTS.md for every config key.
"""

from trajkit.experiments.config import load_config
from trajkit.experiments.datasets import Dataset, build_dataset
from trajkit.experiments.models import build_model
from trajkit.experiments.protocol import run_experiment
from trajkit.experiments.rebuild import Rebuilt, rebuild
from trajkit.experiments.runner import config_from_archive, plan_experiment

__all__ = ["Dataset", "Rebuilt", "build_dataset", "build_model", "config_from_archive", "load_config",
           "plan_experiment", "rebuild", "run_experiment"]
