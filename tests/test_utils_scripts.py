"""The utils/ scripts run as users run them (subprocess from the repo root) on tiny JSONs."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from hnas.io import merge_shards, read_arch_json, refuse_overwrite, split_shards, with_scores, write_arch_json
from hnas.proxies import zen_proxy
from hnas.search_space import SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_CONFIG = os.path.join(ROOT, "configs", "resnet48_small.yaml")
TRACK1_JSON = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")
TINY_WIDTHS = ["-o", "SearchSpace.base_widths=[8,16,16,32]", "-o", "SearchSpace.channel_divisor=2"]


def run(script, *args, ok=True):
    proc = subprocess.run([sys.executable, os.path.join("utils", script), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
    return proc


def run_in_process(script, *args, capsys):
    """Run a script's main() here (no interpreter start-up); returns (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        load_script(script).main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "utils", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def archs(tmp_path):
    """Eight real Track-1 archs, a 'ground truth' and a 'prediction' with known scores."""
    source = read_arch_json(TRACK1_JSON)
    data = {k: source[k] for k in list(source)[:8]}
    gt_acc = [0.71, 0.65, 0.80, 0.55, 0.62, 0.77, 0.69, 0.58]
    pred_acc = [0.30, 0.20, 0.40, 0.10, 0.35, 0.45, 0.25, 0.15]
    paths = {"in": tmp_path / "in.json", "gt": tmp_path / "gt.json", "pred": tmp_path / "pred.json"}
    write_arch_json(data, paths["in"])
    write_arch_json(with_scores(data, gt_acc), paths["gt"])
    write_arch_json(with_scores(data, pred_acc), paths["pred"])
    return data, gt_acc, pred_acc, paths


def test_io_helpers(archs, tmp_path):
    data, _, _, paths = archs
    scored = with_scores(data, {k: i for i, k in enumerate(data)})
    assert list(scored) == list(data) and scored["arch3"] == {"acc": 2.0, "arch": data["arch3"]["arch"]}
    assert data["arch3"]["acc"] == 0.0  # the input is not modified
    with pytest.raises(ValueError, match="got 2 scores for 8 archs"):
        with_scores(data, [1.0, 2.0])
    with pytest.raises(ValueError, match="cannot split 8 archs into 9"):
        split_shards(data, 9)
    assert merge_shards([(f"s{i}", s) for i, s in enumerate(split_shards(data, 8))], data) == data
    with pytest.raises(ValueError, match="finite numeric 'acc'"):
        write_arch_json({"a": {"acc": None, "arch": "1"}}, tmp_path / "none.json")
        read_arch_json(tmp_path / "none.json", require_acc=True)
    os.symlink(paths["in"], tmp_path / "link.json")
    with pytest.raises(ValueError, match="also an input file"):
        refuse_overwrite(str(tmp_path / "link.json"), [str(paths["in"])])
    write_arch_json(data, tmp_path / "again.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_kendall_script(archs):
    _, gt_acc, pred_acc, paths = archs
    proc = run("kendall.py", paths["pred"], paths["gt"], "--topk", 2, 3, 100)
    tau = stats.kendalltau(pred_acc, gt_acc)[0]
    assert f"Kendall tau    : {tau:.4f}" in proc.stdout
    assert "top-100 overlap : skipped (only 8 shared archs)" in proc.stdout
    result = json.loads(run("kendall.py", paths["pred"], paths["gt"], "--topk", 2, 3, "--json").stdout)
    assert result["n"] == 8
    assert result["kendall"] == pytest.approx(tau)
    assert result["pearson"] == pytest.approx(stats.pearsonr(pred_acc, gt_acc)[0])
    assert result["spearman"] == pytest.approx(stats.spearmanr(pred_acc, gt_acc)[0])
    # true top-3: arch3, arch6, arch1; predicted top-3: arch6, arch3, arch5
    assert result["topk"] == {"2": 1.0, "3": pytest.approx(2 / 3)}


def test_kendall_script_errors(archs, tmp_path, capsys):
    data, _, _, paths = archs
    renamed = tmp_path / "renamed.json"
    write_arch_json({"x" + k: v for k, v in read_arch_json(paths["pred"]).items()}, renamed)
    assert "share no key" in run("kendall.py", renamed, paths["gt"], ok=False).stderr
    changed = read_arch_json(paths["pred"])
    changed["arch4"]["arch"] = data["arch5"]["arch"]
    write_arch_json(changed, tmp_path / "changed.json")
    code, err = run_in_process("kendall", tmp_path / "changed.json", paths["gt"], capsys=capsys)
    assert code == 2 and "arch 'arch4' has code" in err
    code, err = run_in_process("kendall", paths["in"], paths["gt"], capsys=capsys)
    assert code == 2 and "pred acc is constant" in err
    code, err = run_in_process("kendall", tmp_path / "nope.json", paths["gt"], capsys=capsys)
    assert code == 2 and "does not exist" in err


def test_split_then_merge_restores_the_original(archs, tmp_path):
    data, _, _, paths = archs
    out = tmp_path / "shards"
    run("split_json.py", paths["in"], "--num_shards", 3, "--out_dir", out)
    shards = [out / f"in_shard{i}of3.json" for i in range(3)]
    assert [len(read_arch_json(p)) for p in shards] == [3, 3, 2]
    run("merge_json.py", shards[2], shards[0], shards[1], "--output", tmp_path / "m.json",
        "--reference", paths["in"])
    merged = read_arch_json(tmp_path / "m.json")
    assert list(merged) == list(data) and merged == data
    assert (tmp_path / "m.json").read_text() == paths["in"].read_text()
    run("merge_json.py", *shards, "--output", tmp_path / "m2.json")  # shard order = original order
    assert list(read_arch_json(tmp_path / "m2.json")) == list(data)


def test_merge_detects_conflicts_gaps_and_refuses_to_overwrite(archs, tmp_path):
    data, _, _, paths = archs
    parts = split_shards(data, 2)
    for i, part in enumerate(parts):
        write_arch_json(part, tmp_path / f"p{i}.json")
    err = run("merge_json.py", tmp_path / "p0.json", "--output", tmp_path / "m.json",
              "--reference", paths["in"], ok=False).stderr
    assert "4 reference arch(s) are in no shard" in err
    clash = dict(parts[1])
    clash["arch1"] = dict(data["arch1"], acc=0.5)
    write_arch_json(clash, tmp_path / "clash.json")
    err = run("merge_json.py", tmp_path / "p0.json", tmp_path / "clash.json", "--output",
              tmp_path / "m.json", ok=False).stderr
    assert "key 'arch1' differs between" in err and "clash.json" in err
    before = (tmp_path / "p0.json").read_text()
    err = run("merge_json.py", tmp_path / "p0.json", tmp_path / "p1.json", "--output",
              tmp_path / "p0.json", ok=False).stderr
    assert "is also an input file" in err
    assert (tmp_path / "p0.json").read_text() == before
    assert not (tmp_path / "m.json").exists()


def test_distance_calc(archs, tmp_path):
    data, _, _, paths = archs
    codes = [v["arch"] for v in data.values()]
    brute = [sum(x != y for x, y in zip(codes[i], codes[j])) for i in range(8) for j in range(i + 1, 8)]
    proc = run("distance_calc.py", paths["in"], "--png", tmp_path / "h.png")
    assert "pairs: 28" in proc.stdout
    assert f"mean {np.mean(brute):.2f}" in proc.stdout and f"max {max(brute)}" in proc.stdout
    assert "identical codes (distance 0): 0" in proc.stdout
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run("distance_calc.py", paths["in"], paths["gt"], "--nearest")
    assert "identical codes (distance 0): 8" in proc.stdout
    proc = run("distance_calc.py", paths["in"], "--max_pairs", 10)
    assert "sampled pairs: 10" in proc.stdout
    write_arch_json({"a": {"acc": 0, "arch": "123"}, "b": {"acc": 0, "arch": "1234"}}, tmp_path / "bad.json")
    assert "is not 3 digits" in run("distance_calc.py", tmp_path / "bad.json", ok=False).stderr


def test_nearest_distances_equal_brute_force():
    module = load_script("distance_calc")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (30, 12)), rng.integers(0, 3, (20, 12))
    within = [min((a[i] != a[j]).sum() for j in range(30) if j != i) for i in range(30)]
    across = [min((a[i] != b[j]).sum() for j in range(20)) for i in range(30)]
    np.testing.assert_array_equal(module.nearest_distances(a, None, chunk=7), within)
    np.testing.assert_array_equal(module.nearest_distances(a, b, chunk=7), across)


def test_flops_table(archs, tmp_path):
    data, _, _, paths = archs
    space = SearchSpace.from_yaml(SMALL_CONFIG)
    run("flops_table.py", paths["in"], "--output", tmp_path / "t.csv", "--config", SMALL_CONFIG)
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0] == "key,arch,flops,params"
    key, code, flops, params = rows[1].split(",")
    assert (key, code) == ("arch1", data["arch1"]["arch"])
    assert (int(flops), int(params)) == (space.flops(code), space.params(code))
    run("flops_table.py", paths["in"], "--output", tmp_path / "p.json", "--score", "params",
        "--config", SMALL_CONFIG)
    out = read_arch_json(tmp_path / "p.json")
    assert list(out) == list(data)
    assert [v["acc"] for v in out.values()] == [space.params(v["arch"]) for v in data.values()]
    assert "must end in .csv or .json" in run("flops_table.py", paths["in"], "--output",
                                              tmp_path / "t.txt", ok=False).stderr
    assert "is also an input file" in run("flops_table.py", paths["in"], "--output", paths["in"],
                                          ok=False).stderr


def test_proxy_rank(archs, tmp_path, small_space, capsys):
    data, _, _, paths = archs
    run("proxy_rank.py", paths["in"], "--proxy", "zen", "--repeats", 1, "--batch_size", 4,
        "--output", tmp_path / "zen.json", "--config", SMALL_CONFIG, *TINY_WIDTHS)
    out = read_arch_json(tmp_path / "zen.json", require_acc=True)
    assert list(out) == list(data)
    first = zen_proxy(small_space, data["arch1"]["arch"], repeats=1, batch_size=4)  # same widths
    assert out["arch1"]["acc"] == pytest.approx(first, rel=1e-6)  # same value in another process
    code, err = run_in_process("proxy_rank", paths["in"], "--proxy", "flops", "--repeats", 2, "--output",
                               tmp_path / "f.json", "--config", SMALL_CONFIG, capsys=capsys)
    assert code == 2 and "--repeats does not apply to proxy 'flops'" in err
    code, err = run_in_process("proxy_rank", paths["in"], "--proxy", "grasp", "--output",
                               tmp_path / "f.json", "--config", SMALL_CONFIG, capsys=capsys)
    assert code == 2 and "unknown proxy 'grasp'" in err
    assert not (tmp_path / "f.json").exists()


def test_visualize_rank(archs, tmp_path, capsys):
    _, _, _, paths = archs
    proc = run("visualize_rank.py", paths["pred"], paths["gt"], "--output", tmp_path / "r.png",
               "--title", "test")
    assert "rank scatter written" in proc.stdout
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, err = run_in_process("visualize_rank", paths["in"], paths["gt"], "--output", tmp_path / "x.png",
                               capsys=capsys)
    assert code == 2 and "pred acc is constant" in err

