"""The trainer: data order, augmentation seeding, LR schedule, clipping, gradient semantics,
checkpoints and logs, evaluation, and the losses it trains with."""
from __future__ import annotations

import os
import random

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from hnas import losses
from hnas.data import build_dataset, make_image_folder
from hnas.models import ResNet, ResNetSuperNet
from hnas.strategies import StepContext, build_strategy
from hnas.train_config import DataConfig, build_datasets
from hnas.trainer import EpochBatchSampler, EpochSeededDataset, TrainConfig, Trainer, build_optimizer


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=8,
                             image_size=32, seed=0)


def spos_trainer(space, save_dir="", **overrides):
    settings = dict(max_epoch=1, batch_size=8, lr=0.05, scale_lr=False, warmup=0,
                    weight_decay=0.0, log_freq=2)
    cfg = TrainConfig(**{**settings, **overrides})
    paddle.seed(0)
    net = ResNetSuperNet(space)
    return Trainer(net, build_strategy("spos", space, cfg), cfg, save_dir=save_dir), net


# ---------------------------------------------------------------------------- data order
def test_batch_order_is_a_function_of_seed_and_epoch():
    def batches(seed, epoch, rank=0, replicas=1):
        sampler = EpochBatchSampler(50, 4, seed=seed, num_replicas=replicas, rank=rank)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 3) == batches(0, 3)
    assert batches(0, 3) != batches(0, 4)
    assert batches(0, 3) != batches(1, 3)
    assert len(batches(0, 0)) == 50 // 4 and all(len(b) == 4 for b in batches(0, 0))
    # Two ranks split every global batch of one process with batch 8 into disjoint halves.
    global_batches = [sorted(b) for b in EpochBatchSampler(50, 8, seed=0)]
    rank0, rank1 = batches(0, 0, 0, 2), batches(0, 0, 1, 2)
    assert len(rank0) == len(rank1) == 50 // 8
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        assert not set(a) & set(b)
        assert sorted(a + b) == global_batches[step]


def test_evaluation_shards_cover_every_sample_once():
    shards = [list(EpochBatchSampler(11, 3, shuffle=False, drop_last=False, num_replicas=2, rank=r))
              for r in (0, 1)]
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert seen == list(range(11))
    assert [len(EpochBatchSampler(11, 3, shuffle=False, drop_last=False, num_replicas=2, rank=r))
            for r in (0, 1)] == [len(s) for s in shards]


def test_a_train_set_smaller_than_one_global_batch_is_refused():
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        EpochBatchSampler(7, 4, num_replicas=2)


def test_augmentation_depends_on_seed_epoch_index_only(image_root):
    train = build_dataset(image_root, "train", 32, train=True)
    seeded = EpochSeededDataset(train, seed=0)
    first = seeded[3][0]
    random.seed(123)
    np.random.seed(123)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    np.testing.assert_array_equal(seeded[3][0], first)
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state)
    seeded.set_epoch(1)
    assert not np.array_equal(seeded[3][0], first), "augmentation must change between epochs"


def test_worker_count_does_not_change_training(small_space, image_root):
    train = build_dataset(image_root, "train", 32)
    results = []
    for workers in (0, 2):
        trainer, net = spos_trainer(small_space)
        trainer.fit(train, num_workers=workers)
        results.append({k: v.numpy() for k, v in net.state_dict().items()})
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


# ---------------------------------------------------------------------------- optimizer
def test_lr_warms_up_linearly_then_follows_a_cosine():
    cfg = TrainConfig(max_epoch=10, warmup=2, lr=0.1, batch_size=128, scale_lr=True)
    layer = paddle.nn.Linear(2, 2)
    optimizer, schedule = build_optimizer(layer.parameters(), cfg, steps_per_epoch=10, world_size=4)
    peak = 0.1 * 128 * 4 / 256
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.get_lr())
        schedule.step()
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[10] == pytest.approx(peak / 2)
    assert lrs[20] == pytest.approx(peak)
    assert lrs[60] == pytest.approx(peak / 2, rel=1e-6)  # cosine half way through its 80 steps
    assert lrs[99] == pytest.approx(peak * (1 + np.cos(np.pi * 79 / 80)) / 2, rel=1e-6)
    assert TrainConfig(lr=0.1, batch_size=128, scale_lr=False).peak_lr(4) == 0.1


def test_global_norm_clipping_bounds_the_update():
    cfg = TrainConfig(lr=256.0, batch_size=256, momentum=0.0, weight_decay=0.0, warmup=0, grad_clip=1e-3)
    layer = paddle.nn.Linear(8, 8)
    before = [p.numpy().copy() for p in layer.parameters()]
    optimizer, _ = build_optimizer(layer.parameters(), cfg, steps_per_epoch=10)
    (layer(paddle.ones([4, 8])) * 100).sum().backward()
    optimizer.step()
    step = np.sqrt(sum(((p.numpy() - b) ** 2).sum() for p, b in zip(layer.parameters(), before)))
    assert step == pytest.approx(256.0 * 1e-3, rel=1e-3)  # lr x clip norm: the clip was applied


def test_unused_blocks_get_zero_gradients_and_stay_put(small_space, image_root):
    trainer, net = spos_trainer(small_space)
    trainer.prepare(steps_per_epoch=1)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    images, labels = next(iter(paddle.io.DataLoader(build_dataset(image_root, "train", 32), batch_size=8)))
    trainer.strategy.train_step((images, labels), StepContext(net, 0, 0, 0))
    active = set(net.active_blocks())
    trainer._sync_gradients()
    trainer._apply_gradients()
    assert all(p.grad is not None for p in trainer._trainable)  # zeroed, not dropped
    for index in range(len(net.blocks)):
        key = next(k for k in before if k.startswith(f"blocks.{index}.") and k.endswith("weight"))
        moved = not np.array_equal(net.state_dict()[key].numpy(), before[key])
        assert moved == (index in active), f"block {index} (active: {index in active}) moved: {moved}"


# ---------------------------------------------------------------------------- checkpoints, logs
def test_fit_writes_checkpoints_logs_and_scalars(small_space, image_root, tmp_path):
    trainer, net = spos_trainer(small_space, save_dir=str(tmp_path), max_epoch=3, save_freq=2)
    trainer.config = {"Train": {"max_epoch": 3}}
    logs = trainer.fit(build_dataset(image_root, "train", 32), build_dataset(image_root, "val", 32))
    files = set(os.listdir(tmp_path))
    assert {"epoch_2.pdparams", "epoch_2.pdopt", "final.pdparams", "final.pdopt", "latest", "train.log"} <= files
    assert "epoch_1.pdparams" not in files and "epoch_3.pdparams" not in files
    assert (tmp_path / "latest").read_text().strip() == "final"
    assert os.listdir(tmp_path / "vdl")
    log = (tmp_path / "train.log").read_text()
    assert "img/s" in log and "eta" in log and "top1_largest" in log and "top1_smallest" in log
    assert set(logs) == {"top1_largest", "top1_smallest"} and all(0 <= v <= 1 for v in logs.values())
    state = paddle.load(str(tmp_path / "final.pdopt"))
    assert state["epoch"] == 3 and state["global_step"] == 3 * trainer.steps_per_epoch
    assert state["config"] == {"Train": {"max_epoch": 3}} and state["strategy"] == "spos"
    assert all("@" in k for k in state["optimizer"] if k != "LR_Scheduler")
    saved = paddle.load(str(tmp_path / "final.pdparams"))
    assert not any(k.startswith("_layers.") for k in saved)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(saved[key].numpy(), value.numpy())


def test_load_without_training_state_fails_clearly(small_space, tmp_path):
    trainer, net = spos_trainer(small_space)
    paddle.save(net.state_dict(), str(tmp_path / "weights.pdparams"))
    with pytest.raises(FileNotFoundError, match="training state"):
        trainer.load(str(tmp_path / "weights"))
    trainer.load(str(tmp_path / "weights.pdparams"), reset_optimizer=True)
    assert trainer.epoch == 0
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.load(str(tmp_path / "missing"))


def test_resuming_with_a_changed_config_warns(small_space, image_root, tmp_path):
    trainer, _ = spos_trainer(small_space, save_dir=str(tmp_path))
    trainer.config = {"Train": {"lr": 0.05}}
    trainer.fit(build_dataset(image_root, "train", 32))
    resumed, _ = spos_trainer(small_space, save_dir=str(tmp_path))
    resumed.config = {"Train": {"lr": 0.5}}
    with pytest.warns(UserWarning, match=r"changed Train config \(lr\)"):
        resumed.load(str(tmp_path))


def test_evaluate_matches_a_direct_count_and_restores_the_active_arch(small_space, image_root):
    trainer, net = spos_trainer(small_space)
    val = build_dataset(image_root, "val", 32)
    arch = small_space.parse("1" + "3333" + "1" + "11" * 3 + "00" * 2 + "11" * 3 + "00" * 2
                             + "11" * 3 + "00" * 5 + "11" * 3 + "00" * 2)
    net.set_active(arch)
    results = trainer.evaluate(val, batch_size=5)
    assert net.active_arch() == arch and net.training
    net.eval()
    for name, target in (("largest", small_space.largest()), ("smallest", small_space.smallest())):
        net.set_active(target)
        images = paddle.to_tensor(np.stack([val[i][0] for i in range(len(val))]))
        labels = np.array([val[i][1] for i in range(len(val))])
        expected = float((net(images).numpy().argmax(-1) == labels).mean())
        assert results[f"top1_{name}"] == pytest.approx(expected)


def test_calibrated_evaluation_recalibrates_each_arch_and_restores_the_statistics(small_space, image_root):
    from hnas.evaluator import recalibrate_bn

    trainer, net = spos_trainer(small_space, bn_calib_batches=2)
    trainer.fit(build_dataset(image_root, "train", 32))
    calib, val = build_dataset(image_root, "train", 32, train=False), build_dataset(image_root, "val", 32)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    results = trainer.evaluate(val, calib_data=calib, batch_size=8)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[key], err_msg=f"{key} changed by evaluate")
    batches = trainer._calibration_batches(calib, 8)
    assert len(batches) == 2 and all(b.shape[0] == 8 for b in batches)
    images = paddle.to_tensor(np.stack([val[i][0] for i in range(len(val))]))
    labels = np.array([val[i][1] for i in range(len(val))])
    for name, arch in (("largest", small_space.largest()), ("smallest", small_space.smallest())):
        net.set_active(arch)
        recalibrate_bn(net, batches)
        net.eval()
        expected = float((net(images).numpy().argmax(-1) == labels).mean())
        assert results[f"top1_{name}"] == pytest.approx(expected)


def test_standalone_strategy_trains_a_plain_resnet(small_space, image_root):
    cfg = TrainConfig(max_epoch=1, batch_size=8, lr=0.05, scale_lr=False, warmup=0)
    net = ResNet(small_space.smallest(), small_space)
    trainer = Trainer(net, build_strategy("standalone", small_space, cfg), cfg, save_dir="")
    logs = trainer.fit(build_dataset(image_root, "train", 32), build_dataset(image_root, "val", 32))
    assert set(logs) == {"top1_net"}


def test_train_and_data_configs_refuse_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown Train keys"):
        TrainConfig.from_config({"lrr": 0.1})
    with pytest.raises(ValueError, match="dyna_batch_size"):
        TrainConfig.from_config({"dyna_batch_size": 0})
    with pytest.raises(ValueError, match="backbone"):
        TrainConfig.from_config({"backbone": "resnet50"})
    with pytest.raises(ValueError, match="unknown Data keys"):
        DataConfig.from_config({"imagedir": "x"})
    with pytest.raises(ValueError, match="--image_dir"):
        build_datasets(DataConfig(), 32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_datasets(DataConfig(image_dir=str(tmp_path / "none")), 32)


# ---------------------------------------------------------------------------- losses
def test_cross_entropy_with_label_smoothing_matches_the_formula():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(5, 4)).astype("float32"), np.array([0, 1, 2, 3, 1])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full((5, 4), 0.1 / 4) + 0.9 * np.eye(4)[labels]
    got = losses.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), label_smoothing=0.1)
    assert float(got) == pytest.approx(-(target * log_p).sum(-1).mean(), rel=1e-5)
    plain = losses.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels))
    assert float(plain) == pytest.approx(-log_p[np.arange(5), labels].mean(), rel=1e-5)


def test_soft_cross_entropy_is_the_baseline_term_and_kl_is_a_distance():
    rng = np.random.default_rng(1)
    student, teacher = (paddle.to_tensor(rng.normal(size=(6, 5)).astype("float32")) for _ in range(2))
    baseline = F.cross_entropy(student, F.softmax(teacher), soft_label=True)
    assert float(losses.soft_cross_entropy(student, teacher)) == pytest.approx(float(baseline), rel=1e-5)
    assert float(losses.kl_divergence(teacher, teacher, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.kl_divergence(student, teacher)) > 0
    entropy = -(F.softmax(teacher) * F.log_softmax(teacher)).sum(-1).mean()
    assert float(losses.soft_cross_entropy(student, teacher)) == pytest.approx(
        float(losses.kl_divergence(student, teacher) + entropy), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_cross_entropy(student, teacher, temperature=0)


def test_inplace_distillation_does_not_train_the_teacher():
    teacher = paddle.to_tensor(np.ones((2, 3), dtype="float32"), stop_gradient=False)
    student = paddle.to_tensor(np.zeros((2, 3), dtype="float32"), stop_gradient=False)
    losses.inplace_distillation(student, teacher * 2.0, temperature=4.0).backward()
    assert teacher.grad is None and student.grad is not None


# ---------------------------------------------------------------------------- divergence
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(small_space, image_root, tmp_path):
    from hnas.trainer import TrainingDiverged

    train_set = build_dataset(image_root, "train", 32)
    trainer, net = spos_trainer(small_space, save_dir=str(tmp_path), max_epoch=1)
    trainer.fit(train_set)
    good = {k: v.numpy().copy() for k, v in paddle.load(str(tmp_path / "final.pdparams")).items()}
    files = sorted(os.listdir(tmp_path))
    # A second run into the same folder (the trainer itself does not refuse; the CLI does) whose
    # weight decay x lr = 1e6 makes the weights grow a million-fold per step until they overflow.
    trainer, net = spos_trainer(small_space, save_dir=str(tmp_path), max_epoch=3, lr=1e8, momentum=0.0,
                                weight_decay=1e-2)
    stopped = (r"(non-finite loss \(loss (nan|inf)\) at epoch [12] step \d+: training stopped before the optimizer "
               r"step|blocks\.\d+\.\S+ holds NaN or inf after epoch 1: checkpoint 'epoch_1' was not written); "
               r"the last good checkpoint is .*final")
    with pytest.raises(TrainingDiverged, match=stopped):
        trainer.fit(train_set)
    assert (tmp_path / "latest").read_text().strip() == "final"
    assert sorted(os.listdir(tmp_path)) == files  # no new checkpoint
    for key, value in paddle.load(str(tmp_path / "final.pdparams")).items():
        np.testing.assert_array_equal(value.numpy(), good[key])


def test_non_finite_weights_are_never_saved(small_space, tmp_path):
    from hnas.trainer import TrainingDiverged

    trainer, net = spos_trainer(small_space, save_dir=str(tmp_path))
    trainer.prepare(steps_per_epoch=1)
    net.blocks[3].conv1.weight.set_value(np.full(net.blocks[3].conv1.weight.shape, np.inf, dtype="float32"))
    with pytest.raises(TrainingDiverged, match=r"blocks.3.conv1.weight holds NaN or inf .* checkpoint 'epoch_1' "
                                               r"was not written; no checkpoint had been written yet"):
        trainer.save("epoch_1")
    assert not os.listdir(tmp_path)


def test_the_first_non_finite_loss_stops_training_naming_epoch_and_step(small_space, image_root):
    from hnas.trainer import TrainingDiverged

    trainer, net = spos_trainer(small_space, max_epoch=2)
    calls = []

    def diverging_step(batch, ctx):
        calls.append((ctx.epoch, ctx.step))
        return {"loss": float("nan") if len(calls) == 3 else 1.0}

    trainer.strategy.train_step = diverging_step
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(loss nan\) at epoch 1 step 3: training stopped "
                                               r"before the optimizer step; nothing was saved"):
        trainer.fit(build_dataset(image_root, "train", 32))
    assert calls == [(0, 0), (0, 1), (0, 2)] and trainer.global_step == 2
