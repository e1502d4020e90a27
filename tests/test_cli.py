"""`python -m sparsegen`: required options, settings checked against the schema, user errors as
one line, every option explained."""

from __future__ import annotations

import json

import pytest
import torch

from sparsegen import cli
from sparsegen.config import load_params, unit_settings
from sparsegen.layout import Layout


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:  # argparse
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_fetch_subcommands_require_their_options(capsys) -> None:
    rc, _, err = _run(capsys, "fetch", "dataset", "--source", "ffhq")
    assert rc == 2 and "the following arguments are required: --raw-dir, --receipt" in err
    rc, _, err = _run(capsys, "fetch", "weights", "--name", "alexnet_torchvision")
    assert rc == 2 and "--dest" in err
    rc, _, err = _run(capsys, "fetch")
    assert rc == 2 and "WHAT" in err


def test_every_option_has_help() -> None:
    parser = cli.build_parser()

    def walk(p):
        for action in p._actions:
            if action.dest == "help":
                continue
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield p.prog, action

    missing = [f"{prog} {a.dest}" for prog, a in walk(parser) if not a.help]
    assert missing == []


def test_settings_prints_what_the_rule_passes(capsys) -> None:
    rc, out, _ = _run(capsys, "settings", "stya2k", "wo_da", "--unit", "train")
    assert rc == 0
    printed = json.loads(out)
    params = load_params()
    lay = Layout(params)
    expected = unit_settings(params, "stya2k", "wo_da", "train")
    expected["weights_state"] = lay.weights_state("stya2k", "wo_da", "train")
    expected["code"] = lay.code_fingerprint("stya2k", "train")
    assert printed == json.loads(json.dumps(expected))
    assert printed["model"]["distributed"] is False
    rc, out, _ = _run(capsys, "settings", "stylenat", "ffhq1024", "--preset", "paper")
    assert json.loads(out)["model"]["resolution"] == 1024


def test_bad_settings_name_the_key(capsys) -> None:
    settings = unit_settings(load_params(), "stya2k", "full", "train")
    settings["train"]["lr"] = -1
    rc, _, err = _run(capsys, "train", "--settings", json.dumps(settings), "--run-dir", "x",
                      "--final", "x/f.pt", "--log", "x/l.csv")
    assert rc == 2 and "--settings is invalid" in err and "train.lr: -1" in err
    assert "Traceback" not in err
    del settings["paper"]
    rc, _, err = _run(capsys, "sample", "--settings", json.dumps(settings), "--checkpoint", "c",
                      "--out", "o")
    assert rc == 2 and "missing key(s) paper" in err


def test_user_errors_print_one_line(capsys, tmp_path) -> None:
    settings = unit_settings(load_params(), "stya2k", "full", "evaluate")
    settings["device"] = "cpu"
    rc, _, err = _run(capsys, "evaluate", "--settings", json.dumps(settings), "--samples",
                      str(tmp_path), "--out", str(tmp_path / "m.json"))
    assert rc == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'samples.csv'}: samples index not found" in err
    settings["paths"] = {**settings["paths"], "prepared": str(tmp_path)}
    rc, _, err = _run(capsys, "sample", "--settings", json.dumps(settings), "--checkpoint",
                      str(tmp_path / "final.pt"), "--out", str(tmp_path / "s"))
    assert rc == 2 and "no manifest" in err and err.count("\n") == 1
    from sparsegen.models.stya2k.task import load_model

    (tmp_path / "final.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(cli._user_errors(), match="unreadable checkpoint"):
        load_model(tmp_path / "final.pt", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message without a GPU")
def test_bench_without_a_gpu_says_so(capsys) -> None:
    rc, _, err = _run(capsys, "bench", "stylenat")
    assert rc == 2 and "torch sees no CUDA GPU" in err and err.count("\n") == 1
