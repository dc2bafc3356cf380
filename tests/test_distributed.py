"""Two CPU processes (gloo) train the same supernet and end with identical models.

Each rank starts from a different random init on purpose: ``paddle.DataParallel`` must
broadcast rank 0's weights, gradients must be averaged although every subnet leaves
parameters unused, and BN statistics are averaged at each epoch end.  Run for every
registered strategy, and strategy state (heads, buffers) must agree too.  Several forward
passes before one backward (a rank loss) must give the gradients of one process.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import hnas  # noqa: F401  (before paddle, also in spawned processes: see hnas/__init__.py)
import numpy as np
import paddle
import paddle.distributed as dist
import pytest
from hnas.data import make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SPACE = {"base_widths": [8, 16, 16, 32], "channel_divisor": 2, "image_sizes": [32], "num_classes": 4}

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this Paddle build has no paddle.distributed")


def train_on_one_rank(image_root: str, out_dir: str, strategy: str) -> None:
    """Runs in each spawned process: a few steps, then every rank saves its state dict."""
    from hnas.data import build_dataset
    from hnas.models import ResNet, ResNetSuperNet
    from hnas.models.pretrained import build_teacher, full_arch
    from hnas.search_space import SearchSpace
    from hnas.strategies import STRATEGIES, build_strategy
    from hnas.trainer import TrainConfig, Trainer

    space = SearchSpace.from_config(TINY_SPACE)
    teacher = None
    if STRATEGIES.get(strategy).needs_teacher:
        paddle.seed(1)
        teacher = build_teacher(space, ResNet(full_arch(space), space).state_dict())
    paddle.seed(100 + dist.get_rank())
    net = ResNetSuperNet(space)
    np.savez(os.path.join(out_dir, f"init{dist.get_rank()}.npz"),
             **{k: v.numpy() for k, v in net.state_dict().items()})
    cfg = TrainConfig(max_epoch=2, batch_size=4, lr=0.4, warmup=0.5, dyna_batch_size=3,
                      log_freq=4, save_dir=out_dir, bn_calib_batches=2)
    built = build_strategy(strategy, space, cfg, teacher=teacher)
    trainer = Trainer(net, built, cfg)
    trainer.fit(build_dataset(image_root, "train", 32), build_dataset(image_root, "val", 32),
                calib_data=build_dataset(image_root, "train", 32, train=False))
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    state.update({f"strategy.{k}": v.numpy() for k, v in built.state_dict().items()})
    np.savez(os.path.join(out_dir, f"rank{dist.get_rank()}.npz"), **state)


def multi_forward_gradients(out_dir: str) -> None:
    """Three subnets' forward passes, one backward, gradients synchronised as the trainer does;
    each rank (or the only process) takes its slice of one fixed batch."""
    from hnas.models import ResNetSuperNet
    from hnas.search_space import SearchSpace
    from hnas.strategies import StepContext, build_strategy
    from hnas.trainer import TrainConfig, Trainer

    space = SearchSpace.from_config(TINY_SPACE)
    paddle.seed(0)
    net = ResNetSuperNet(space)
    net.eval()  # running statistics: a sample's loss does not depend on the rest of its batch
    cfg = TrainConfig(batch_size=4)
    trainer = Trainer(net, build_strategy("spos", space, cfg), cfg, save_dir="")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 3, 32, 32)).astype("float32")
    labels = rng.integers(0, 4, 8)
    world, rank = trainer.world_size, trainer.rank
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    x, y = paddle.to_tensor(images[part]), paddle.to_tensor(labels[part])
    ctx = StepContext(net, 0, 0, 0, trainer.network, rank=rank, world_size=world)
    archs = [space.largest(), space.smallest(), trainer.strategy.sample(ctx, 0)]
    with (trainer.network.no_sync() if world > 1 else contextlib.nullcontext()):
        total = sum(paddle.nn.functional.cross_entropy(ctx.forward(x, a).logits, y) for a in archs)
        ctx.backward(total)
    trainer._sync_gradients()
    np.savez(os.path.join(out_dir, f"grads{rank}of{world}.npz"),
             **{name: p.grad.numpy() for name, p in trainer._named_trainable.items()})



@pytest.mark.filterwarnings("ignore:Your model will be trained under CPUONLY mode")
def _all_strategies():
    from hnas.strategies import STRATEGIES

    return STRATEGIES.names()


@pytest.mark.parametrize("strategy", _all_strategies())
def test_two_cpu_processes_end_with_identical_models(strategy, tmp_path):
    image_root = make_image_folder(str(tmp_path / "images"), num_classes=4, per_class=8, image_size=32)
    out = str(tmp_path / "run")
    os.makedirs(out)
    dist.spawn(train_on_one_rank, args=(image_root, out, strategy), nprocs=2, backend="gloo")
    ranks = [np.load(os.path.join(out, f"rank{r}.npz")) for r in (0, 1)]
    inits = [np.load(os.path.join(out, f"init{r}.npz")) for r in (0, 1)]
    stem = "blocks.0.conv.weight"
    assert not np.array_equal(inits[0][stem], inits[1][stem]), "ranks should start differently"
    for key in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=f"{key} differs between ranks")
    assert not np.array_equal(ranks[0][stem], inits[0][stem]), "training did not change the weights"
    assert os.path.isfile(os.path.join(out, "final.pdparams"))
    assert "on 2 process(es)" in open(os.path.join(out, "train.log")).read()


@pytest.mark.filterwarnings("ignore:Your model will be trained under CPUONLY mode")
def test_several_forwards_before_one_backward_give_one_process_gradients(tmp_path):
    out = str(tmp_path)
    dist.spawn(multi_forward_gradients, args=(out,), nprocs=2, backend="gloo")
    multi_forward_gradients(out)
    ranks = [np.load(os.path.join(out, f"grads{r}of2.npz")) for r in (0, 1)]
    single = np.load(os.path.join(out, "grads0of1.npz"))
    assert set(single.files) == set(ranks[0].files)
    assert any(np.abs(single[k]).sum() > 0 for k in single.files)
    for key in single.files:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=f"{key} differs between ranks")
        np.testing.assert_allclose(ranks[0][key], single[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_cli_under_paddle_distributed_launch_on_cpu(tmp_path):
    image_root = make_image_folder(str(tmp_path / "images"), num_classes=4, per_class=4, image_size=32)
    config = tmp_path / "tiny.yaml"
    config.write_text("SearchSpace:\n" + "".join(f"  {k}: {v}\n" for k, v in TINY_SPACE.items()))
    save_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(tmp_path / "launch"), "train_supernet.py", "run", "--config", str(config),
           "--image_dir", image_root, "--save_dir", str(save_dir), "--strategy", "spos",
           "--max_epoch", "1", "--batch_size", "4", "--warmup", "0", "--num_workers", "0", "--log_freq", "1"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    logs = "".join(open(os.path.join(tmp_path / "launch", f)).read() for f in os.listdir(tmp_path / "launch"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs[-3000:]
    assert (save_dir / "final.pdparams").is_file() and (save_dir / "config.yaml").is_file()
    log = (save_dir / "train.log").read_text()
    assert "2 steps/epoch, 8 images/step on 2 process(es)" in log
