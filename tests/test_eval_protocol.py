"""One evaluation protocol: the top-1 the trainer logs for an arch is the score the ranker
(eval_supernet.py) gives the same arch on the saved checkpoint; and the ranker's scoring
options (validation loss, a short fine-tune of a copy of each subnet)."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from hnas.data import build_dataset, make_image_folder
from hnas.evaluator import SubnetRanker, load_supernet
from hnas.models import ResNetSuperNet
from hnas.strategies import build_strategy
from hnas.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=12,
                             image_size=32, seed=0)


@pytest.fixture(scope="module")
def trained(small_space, image_root, tmp_path_factory):
    """A supernet trained one epoch with calibrated validation; its logs and its run folder."""
    save_dir = str(tmp_path_factory.mktemp("run"))
    cfg = TrainConfig(max_epoch=1, batch_size=8, lr=0.1, scale_lr=False, warmup=0,
                      weight_decay=0.0, log_freq=2, bn_calib_batches=2, save_freq=1, save_dir=save_dir)
    paddle.seed(0)
    net = ResNetSuperNet(small_space)
    trainer = Trainer(net, build_strategy("sandwich", small_space, cfg), cfg)
    val = build_dataset(image_root, "val", 32, limit=20)
    logs = trainer.fit(build_dataset(image_root, "train", 32), val,
                       calib_data=build_dataset(image_root, "train", 32, train=False))
    return logs, save_dir, cfg, len(val)


def test_trainer_logs_the_rankers_score_of_the_saved_checkpoint(small_space, image_root, trained):
    logs, save_dir, cfg, num_val = trained
    assert set(logs) == {"top1_largest", "top1_smallest"}
    supernet, _ = load_supernet(small_space, save_dir)
    ranker = SubnetRanker(supernet, image_root, calib_batches=cfg.bn_calib_batches, eval_images=num_val,
                          batch_size=cfg.batch_size)
    assert ranker.score(small_space.largest()) == logs["top1_largest"]
    assert ranker.score(small_space.smallest()) == logs["top1_smallest"]


def test_loss_score_is_minus_the_mean_cross_entropy(small_space, image_root, trained):
    _, save_dir, cfg, num_val = trained
    supernet, _ = load_supernet(small_space, save_dir)
    ranker = SubnetRanker(supernet, image_root, calib_batches=2, eval_images=num_val, batch_size=8, score="loss")
    arch = small_space.smallest()
    score = ranker.score(arch)
    supernet.set_active(arch)
    images = ranker.images(32)
    logits = paddle.concat([supernet(b) for b, _ in images.eval_batches()])
    labels = paddle.concat([lab for _, lab in images.eval_batches()])
    expected = -float(paddle.nn.functional.cross_entropy(logits, labels.reshape([-1, 1])).item())
    assert score == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="score must be one of"):
        SubnetRanker(supernet, image_root, 2, 8, 8, score="top5")


def test_finetuned_score_is_deterministic_and_leaves_the_supernet_untouched(small_space, image_root, trained):
    _, save_dir, _, num_val = trained
    supernet, _ = load_supernet(small_space, save_dir)
    before = {k: v.numpy().copy() for k, v in supernet.state_dict().items()}
    arch = small_space.smallest()
    plain = SubnetRanker(supernet, image_root, 2, num_val, 8).score(arch)
    tuned = [SubnetRanker(supernet, image_root, 2, num_val, 8, finetune_steps=3, finetune_lr=0.05,
                          finetune_batch_size=8).score(arch) for _ in range(2)]
    assert tuned[0] == tuned[1]
    for key, value in supernet.state_dict().items():
        if "_mean" in key or "_variance" in key:
            continue  # BN statistics are recalibrated per score by design
        np.testing.assert_array_equal(value.numpy(), before[key], err_msg=f"{key} changed by fine-tuning")
    assert 0.0 <= plain <= 1.0 and 0.0 <= tuned[0] <= 1.0
    settings = SubnetRanker(supernet, image_root, 2, num_val, 8, finetune_steps=3).settings(save_dir)
    assert settings["finetune_steps"] == 3 and "score" not in settings


def test_scratch_finetune_is_a_short_standalone_training_independent_of_the_supernet(small_space, image_root,
                                                                                  trained):
    _, save_dir, _, num_val = trained
    trained_net, _ = load_supernet(small_space, save_dir)
    paddle.seed(5)
    fresh_net = ResNetSuperNet(small_space)
    scores = [SubnetRanker(net, image_root, 2, num_val, 8, finetune_steps=3, finetune_lr=0.1, finetune_batch_size=8,
                           finetune_init="scratch").score(small_space.smallest()) for net in (trained_net, fresh_net)]
    assert scores[0] == scores[1]
    with pytest.raises(ValueError, match="finetune_init"):
        SubnetRanker(trained_net, image_root, 2, 8, 8, finetune_init="random")
