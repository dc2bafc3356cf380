"""A hapi-style trainer (prepare / fit / evaluate / save / load) for supernets and subnets.

The trainer owns the loop, the optimizer step, AMP, distribution and checkpoints; a
:class:`~hnas.strategies.Strategy` owns what one step trains.  Everything random in a run is a
function of ``(seed, epoch, ...)``: batch order (:class:`EpochBatchSampler`), augmentation
(:class:`EpochSeededDataset`) and subnet sampling (``StepContext.rng``), so a run stopped and
resumed from a checkpoint ends with the same parameters as one that never stopped.
"""
from __future__ import annotations

import os
import random
import warnings

import numpy as np
import paddle
import paddle.distributed as dist

from .callbacks import CallbackList, Checkpointer, ProgressLogger, VisualDLLogger
from .checkpoint import load_into, load_model_state, resolve_checkpoint, save_checkpoint, train_state_path
from .evaluator import EVAL_DEFAULTS, SubnetRanker, load_fixed_images
from .sampling import make_rng
from .strategies.base import StepContext, TrainingModule
from .train_config import TrainConfig, build_optimizer, load_portable_optimizer_state, portable_optimizer_state

__all__ = ["EpochBatchSampler", "EpochSeededDataset", "TrainConfig", "Trainer", "TrainingDiverged", "build_optimizer"]

CALIBRATION_KEY = 0xCA1B  # make_rng key of the calibration image order, apart from any epoch
GRAD_BUCKET = 1 << 23  # gradient elements per all-reduce (32 MiB of float32)


class TrainingDiverged(RuntimeError):
    """A loss or a weight became NaN or inf; the run stopped without writing a checkpoint."""


class EpochBatchSampler(paddle.io.BatchSampler):
    """Batches of indices whose order is a function of ``(seed, epoch)`` only.

    Training (``shuffle=True, drop_last=True``): one permutation per epoch cut into global
    batches of ``batch_size * num_replicas``; rank ``r`` takes the ``r``-th slice of each.
    Evaluation (``shuffle=False, drop_last=False``): rank ``r`` takes every ``num_replicas``-th
    sample from ``r`` on, so the ranks cover the set exactly once.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, num_replicas: int = 1, rank: int = 0):
        if drop_last and num_samples < batch_size * num_replicas:
            raise ValueError(f"{num_samples} training images cannot fill one global batch of "
                             f"{batch_size} x {num_replicas} process(es); lower --batch_size")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = make_rng(self.seed, self.epoch).permutation(self.num_samples) if self.shuffle \
            else np.arange(self.num_samples)
        if self.drop_last:
            steps = len(self)
            order = order[:steps * self.batch_size * self.num_replicas]
            for batch in order.reshape(steps, self.num_replicas, self.batch_size)[:, self.rank]:
                yield batch.tolist()
        else:
            mine = order[self.rank::self.num_replicas]
            for start in range(0, len(mine), self.batch_size):
                yield mine[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // (self.batch_size * self.num_replicas)
        mine = len(range(self.rank, self.num_samples, self.num_replicas))
        return (mine + self.batch_size - 1) // self.batch_size


class EpochSeededDataset(paddle.io.Dataset):
    """Wraps a dataset so the random augmentation of sample ``i`` in epoch ``e`` is a function
    of ``(seed, e, i)``, whatever the worker count or scheduling.

    Paddle's transforms draw from the global ``random`` and ``numpy.random`` modules; those are
    seeded per sample and restored afterwards, so the caller's global RNG is left untouched.
    """

    def __init__(self, dataset, seed: int = 0):
        super().__init__()
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        sample_seed = int(make_rng(self.seed, self.epoch, index).integers(2 ** 31))
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class Trainer:
    """Trains ``model`` with ``strategy``; multi-process when launched by ``paddle.distributed``.

    Args:
        model: the supernet (or a stand-alone network for the ``standalone`` strategy).
        strategy: decides the subnets and losses of each step.
        cfg: a :class:`TrainConfig`.
        save_dir: where logs, VisualDL scalars and checkpoints go (default ``cfg.save_dir``;
            ``""`` writes nothing, for benchmarks).
        config: the resolved run config, stored in every checkpoint.
        callbacks: extra :class:`hnas.callbacks.Callback` objects.
    """

    def __init__(self, model, strategy, cfg: TrainConfig, save_dir: str | None = None,
                 config: dict | None = None, callbacks=None):
        self.model, self.strategy, self.cfg = model, strategy, cfg
        self.save_dir = cfg.save_dir if save_dir is None else save_dir
        self.config = config
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        self.is_main = self.rank == 0
        self.module = TrainingModule(model, strategy)
        if self.world_size > 1:
            if not dist.is_initialized():
                dist.init_parallel_env()
            # Broadcasts rank 0's weights; gradients are reduced once per step by
            # _sync_gradients, since a step runs several subnets (forward passes) per backward.
            self.network = paddle.DataParallel(self.module)
        else:
            self.network = self.module
        self.amp = bool(cfg.amp) and paddle.is_compiled_with_cuda() and "gpu" in paddle.get_device()
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if self.amp else None
        self.optimizer = self.lr_scheduler = None
        self.epoch, self.global_step, self.epochs, self.steps_per_epoch = 0, 0, cfg.max_epoch, 0
        self.stop_training = False
        self.extra_callbacks = list(callbacks or [])
        self._pending_state = None
        self._named_trainable = {name: p for name, p in self._named_parameters() if not p.stop_gradient}
        self._trainable = list(self._named_trainable.values())

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch_size * self.world_size

    def current_lr(self) -> float:
        return float(self.optimizer.get_lr()) if self.optimizer is not None else 0.0

    # ------------------------------------------------------------------ hapi API
    def prepare(self, optimizer=None, lr_scheduler=None, steps_per_epoch: int | None = None) -> None:
        """Use ``optimizer`` (stepping ``lr_scheduler`` once per iteration), or build the
        config's Momentum SGD with warmup + cosine over ``steps_per_epoch``."""
        if optimizer is None:
            if not steps_per_epoch:
                raise ValueError("prepare() needs an optimizer or steps_per_epoch to build one")
            optimizer, lr_scheduler = build_optimizer(self._trainable, self.cfg, steps_per_epoch,
                                                      self.world_size)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        if self._pending_state is not None:
            self._restore_train_state(self._pending_state)
            self._pending_state = None

    def fit(self, train_data, eval_data=None, calib_data=None, num_workers: int = 0,
            callbacks=None) -> dict[str, float]:
        """Train from ``self.epoch`` (0, or where :meth:`load` left off) to ``cfg.max_epoch``,
        evaluating on ``eval_data`` every ``cfg.eval_freq`` epochs (see :meth:`evaluate`).

        Returns the metrics of the last evaluation ({} if there was none).
        """
        train_data = self.strategy.train_dataset(train_data)
        seeded = EpochSeededDataset(train_data, self.cfg.seed)
        sampler = EpochBatchSampler(len(train_data), self.cfg.batch_size, self.cfg.seed,
                                    num_replicas=self.world_size, rank=self.rank)
        loader = paddle.io.DataLoader(seeded, batch_sampler=sampler, num_workers=num_workers,
                                      return_list=True)
        self.steps_per_epoch = len(sampler)
        if self.optimizer is None:
            self.prepare(steps_per_epoch=self.steps_per_epoch)
        cbks = CallbackList(self._default_callbacks() + self.extra_callbacks + list(callbacks or []), self)
        self.stop_training = False
        self.strategy.on_train_begin(self)
        cbks.on_train_begin()
        last_eval = {}
        while self.epoch < self.epochs and not self.stop_training:
            epoch = self.epoch
            sampler.set_epoch(epoch)
            seeded.set_epoch(epoch)
            self.strategy.on_epoch_begin(epoch)
            cbks.on_epoch_begin(epoch)
            self._train_epoch(loader, epoch, cbks)
            self.epoch = epoch + 1
            self._average_statistics()
            eval_logs = {}
            if eval_data is not None and (self.epoch % self.cfg.eval_freq == 0 or self.epoch == self.epochs):
                eval_logs = last_eval = self.evaluate(eval_data, calib_data=calib_data, num_workers=num_workers)
                cbks.on_eval_end(eval_logs)
            cbks.on_epoch_end(epoch, eval_logs)
        cbks.on_train_end()
        return last_eval

    def evaluate(self, eval_data, archs: dict | None = None, calib_data=None, batch_size: int | None = None,
                 num_workers: int = 0) -> dict[str, float]:
        """Top-1 of each arch (default: ``strategy.eval_archs()``) by the evaluator's protocol.

        The images are those :class:`hnas.evaluator.SubnetRanker` (``eval_supernet.py``) scores
        with: ``len(eval_data)`` validation images and, with ``calib_data`` and
        ``cfg.bn_calib_batches`` > 0, ``bn_calib_batches`` x ``batch_size`` calibration images,
        all drawn by :func:`hnas.evaluator.load_fixed_images` from the folder the datasets
        come from (``eval_data.root`` = ``image_dir/val``) with the evaluator's default seed,
        decoded once per run.  Every arch's BN statistics are re-estimated on the calibration
        batches, since the running statistics of a supernet mix all subnets trained, so the
        top-1 logged for an arch is ``SubnetRanker(...).score(arch)`` on the same weights.  The
        training statistics are put back afterwards, so evaluating never changes training.
        Ranks evaluate disjoint shards of the images and sum their counts.
        """
        archs = self.strategy.eval_archs() if archs is None else archs
        batch_size = batch_size or self.cfg.batch_size
        calib_batches = self.cfg.bn_calib_batches if calib_data is not None else 0
        image_dir = SubnetRanker.image_dir_of(eval_data, "val")
        if calib_batches and SubnetRanker.image_dir_of(calib_data, "train") != image_dir:
            raise ValueError(f"calib_data ({calib_data.root}) and eval_data ({eval_data.root}) must be the "
                             f"train and val splits of one image folder")
        settings = (image_dir, calib_batches, len(eval_data), batch_size)
        if getattr(self, "_eval_ranker", (None,))[0] != settings:  # decode once per run
            self._eval_ranker = (settings, SubnetRanker(self.model, image_dir, calib_batches, len(eval_data),
                                                        batch_size, seed=EVAL_DEFAULTS["seed"],
                                                        on_error=getattr(eval_data, "on_error", "raise")))
        ranker = self._eval_ranker[1]
        previous = self.model.active_arch() if hasattr(self.model, "active_arch") else None
        saved_statistics = [t.clone() for t in self._statistics()] if calib_batches else []
        self.model.eval()
        results = {}
        for name, arch in archs.items():
            if arch is not None:
                self.model.set_active(arch)
            current = self.model.active_arch() if hasattr(self.model, "active_arch") else self.model.arch
            size = self.model.space.image_sizes[current.image_code - 1]
            hits, count = ranker.measure(self.model, size, self.rank, self.world_size)
            counts = np.array([hits, count], dtype=np.int64)
            if self.world_size > 1:
                total = paddle.to_tensor(counts)
                dist.all_reduce(total)
                counts = total.numpy()
            results[f"top1_{name}"] = float(counts[0] / max(counts[1], 1))
        with paddle.no_grad():
            for tensor, saved in zip(self._statistics(), saved_statistics):
                tensor.set_value(saved)
        if previous is not None:
            self.model.set_active(previous)
        self.model.train()
        return results

    def save(self, name: str) -> str | None:
        """Write checkpoint ``name`` (main rank only); returns its ``.pdparams`` path."""
        if not self.is_main or not self.save_dir:
            return None
        self._check_finite_weights(name)
        np_state = np.random.get_state()
        train_state = {
            "optimizer": portable_optimizer_state(self.optimizer, self._named_trainable),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "numpy_rng": [np_state[0], [int(v) for v in np_state[1]], *np_state[2:]],
            "python_rng": random.getstate(),
            "strategy": self.strategy.name(),
            "strategy_state": {k: v.numpy() for k, v in self.strategy.state_dict().items()},
            "config": self.config,
        }
        return save_checkpoint(self.save_dir, name, self.model.state_dict(), train_state)

    def load(self, path: str, reset_optimizer: bool = False) -> str:
        """Load weights from ``path`` (a run folder or checkpoint) and, unless
        ``reset_optimizer``, the optimizer, LR schedule, epoch, step and RNG state to resume."""
        model_path = resolve_checkpoint(path)
        load_into(self.model, load_model_state(model_path), source=model_path)
        if reset_optimizer:
            return model_path
        state_path = train_state_path(model_path)
        if not os.path.isfile(state_path):
            raise FileNotFoundError(f"cannot resume from {model_path}: its training state {state_path} "
                                    f"is missing (load it as pretrained weights instead)")
        state = paddle.load(state_path)
        self._warn_config_change(state.get("config"))
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        if self.optimizer is None:
            self._pending_state = state
        else:
            self._restore_train_state(state)
        return model_path

    # ------------------------------------------------------------------ internals
    def _default_callbacks(self) -> list:
        log_path = os.path.join(self.save_dir, "train.log") if self.save_dir else None
        callbacks = [ProgressLogger(self.cfg.log_freq, log_path)]
        if self.save_dir:
            callbacks += [VisualDLLogger(os.path.join(self.save_dir, "vdl"), self.cfg.log_freq),
                          Checkpointer(self.cfg.save_freq)]
        return callbacks

    def _named_parameters(self):
        """Model parameters under their own names (``blocks.3.conv1.weight``), the strategy's
        under ``strategy.``; the names key the optimizer state in checkpoints."""
        yield from self.model.named_parameters()
        for name, p in self.strategy.named_parameters():
            yield f"strategy.{name}", p

    def _train_epoch(self, loader, epoch: int, cbks) -> None:
        self.module.train()
        for step, batch in enumerate(loader):
            ctx = StepContext(self.model, self.cfg.seed, epoch, step, self.network, self.amp, self.scaler,
                              self.rank, self.world_size)
            if self.world_size > 1:
                with self.network.no_sync():
                    logs = self.strategy.train_step(tuple(batch), ctx)
            else:
                logs = self.strategy.train_step(tuple(batch), ctx)
            self._check_finite_losses(logs, epoch, step)
            self._sync_gradients()
            self._apply_gradients()
            self.strategy.after_optimizer_step(ctx)
            self.global_step += 1
            cbks.on_train_batch_end(step, logs)

    def _check_finite_losses(self, logs: dict, epoch: int, step: int) -> None:
        bad = {k: v for k, v in logs.items() if not np.isfinite(v)}
        if bad:
            raise TrainingDiverged(f"non-finite loss ({', '.join(f'{k} {v}' for k, v in bad.items())}) at "
                                   f"epoch {epoch + 1} step {step + 1}: training stopped before the "
                                   f"optimizer step; {self._last_good_checkpoint()}. Lower --lr, or set "
                                   f"Train.grad_clip")

    def _check_finite_weights(self, name: str) -> None:
        state = {**self.model.state_dict(), **{f"strategy.{k}": v for k, v in self.strategy.state_dict().items()}}
        for key, tensor in state.items():
            if tensor.dtype in (paddle.float16, paddle.float32, paddle.float64) and \
                    not bool(paddle.isfinite(tensor).all()):
                raise TrainingDiverged(f"{key} holds NaN or inf after epoch {self.epoch}: checkpoint {name!r} "
                                       f"was not written; {self._last_good_checkpoint()}. Lower --lr, or "
                                       f"set Train.grad_clip")

    def _last_good_checkpoint(self) -> str:
        if not self.save_dir:
            return "nothing was saved"
        pointer = os.path.join(self.save_dir, "latest")
        if not os.path.isfile(pointer):
            return "no checkpoint had been written yet"
        with open(pointer) as f:
            return f"the last good checkpoint is {os.path.join(self.save_dir, f.read().strip())}"

    def _sync_gradients(self) -> None:
        """Give every trainable parameter a gradient and, with several processes, average the
        gradients over ranks in one bucketed all-reduce per step.

        Parameters no subnet has used yet get a zero gradient (only in the first step of a
        run): from then on every parameter has a gradient tensor each step (Paddle zeroes
        rather than drops them, as in the baseline), so momentum and weight decay act on all of
        them and the optimizer state always covers the whole model, which resuming needs.
        Every rank trains the same subnets, so the same tensors are reduced everywhere.
        """
        unused = [p for p in self._trainable if p.grad is None]
        if unused:
            sum((p * 0.0).sum() for p in unused).backward()
        if self.world_size == 1:
            return
        grads = [p.grad for p in self._trainable]
        start = 0
        while start < len(grads):
            end, size = start, 0
            while end < len(grads) and (end == start or size + grads[end].size <= GRAD_BUCKET):
                size += grads[end].size
                end += 1
            flat = paddle.concat([g.reshape([-1]) for g in grads[start:end]])
            dist.all_reduce(flat)
            flat = flat / self.world_size
            offset = 0
            for g in grads[start:end]:
                g.set_value(flat[offset:offset + g.size].reshape(g.shape))
                offset += g.size
            start = end

    def _apply_gradients(self) -> None:
        """One optimizer step on the accumulated (and synchronised) gradients, then zero them."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()

    def _statistics(self) -> list:
        """Non-trainable state tensors (BN running statistics), in a fixed order."""
        return [p for p in self.model.parameters() if p.stop_gradient] + \
               [b for b in self.model.buffers() if b.dtype in (paddle.float32, paddle.float64)]

    def _average_statistics(self) -> None:
        """Average non-trainable state (BN running statistics) over ranks: each rank updated
        it from its own images; after this every rank holds the same model."""
        stats = self._statistics()
        if self.world_size == 1 or not stats:
            return
        flat = paddle.concat([t.astype("float32").reshape([-1]) for t in stats])
        dist.all_reduce(flat)
        flat = flat / self.world_size
        offset = 0
        with paddle.no_grad():
            for t in stats:
                n = int(np.prod(t.shape)) if t.shape else 1
                t.set_value(flat[offset:offset + n].reshape(t.shape).astype(t.dtype))
                offset += n

    def _calibration_batches(self, calib_data, batch_size: int, image_size: int | None = None) -> list:
        """The evaluator's ``cfg.bn_calib_batches`` fixed calibration batches of the folder
        ``calib_data`` comes from (see :meth:`evaluate`), as normalised tensors; the same on
        every rank and at every evaluation."""
        if calib_data is None or self.cfg.bn_calib_batches == 0:
            return []
        size = image_size or max(self.model.space.image_sizes)
        images = load_fixed_images(SubnetRanker.image_dir_of(calib_data, "train"), size, self.cfg.bn_calib_batches,
                                   batch_size, 1, seed=EVAL_DEFAULTS["seed"],
                                   on_error=getattr(calib_data, "on_error", "raise"))
        return list(images.calibration_batches())

    def _restore_train_state(self, state: dict) -> None:
        with warnings.catch_warnings():
            # LinearWarmup keeps its inner schedule's state under an extra key, which Paddle's
            # base class reports as unused although LinearWarmup itself restores it.
            warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
            load_portable_optimizer_state(self.optimizer, self._named_trainable, state["optimizer"])
        self.strategy.set_state_dict({k: paddle.to_tensor(v) for k, v in state.get("strategy_state", {}).items()})
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        name, keys, *rest = state["numpy_rng"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(state["python_rng"])

    def _warn_config_change(self, saved: dict | None) -> None:
        if not saved or not self.config:
            return
        old, new = saved.get("Train", {}), self.config.get("Train", {})
        changed = sorted(k for k in set(old) | set(new) if k != "resume" and old.get(k) != new.get(k))
        if changed and self.is_main:
            warnings.warn(f"resuming with a changed Train config ({', '.join(changed)}): the run will "
                          f"not match one that never stopped")
