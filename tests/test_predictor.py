"""hnas.predictor: code parsing, the ranking loss, recovery of a known ranking, determinism
and the CLI round trip on the shipped Track-2 file (small epochs, CPU)."""
from __future__ import annotations

import json
import os

import numpy as np
import paddle
import pytest

from hnas.predictor import cv, mlp
from hnas.predictor.__main__ import main
from hnas.predictor.codes import TRACK2_TASKS, load_archs, track2_tokens
from hnas.predictor.features import encode
from hnas.predictor.losses import pair_weights, pairwise_logistic
from hnas.search_space import ArchCodeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACK2 = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track2_train.json")
CODE_L = "l231131331121121331111211121331321321"
CODE_J = "j111111111111111111111111111111000000"


def random_track2(n: int, seed: int = 0) -> list:
    """``n`` random valid Track-2 codes."""
    rng = np.random.default_rng(seed)
    codes = []
    for _ in range(n):
        depth = rng.integers(0, 3)
        layers = [f"{rng.integers(1, 4)}{rng.integers(1, 4)}1" for _ in range(10 + depth)]
        codes.append(("jkl"[depth] + "".join(layers)).ljust(37, "0"))
    return codes


def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


# ------------------------------------------------------------------ codes
def test_track2_tokens():
    tok = track2_tokens(CODE_L)
    assert tok.shape == (37,) and tok[0] == 2 and (tok >= 0).all()
    assert list(tok[1:4]) == [1 + 1, 4 + 2, 7 + 0]  # heads 2, MLP ratio 3, embedding 1
    tok = track2_tokens(CODE_J)
    assert tok[0] == 0 and (tok[31:] == -1).all() and (tok[:31] >= 0).all()
    assert encode(np.stack([tok]))[0].shape == (370,)


@pytest.mark.parametrize("code, message", [
    (CODE_L[:-1], "36 characters, expected 37"),
    ("x" + CODE_L[1:], "depth class 'x' at position 0"),
    (CODE_L[:5] + "4" + CODE_L[6:], "position 5 (layer 2 MLP ratio) must be 1..3, got '4'"),
    (CODE_J[:-1] + "1", "position 36 (layer 12 embedding) is past depth 10"),
    (CODE_L[:7] + "0" + CODE_L[8:], "position 7 (layer 3 heads) must be 1..3, got '0'"),
])
def test_track2_code_errors(code, message):
    with pytest.raises(ArchCodeError, match="arch7: Track-2 code") as err:
        track2_tokens(code, "arch7")
    assert message in str(err.value)


def test_load_subset_and_missing_task(tmp_path):
    archs = load_archs(TRACK2, ["cplfw", "sop_rank"])
    assert archs.track == "track2" and archs.tasks == ["cplfw_rank", "sop_rank"]
    assert archs.tokens.shape == (400, 37) and archs.targets["sop_rank"].shape == (400,)
    assert load_archs(TRACK2).tasks == list(TRACK2_TASKS)
    with pytest.raises(ValueError, match="unknown task 'imagenet'"):
        load_archs(TRACK2, ["imagenet"])
    data = {f"arch{i}": {"arch": c, "cplfw_rank": i, "sop_rank": i} for i, c in enumerate(random_track2(5))}
    del data["arch3"]["sop_rank"]
    path = write_json(tmp_path / "t2.json", data)
    with pytest.raises(ValueError, match="arch3 has no 'sop_rank' field"):
        load_archs(path)
    assert load_archs(path, ["cplfw"]).tasks == ["cplfw_rank"]
    data["arch2"]["arch"] = CODE_L[:-1]
    with pytest.raises(ArchCodeError, match="arch2: .*36 characters"):
        load_archs(write_json(tmp_path / "bad.json", data), ["cplfw"])


def test_track1_file(tmp_path, track1_codes):
    data = {f"arch{i}": {"acc": 0.5 + i / 100, "arch": c} for i, c in enumerate(track1_codes[:12])}
    archs = load_archs(write_json(tmp_path / "t1.json", data))
    assert archs.track == "track1" and archs.tasks == ["acc"] and archs.tokens.shape == (12, 52)
    assert archs.tokens.min() == -1  # 00 blocks past a stage's depth are padding
    data["arch4"]["arch"] = track1_codes[0][:10] + "9" + track1_codes[0][11:]
    with pytest.raises(ArchCodeError, match=r"arch4: arch code .*\(positions 10-11\)"):
        load_archs(write_json(tmp_path / "bad.json", data))


# ------------------------------------------------------------------ loss and model
def test_pairwise_logistic_is_stable_and_oriented():
    targets = np.array([[[0.0], [1.0], [2.0]]])  # one member, three archs, one task
    w = paddle.to_tensor(pair_weights(targets))
    good = paddle.to_tensor(np.array([[[0.0], [1e4], [2e4]]], dtype=np.float32))
    bad = paddle.to_tensor(np.array([[[2e4], [1e4], [0.0]]], dtype=np.float32))
    assert float(pairwise_logistic(good, w)) == pytest.approx(0.0, abs=1e-6)
    assert float(pairwise_logistic(bad, w)) == pytest.approx(2e4 * 4 / 6, rel=1e-4)  # finite, no overflow
    s = paddle.to_tensor(np.array([[[0.3], [-0.2], [0.1]]], dtype=np.float32))
    s.stop_gradient = False
    x = np.array([0.3, -0.2, 0.1])
    diff = (x[:, None] - x[None, :]) * np.sign(np.arange(3)[:, None] - np.arange(3)[None, :])
    expected = np.log1p(np.exp(-diff))[~np.eye(3, dtype=bool)].mean()
    loss = pairwise_logistic(s, w)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert s.grad.numpy()[0, 0, 0] > 0 > s.grad.numpy()[0, 2, 0]  # descent lowers the worst, raises the best


def synthetic(n: int = 240):
    """Codes whose target is a known additive function of the choices (no ties)."""
    codes = random_track2(n, seed=1)
    tokens = np.stack([track2_tokens(c) for c in codes])
    weights = np.random.default_rng(2).uniform(0.5, 1.5, tokens.shape[1])
    y = (np.where(tokens >= 0, tokens % 3 + 1, 0) * weights).sum(1) + 3.0 * tokens[:, 0]
    return encode(tokens), np.stack([y, -y], axis=1)


@pytest.mark.parametrize("loss, epochs, floor", [("pairwise", 20, 0.9), ("mse", 40, 0.85)])
def test_mlp_recovers_known_ranking(loss, epochs, floor):
    x, y = synthetic()
    splits = cv.make_splits(len(x), 3, seed=0)
    opts = cv.Options(folds=3, mlp=mlp.MLPConfig(epochs=epochs, batch_size=32, lr=3e-3, loss=loss))
    fit = cv.fit_kind("mlp", x, y, ["up", "down"], splits, opts)
    assert fit.taus.shape == (2, 3)
    assert fit.taus.min() > floor, fit.taus


def test_baselines_recover_known_ranking():
    x, y = synthetic()
    splits = cv.make_splits(len(x), 3, seed=0)
    for kind in ("ridge", "pairwise"):
        assert cv.fit_kind(kind, x, y[:, :1], ["up"], splits, cv.Options()).taus.min() > 0.9, kind


def test_fitting_is_deterministic():
    x, y = synthetic(120)
    splits = cv.make_splits(len(x), 3, seed=0)
    opts = cv.Options(folds=3, replicas=2, multi_task=True, mlp=mlp.MLPConfig(epochs=3))
    runs = [cv.fit_kind("mlp", x, y, ["a", "b"], splits, opts).scores(x) for _ in range(2)]
    assert runs[0].shape == (2, 3, 120, 2)
    assert np.array_equal(runs[0], runs[1])
    ranker = [cv.fit_kind("pairwise", x, y[:, :1], ["a"], splits, opts).scores(x) for _ in range(2)]
    assert np.array_equal(ranker[0], ranker[1])


def test_to_ranks():
    assert cv.to_ranks(np.array([0.5, -1.0, 2.0, 0.5])).tolist() == [2, 1, 4, 3]


# ------------------------------------------------------------------ CLI
def test_cli_round_trip(tmp_path, capsys):
    model, out = str(tmp_path / "model"), str(tmp_path / "ranked.json")
    main(["train", "--data", TRACK2, "--task", "cplfw", "msmt17", "--folds", "2", "--epochs", "2",
          "--model", "mlp", "ridge", "--save", model])
    printed = capsys.readouterr().out
    assert "msmt17" in printed and "ridge" in printed and "mean" in printed
    main(["predict", "--model", model, "--data", TRACK2, "--output", out])
    src, ranked = json.load(open(TRACK2)), json.load(open(out))
    assert list(ranked) == list(src)
    for task in ("cplfw_rank", "msmt17_rank"):
        assert sorted(e[task] for e in ranked.values()) == list(range(1, 401))
    assert all(ranked[k]["sop_rank"] == src[k]["sop_rank"] for k in src)  # untouched task
    tau = cv.kendall_tau([e["msmt17_rank"] for e in ranked.values()], [e["msmt17_rank"] for e in src.values()])
    assert tau > 0.7  # ridge picked for msmt17 (best held-out), seen every arch in training
    # user mistakes: one line on stderr, exit 2, nothing overwritten
    before = open(out).read()
    for argv, message in [
        (["predict", "--model", model, "--data", TRACK2, "--output", out], "exists"),
        (["predict", "--model", model, "--data", out, "--output", out], "is the input file"),
        (["predict", "--model", str(tmp_path), "--data", TRACK2, "--output", out + "2"], "no meta.json"),
        (["train", "--data", TRACK2, "--save", model], "not empty"),
        (["train", "--data", TRACK2, "--task", "imagenet"], "unknown task"),
        (["train", "--data", str(tmp_path / "none.json")], "does not exist"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
    assert open(out).read() == before


def test_cli_track1_says_rules(tmp_path, capsys, track1_codes):
    data = {f"arch{i}": {"acc": float(i % 7), "arch": c} for i, c in enumerate(track1_codes[:40])}
    path = write_json(tmp_path / "t1.json", data)
    main(["train", "--data", path, "--folds", "2", "--model", "ridge", "--save", str(tmp_path / "m")])
    assert "Track-1 rules did not allow" in capsys.readouterr().err
    main(["predict", "--model", str(tmp_path / "m"), "--data", path, "--output", str(tmp_path / "o.json")])
    assert "Track-1 rules did not allow" in capsys.readouterr().err
    accs = [e["acc"] for e in json.load(open(tmp_path / "o.json")).values()]
    assert sorted(accs) == list(range(1, 41))
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(tmp_path / "m"), "--data", TRACK2, "--output", str(tmp_path / "x.json")])
    assert "trained on track1" in capsys.readouterr().err
