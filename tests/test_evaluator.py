"""Ranking: exact BN recalibration, fixed images, resumable shards, merge, checkpoint loading."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

from conftest import ROOT, randomize_bn_and_prelu
from eval_supernet import parse_args, resolve_shard, run
from hnas.checkpoint import save_checkpoint
from hnas.data import build_dataset, make_image_folder
from hnas.evaluator import (FLOAT_CACHE_BYTES, ShardLog, SubnetRanker, load_fixed_images, load_supernet,
                            prefix_key, rank_shard, recalibrate_bn, shard_keys, shard_path, top1_accuracy)
from hnas.models import ResNetSuperNet
from hnas.search_space import ArchCodeError

# K=2 batches of 8 for calibration, 16 val images: milliseconds per arch at these widths.
FLAGS = ["--calib_batches", "2", "--batch_size", "8", "--eval_images", "16", "--no_progress"]
NUM_ARCHS = 7
KILL_ARCHS = 40


@pytest.fixture(scope="module")
def space(small_space):
    """Tiny widths, two image sizes (code digit 1 -> 16 px, 2 -> 32 px), 4 classes."""
    return dataclasses.replace(small_space, image_sizes=(16, 32), num_classes=4)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, space, track1_codes):
    """Images, a config, a checkpoint and an arch JSON shared by the tests of this module."""
    root = tmp_path_factory.mktemp("rank")
    make_image_folder(str(root / "images"), num_classes=4, per_class=8, image_size=32)
    config = root / "tiny.yaml"
    fields = {f.name: getattr(space, f.name) for f in dataclasses.fields(space) if f.init}
    config.write_text(yaml.safe_dump({"SearchSpace": json.loads(json.dumps(fields))}))  # tuples -> lists
    paddle.seed(1)
    supernet = randomize_bn_and_prelu(ResNetSuperNet(space), seed=1)
    save_checkpoint(str(root / "run"), "final", supernet.state_dict())
    codes = track1_codes[:NUM_ARCHS]
    codes[2] = "2" + codes[2][1:]  # one arch at the second image size
    # Keys out of sorted order and one extra field: the output must keep both.
    archs = {f"arch{k}": {"acc": 0.0, "arch": code} for k, code in zip((10, 2, 33, 1, 7, 5, 4), codes)}
    archs["arch33"]["note"] = "kept"
    json_path = root / "archs.json"
    json_path.write_text(json.dumps(archs))
    return root


def _run(workdir, save_name, *extra, json_name="archs.json"):
    save_path = str(workdir / save_name)
    run(parse_args(["run", "--config", str(workdir / "tiny.yaml"), "--image_dir", str(workdir / "images"),
                    "--resume", str(workdir / "run"), "--json_path", str(workdir / json_name),
                    "--save_path", save_path, *FLAGS, *extra]))
    return save_path


@pytest.fixture(scope="module")
def reference(workdir):
    """The submission of one uninterrupted single-shard run."""
    with open(_run(workdir, "reference.json")) as f:
        return json.load(f)


def _read(path):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- recalibration
def test_recalibration_equals_numpy_average_of_batch_statistics(space):
    model = randomize_bn_and_prelu(ResNetSuperNet(space), seed=2)
    model.set_active(space.smallest())
    stem = model.blocks[0]
    channels = model.active_widths().stem
    assert channels < stem.bn._mean.shape[0]  # partial channels: the tail must stay untouched
    before_mean, before_var = stem.bn._mean.numpy().copy(), stem.bn._variance.numpy().copy()
    rng = np.random.default_rng(0)
    batches = [rng.normal(1.0, 2.0, (n, 3, 16, 16)).astype("float32") for n in (8, 8, 5)]
    assert recalibrate_bn(model, batches) == 21
    conv_weight = stem.conv.weight[:channels]
    outputs = [F.conv2d(paddle.to_tensor(x), conv_weight, stride=2, padding=3).numpy().astype("float64")
               for x in batches]
    sizes = np.array([len(x) for x in batches], dtype="float64")
    means = np.stack([y.mean(axis=(0, 2, 3)) for y in outputs])
    variances = np.stack([y.var(axis=(0, 2, 3)) for y in outputs])  # biased, as Paddle's
    expected_mean = (sizes[:, None] * means).sum(0) / sizes.sum()
    expected_var = (sizes[:, None] * variances).sum(0) / sizes.sum()
    np.testing.assert_allclose(stem.bn._mean.numpy()[:channels], expected_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stem.bn._variance.numpy()[:channels], expected_var, rtol=1e-4)
    np.testing.assert_array_equal(stem.bn._mean.numpy()[channels:], before_mean[channels:])
    np.testing.assert_array_equal(stem.bn._variance.numpy()[channels:], before_var[channels:])
    assert not np.allclose(before_mean[:channels], expected_mean, atol=1e-2)  # it did change


def test_recalibration_leaves_everything_else_as_found(space):
    model = randomize_bn_and_prelu(ResNetSuperNet(space), seed=3)
    model.set_active(space.smallest())
    model.train()
    model.blocks[1].eval()  # a mixed state must come back exactly
    model.blocks[2].bn1._momentum = 0.7
    flags = [layer.training for layer in model.sublayers(include_self=True)]
    momenta = [getattr(layer, "_momentum", None) for layer in model.sublayers()]
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    batches = [np.random.default_rng(i).normal(size=(4, 3, 16, 16)).astype("float32") for i in range(2)]
    recalibrate_bn(model, batches)
    after = {k: v.numpy() for k, v in model.state_dict().items()}
    assert [layer.training for layer in model.sublayers(include_self=True)] == flags
    assert [getattr(layer, "_momentum", None) for layer in model.sublayers()] == momenta
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(k.endswith(("_mean", "_variance")) for k in changed)
    skipped = model.stage_blocks[0][-1]  # depth 2 of 5: the last stage-1 block does not run
    assert not any(k.startswith(f"blocks.{skipped}.") for k in changed)
    with paddle.no_grad():
        model(paddle.to_tensor(batches[0]))  # no hook is left behind to change momenta again
    assert [getattr(layer, "_momentum", None) for layer in model.sublayers()] == momenta


def test_zero_batches_keep_stored_statistics(space):
    model = randomize_bn_and_prelu(ResNetSuperNet(space), seed=4)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    assert recalibrate_bn(model, []) == 0
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[key])


def test_recalibrated_statistics_do_not_depend_on_earlier_archs(space, track1_codes):
    model = randomize_bn_and_prelu(ResNetSuperNet(space), seed=5)
    batches = [np.random.default_rng(i).normal(size=(6, 3, 16, 16)).astype("float32") for i in range(2)]
    target, other = track1_codes[0], track1_codes[1]
    model.set_active(target)
    recalibrate_bn(model, batches)
    first = {k: v.numpy().copy() for k, v in model.export().state_dict().items()}
    model.set_active(other)
    recalibrate_bn(model, batches)  # overwrites statistics the target shares
    model.set_active(target)
    recalibrate_bn(model, batches)
    for key, value in model.export().state_dict().items():
        np.testing.assert_array_equal(value.numpy(), first[key], err_msg=key)


def test_supernet_and_its_exported_network_recalibrate_alike(space, track1_codes):
    model = randomize_bn_and_prelu(ResNetSuperNet(space), seed=9)
    model.set_active(track1_codes[4])
    net = model.export()  # plain nn.BatchNorm2D layers, full width
    batches = [np.random.default_rng(i).normal(size=(6, 3, 16, 16)).astype("float32") for i in range(3)]
    recalibrate_bn(model, batches)
    recalibrate_bn(net, batches)
    expected = net.state_dict()
    for key, value in model.export().state_dict().items():
        np.testing.assert_allclose(value.numpy(), expected[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key)


def test_score_equals_exported_network_on_the_usual_pipeline(space, workdir, track1_codes):
    image_dir = str(workdir / "images")
    supernet, _ = load_supernet(space, str(workdir / "run"))
    ranker = SubnetRanker(supernet, image_dir, calib_batches=2, eval_images=16, batch_size=8)
    for code in (track1_codes[0], "2" + track1_codes[1][1:]):
        score = ranker.score(code)
        size = space.image_sizes[int(code[0]) - 1]
        net = supernet.export()
        net.eval()
        val = build_dataset(image_dir, "val", size, train=False, limit=16)
        images = np.stack([val[i][0] for i in range(len(val))])
        labels = np.array([val[i][1] for i in range(len(val))])
        assert images.shape[-1] == size
        batches = [(paddle.to_tensor(images[i:i + 8]), paddle.to_tensor(labels[i:i + 8])) for i in (0, 8)]
        assert top1_accuracy(net, batches) == score


@pytest.mark.parametrize("max_float_bytes", [0, FLOAT_CACHE_BYTES], ids=["uint8", "float32"])
def test_cached_images_equal_the_data_pipeline(workdir, max_float_bytes):
    fixed = load_fixed_images(str(workdir / "images"), 16, calib_batches=2, batch_size=8, eval_images=16,
                              max_float_bytes=max_float_bytes)
    assert fixed.normalized == (max_float_bytes > 0)
    val = build_dataset(str(workdir / "images"), "val", 16, train=False, limit=16)
    images, labels = next(fixed.eval_batches())
    # Paddle 2.6 divides in float32 a little differently from numpy: equal within one ulp.
    np.testing.assert_allclose(images.numpy(), np.stack([val[i][0] for i in range(8)]), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), [val[i][1] for i in range(8)])
    calibration = list(fixed.calibration_batches())
    assert [b.dtype for b in calibration] == [paddle.float32] * 2
    assert fixed.num_calibration == 16 and fixed.num_eval == 16
    all_labels = np.concatenate([b.numpy() for b in fixed.eval_labels])
    assert sorted(set(all_labels)) == [0, 1, 2, 3]


def test_calib_batches_zero_scores_with_stored_statistics(space, workdir, track1_codes):
    supernet, _ = load_supernet(space, str(workdir / "run"))
    stored = {k: v.numpy().copy() for k, v in supernet.state_dict().items()}
    ranker = SubnetRanker(supernet, str(workdir / "images"), calib_batches=0, eval_images=16, batch_size=8)
    ranker.score(track1_codes[3])
    for key, value in supernet.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), stored[key])


# ----------------------------------------------------------------------------- runs and shards
def test_output_is_the_input_with_acc_filled_in(workdir, reference):
    archs = _read(workdir / "archs.json")
    assert list(reference) == list(archs)
    for key, entry in archs.items():
        assert list(reference[key]) == list(entry)
        assert reference[key]["arch"] == entry["arch"]
        assert 0.0 <= reference[key]["acc"] <= 1.0
    assert reference["arch33"]["note"] == "kept"
    assert len({entry["acc"] for entry in reference.values()}) > 1  # archs really differ


def test_resume_after_truncated_last_line_equals_uninterrupted_run(workdir, reference):
    save_path = _run(workdir, "resumed.json")
    shard_file = shard_path(save_path, 0, 1)
    lines = open(shard_file).read().splitlines(keepends=True)
    assert len(lines) == 1 + NUM_ARCHS
    with open(shard_file, "w") as f:  # two archs done, the third cut mid-line by a kill
        f.write("".join(lines[:3]) + lines[3][:17])
    os.remove(save_path)
    _run(workdir, "resumed.json")
    assert _read(save_path) == reference
    lines = open(shard_file).read().splitlines()
    assert len(lines) == 1 + NUM_ARCHS and all(json.loads(line) for line in lines)


def test_reopening_a_shard_log_drops_the_cut_line(tmp_path):
    path = str(tmp_path / "log.jsonl")
    log = ShardLog(path, {"calib_batches": 2})
    log.append("arch1", "1" * 52, 0.5)
    log.close()
    complete = open(path).read()
    with open(path, "a") as f:
        f.write('{"key": "arch2", "arch": "' + "3" * 200)  # longer than any record
    reopened = ShardLog(path, {"calib_batches": 2})
    reopened.close()
    assert open(path).read() == complete
    assert reopened.results == {"arch1": ("1" * 52, 0.5)}


def test_a_shard_log_is_locked_while_open(tmp_path):
    path = str(tmp_path / "log.jsonl")
    log = ShardLog(path, {})
    with pytest.raises(RuntimeError, match="in use by another process"):
        ShardLog(path, {})
    log.close()
    ShardLog(path, {}).close()


def test_kill_9_mid_run_then_restart_equals_uninterrupted_run(workdir, track1_codes):
    archs = {f"arch{i}": {"acc": 0.0, "arch": code} for i, code in enumerate(track1_codes[:KILL_ARCHS])}
    (workdir / "kill.json").write_text(json.dumps(archs))  # long enough to be killed mid-run
    reference = _read(_run(workdir, "kill_reference.json", json_name="kill.json"))
    save_path = str(workdir / "killed.json")
    shard_file = shard_path(save_path, 0, 1)
    command = [sys.executable, "eval_supernet.py", "run", "--config", str(workdir / "tiny.yaml"),
               "--image_dir", str(workdir / "images"), "--resume", str(workdir / "run" / "final"),
               "--json_path", str(workdir / "kill.json"), "--save_path", save_path, *FLAGS]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(shard_file) and open(shard_file).read().count("\n") >= 2:  # settings + 1 arch
            break
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = open(shard_file).read().count("\n") - 1
    assert 1 <= done < KILL_ARCHS, f"the kill came after {done} of {KILL_ARCHS} archs"
    assert not os.path.exists(save_path)
    _run(workdir, "killed.json", json_name="kill.json")
    assert _read(save_path) == reference


def test_two_shards_merged_equal_one_shard(workdir, reference):
    save_path = str(workdir / "sharded.json")
    for shard in ("0", "1"):
        _run(workdir, "sharded.json", "--num_shards", "2", "--shard", shard)
    assert not os.path.exists(save_path)  # several shards: only --merge_only writes the submission
    shards = [[json.loads(line)["key"] for line in open(shard_path(save_path, i, 2)).read().splitlines()[1:]]
              for i in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(reference) and sorted(map(len, shards)) == [3, 4]
    _run(workdir, "sharded.json", "--num_shards", "2", "--merge_only")
    assert _read(save_path) == reference


def test_merge_names_the_missing_arch(workdir):
    save_path = str(workdir / "partial.json")
    _run(workdir, "partial.json", "--num_shards", "2", "--shard", "0")
    with pytest.raises(FileNotFoundError, match=r"shard1of2"):
        _run(workdir, "partial.json", "--num_shards", "2", "--merge_only")
    _run(workdir, "partial.json", "--num_shards", "2", "--shard", "1")
    shard_file = shard_path(save_path, 1, 2)
    lines = open(shard_file).read().splitlines(keepends=True)
    open(shard_file, "w").write("".join(lines[:-1]))
    missing = json.loads(lines[-1])["key"]
    with pytest.raises(ValueError, match=rf"'{missing}' has no result .*shard 1 of 2"):
        _run(workdir, "partial.json", "--num_shards", "2", "--merge_only")


def test_restart_with_other_settings_is_refused(workdir, reference):
    _run(workdir, "settings.json")
    with pytest.raises(ValueError, match="calib_batches"):
        _run(workdir, "settings.json", "--calib_batches", "1")


def test_bad_code_is_named_by_its_key(workdir, tmp_path):
    archs = _read(workdir / "archs.json")
    archs["arch2"]["arch"] = archs["arch2"]["arch"][:-1] + "9"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(archs))
    with pytest.raises(ArchCodeError, match="arch2"):
        run(parse_args(["run", "--config", str(workdir / "tiny.yaml"), "--image_dir", str(workdir / "images"),
                        "--resume", str(workdir / "run"), "--json_path", str(bad),
                        "--save_path", str(tmp_path / "out.json"), *FLAGS]))


def test_shard_from_launcher_environment(monkeypatch):
    assert resolve_shard(None, None, False) == (1, 0)
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "4")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "3")
    assert resolve_shard(None, None, False) == (4, 3)
    assert resolve_shard(4, None, False) == (4, 3)
    assert resolve_shard(2, 1, False) == (2, 1)
    with pytest.raises(ValueError, match="needs --shard"):
        resolve_shard(3, None, False)
    with pytest.raises(ValueError, match="0 <= shard"):
        resolve_shard(2, 2, False)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_with_data_parallel_prefix_loads(space, tmp_path):
    source = randomize_bn_and_prelu(ResNetSuperNet(space), seed=6)
    state = {"_layers." + k: v for k, v in source.state_dict().items()}
    paddle.save(state, str(tmp_path / "multi.pdparams"))
    loaded, path = load_supernet(space, str(tmp_path / "multi"))  # without the suffix
    assert path == str(tmp_path / "multi.pdparams")
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy())


def test_checkpoint_of_another_space_gives_a_clear_error(space, tmp_path):
    wider = dataclasses.replace(space, base_widths=(16, 32, 32, 64))
    save_checkpoint(str(tmp_path), "final", ResNetSuperNet(wider).state_dict())
    with pytest.raises(ValueError, match=r"shape mismatch.*blocks\.0\.conv\.weight.*SearchSpace"):
        load_supernet(space, str(tmp_path))


# ---------------------------------------------------------------------------- prefix reuse
@pytest.fixture(scope="module")
def prefix_setup(space, workdir, track1_codes):
    """A loaded supernet and 200 Track-1 archs, many sharing a stem and stage 1."""
    supernet, _ = load_supernet(space, str(workdir / "run"))
    codes = track1_codes[:200]
    groups = {}
    for code in codes:
        groups.setdefault(prefix_key(space, space.parse(code)), []).append(code)
    assert sum(len(g) for g in groups.values() if len(g) > 1) >= 100  # the test must exercise groups
    return supernet, codes


def test_prefix_reuse_scores_equal_arch_by_arch_scores(prefix_setup, workdir):
    """On 200 archs, minus the loss (a score as fine-grained as the logits)."""
    supernet, codes = prefix_setup
    settings = dict(calib_batches=2, eval_images=16, batch_size=8, score="loss")
    alone = SubnetRanker(supernet, str(workdir / "images"), reuse_prefix=False, **settings)
    shared = SubnetRanker(supernet, str(workdir / "images"), **settings)
    items = [(f"k{i}", code) for i, code in enumerate(codes)]
    expected = dict(alone.score_many(items))
    got = dict(shared.score_many(items))
    assert got.keys() == expected.keys()
    assert max(abs(got[k] - expected[k]) for k in got) <= 1e-6
    assert len(set(expected.values())) > 150  # scores that differ, so equality means something


def test_prefix_reuse_in_chunks_equals_arch_by_arch(prefix_setup, workdir, space):
    """A group whose stage-1 outputs exceed the cache runs in chunks of images: same scores."""
    supernet, codes = prefix_setup
    settings = dict(calib_batches=3, eval_images=24, batch_size=8, score="loss")
    group = {}
    for code in codes:
        group.setdefault(prefix_key(space, space.parse(code)), []).append(code)
    members = max(group.values(), key=len)[:6]
    items = [(f"k{i}", code) for i, code in enumerate(members)]
    alone = SubnetRanker(supernet, str(workdir / "images"), reuse_prefix=False, **settings)
    expected = dict(alone.score_many(items))
    chunked = SubnetRanker(supernet, str(workdir / "images"), **settings)
    supernet.set_active(members[0])
    per_image = 4 * int(np.prod(supernet.blocks[0](paddle.zeros([1, 3, 16, 16])).shape)) \
        if space.image_sizes[int(members[0][0]) - 1] == 16 else None
    assert per_image is not None
    sizes = []
    original = chunked._score_group_in_chunks

    def spy(members, prefix, images, chunk_images):
        sizes.append(chunk_images)
        return original(members, prefix, images, chunk_images)

    chunked._score_group_in_chunks = spy
    chunked.prefix_cache_bytes = 1  # not even one image fits: one batch per chunk
    got = dict(chunked.score_many(items))
    assert sizes == [1]
    assert max(abs(got[k] - expected[k]) for k in got) <= 1e-6


def test_interrupted_in_the_middle_of_a_group_then_resumed_equals_arch_by_arch(prefix_setup, workdir, space,
                                                                                  tmp_path):
    supernet, codes = prefix_setup
    group = {}
    for code in codes:
        group.setdefault(prefix_key(space, space.parse(code)), []).append(code)
    members = [g[:6] for g in sorted(group.values(), key=len)[-2:]]  # six archs of each of the two largest groups
    archs = {f"a{i}": {"acc": 0.0, "arch": code} for i, code in enumerate(members[0] + members[1])}
    settings = dict(calib_batches=2, eval_images=16, batch_size=8, score="loss")
    alone = SubnetRanker(supernet, str(workdir / "images"), reuse_prefix=False, **settings)
    expected = dict(alone.score_many((k, v["arch"]) for k, v in archs.items()))
    save_path = str(tmp_path / "ranked.json")
    checkpoint = str(workdir / "run" / "final.pdparams")

    class Stop(Exception):
        pass

    dying = SubnetRanker(supernet, str(workdir / "images"), **settings)
    whole = dying.score_many

    def stop_after_three(items):
        for n, pair in enumerate(whole(items)):
            if n == 3:
                raise Stop
            yield pair

    dying.score_many = stop_after_three
    with pytest.raises(Stop):
        rank_shard(dying, archs, save_path, 0, 1, checkpoint, progress=False)
    scores = rank_shard(SubnetRanker(supernet, str(workdir / "images"), **settings), archs, save_path, 0, 1,
                        checkpoint, progress=False)
    assert min(map(len, members)) > 3  # the stop came inside the first group
    assert max(abs(scores[k] - expected[k]) for k in archs) <= 1e-6


def test_shards_keep_prefix_groups_whole_and_balanced(space, track1_codes):
    archs = {f"a{i}": {"acc": 0.0, "arch": code} for i, code in enumerate(track1_codes[:300])}
    shards = [shard_keys(archs, i, 4, space) for i in range(4)]
    assert sorted(sum(shards, [])) == sorted(archs) and {len(s) for s in shards} == {75}
    owner = {}
    for i, keys in enumerate(shards):
        for key in keys:
            owner.setdefault(prefix_key(space, space.parse(archs[key]["arch"])), set()).add(i)
    assert sum(len(o) > 1 for o in owner.values()) <= 3  # only groups at the three cuts are split
    assert shard_keys(archs, 2, 4, space) == shards[2]  # deterministic
