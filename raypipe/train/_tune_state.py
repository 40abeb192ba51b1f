"""A Tune callback that keeps finished trials finished across a driver crash (imported with Ray Tune)."""

from __future__ import annotations

import logging

from ray.tune import Callback

log = logging.getLogger(__name__)


class PersistFinishedTrials(Callback):
    """Upload the experiment state to storage, and wait for it, in the step that finishes a trial.

    Tune saves its state to the driver's staging folder at the end of a step, then uploads it in a background
    thread that is skipped while the previous upload still runs (ray/tune/execution/experiment_state.py
    ``sync_up_experiment_state``; ray/train/_internal/syncer.py ``_BackgroundSyncer.sync_up``); only the
    end of ``fit`` waits for it. A driver killed soon after a trial finished left a state in storage where
    that trial was still RUNNING, and ``Tuner.restore`` ran it again. ``on_step_end`` runs after that
    step's save and before the next step starts a trial, so waiting here closes the gap. It needs a save in
    every step (``TUNE_GLOBAL_CHECKPOINT_S=0``, set by ``search``) and uses Ray's ``StorageContext``
    (a DeveloperAPI: its syncer and paths).
    """

    def __init__(self) -> None:
        self._storage = None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._storage = trial.storage  # shares the controller's syncer (Trial copies StorageContext shallowly)

    def on_step_end(self, iteration, trials, **info) -> None:
        storage, self._storage = self._storage, None
        if storage is None:
            return
        try:
            storage.syncer.wait()  # the upload this step launched, or one still running from an earlier step
            storage.syncer.sync_up(storage.experiment_driver_staging_path, storage.experiment_fs_path)
            storage.syncer.wait()
        except Exception:  # Tune uploads again on its next save; only a crash before that reruns the trial
            log.warning("could not save the Tune experiment state to %s", storage.experiment_fs_path, exc_info=True)
