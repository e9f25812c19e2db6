"""Hydra callbacks that config groups name in `hydra.callbacks` (conf/hparams_search/optuna.yaml)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class CreateSweepDir(Callback):
    """Create the sweep folder before the sweeper starts.

    Hydra makes it only when the first job launches, but the Optuna sweeper opens its study storage
    (`sqlite:///<sweep folder>/optuna.db`) before that, and sqlite cannot create a file in a missing folder.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)


class NanObjectiveFails(Callback):
    """Turn a run that returned no objective (nan: no stage logged a val_loss) into a failed job.

    Optuna rejects nan, and the sweeper's own fallback then fails with an unrelated error ("Values were
    told..."). As a failed job it is a failed trial with this message: the sweep stops on it, or goes on
    when hydra.sweeper.max_failure_rate allows failures.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        value = job_return._return_value  # the property would raise for a failed job
        if job_return.status == JobStatus.COMPLETED and isinstance(value, float) and math.isnan(value):
            job_return.status = JobStatus.FAILED
            job_return.return_value = ValueError(
                f"the run in {config.hydra.runtime.output_dir} returned no objective: none of method.stages="
                f"{OmegaConf.select(config, 'method.stages')} logged a val_loss, which the sweep minimises"
            )
