"""Trainer callbacks: progress and text log, VisualDL scalars, checkpoints.

A callback sees the trainer (``self.trainer``) and hooks into the loop at the points of
Paddle's hapi callbacks.  Only the main rank writes anything.
"""
from __future__ import annotations

import logging
import os
import sys
import time


class Callback:
    """Base class; every hook is optional."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs=None): ...

    def on_epoch_begin(self, epoch: int, logs=None): ...

    def on_train_batch_end(self, step: int, logs=None): ...

    def on_eval_end(self, logs=None): ...

    def on_epoch_end(self, epoch: int, logs=None): ...

    def on_train_end(self, logs=None): ...


class CallbackList:
    """Calls a hook on every callback in order."""

    def __init__(self, callbacks, trainer):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_trainer(trainer)

    def __getattr__(self, hook):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)
        return call


class ProgressLogger(Callback):
    """Every ``log_freq`` steps: a progress bar, mean losses since the last line (of rank 0's
    batches), LR, images/s (all ranks) and ETA of the run; at epoch end: epoch time and
    validation top-1.

    Lines go to stdout and, with ``log_path``, are appended to that text file.
    """

    def __init__(self, log_freq: int = 100, log_path: str | None = None, bar_width: int = 20):
        self.log_freq = max(1, int(log_freq))
        self.log_path = log_path
        self.bar_width = bar_width
        self.logger = None

    def on_train_begin(self, logs=None):
        if not self.trainer.is_main:
            return
        self.logger = logging.getLogger(f"hnas.train.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        handlers = [logging.StreamHandler(sys.stdout)]
        if self.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            handlers.append(logging.FileHandler(self.log_path, mode="a"))
        for handler in handlers:
            handler.setFormatter(formatter)
            self.logger.addHandler(handler)
        t = self.trainer
        self.logger.info(f"training {t.strategy.name()} from epoch {t.epoch} to {t.epochs}: "
                         f"{t.steps_per_epoch} steps/epoch, {t.images_per_step} images/step "
                         f"on {t.world_size} process(es)")
        self._run_start = time.time()
        self._run_start_step = t.global_step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._window_start = time.time()
        self._window = {}
        self._window_steps = 0

    def on_train_batch_end(self, step, logs=None):
        if self.logger is None:
            return
        for key, value in (logs or {}).items():
            self._window[key] = self._window.get(key, 0.0) + value
        self._window_steps += 1
        t = self.trainer
        if (step + 1) % self.log_freq and step + 1 != t.steps_per_epoch:
            return
        now = time.time()
        images_per_s = self._window_steps * t.images_per_step / max(now - self._window_start, 1e-9)
        done = t.global_step - self._run_start_step
        remaining = t.epochs * t.steps_per_epoch - t.global_step
        eta = (now - self._run_start) / max(done, 1) * remaining
        filled = int(self.bar_width * (step + 1) / t.steps_per_epoch)
        bar = "#" * filled + "-" * (self.bar_width - filled)
        losses = " ".join(f"{k} {v / self._window_steps:.4f}" for k, v in self._window.items())
        self.logger.info(f"epoch {t.epoch + 1}/{t.epochs} [{bar}] {step + 1}/{t.steps_per_epoch} "
                         f"{losses} lr {t.current_lr():.6f} {images_per_s:.1f} img/s "
                         f"eta {_clock(eta)}")
        self._window, self._window_steps, self._window_start = {}, 0, now

    def on_eval_end(self, logs=None):
        if self.logger is not None and logs:
            self.logger.info("val " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))

    def on_epoch_end(self, epoch, logs=None):
        if self.logger is not None:
            self.logger.info(f"epoch {epoch + 1}/{self.trainer.epochs} done in "
                             f"{_clock(time.time() - self._epoch_start)}")

    def on_train_end(self, logs=None):
        if self.logger is None:
            return
        self.logger.info(f"finished at epoch {self.trainer.epoch}/{self.trainer.epochs} "
                         f"after {_clock(time.time() - self._run_start)}")
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
        self.logger = None


class VisualDLLogger(Callback):
    """Scalars for VisualDL (``visualdl --logdir LOG_DIR``): ``train/<loss>`` and ``train/lr``
    every ``log_freq`` steps, ``val/<metric>`` per evaluation (x axis: epoch)."""

    def __init__(self, log_dir: str, log_freq: int = 100):
        self.log_dir = log_dir
        self.log_freq = max(1, int(log_freq))
        self.writer = None

    def on_train_begin(self, logs=None):
        if self.trainer.is_main:
            from visualdl import LogWriter  # optional dependency, needed only when logging

            self.writer = LogWriter(logdir=self.log_dir)

    def on_train_batch_end(self, step, logs=None):
        if self.writer is None or (step + 1) % self.log_freq:
            return
        step_id = self.trainer.global_step
        for key, value in (logs or {}).items():
            self.writer.add_scalar(f"train/{key}", value, step_id)
        self.writer.add_scalar("train/lr", self.trainer.current_lr(), step_id)

    def on_eval_end(self, logs=None):
        if self.writer is not None:
            for key, value in (logs or {}).items():
                self.writer.add_scalar(f"val/{key}", value, self.trainer.epoch)

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Checkpointer(Callback):
    """``epoch_{N}`` every ``save_freq`` epochs (N = epochs completed) and ``final`` when the
    last epoch is done; a run stopped early leaves no ``final``."""

    def __init__(self, save_freq: int = 1):
        self.save_freq = max(1, int(save_freq))
        self._trained = False

    def on_epoch_end(self, epoch, logs=None):
        self._trained = True
        if (epoch + 1) % self.save_freq == 0:
            self.trainer.save(f"epoch_{epoch + 1}")

    def on_train_end(self, logs=None):
        t = self.trainer
        already_final = t.save_dir and os.path.isfile(os.path.join(t.save_dir, "final.pdparams"))
        if t.epoch >= t.epochs and (self._trained or not already_final):
            t.save("final")


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
