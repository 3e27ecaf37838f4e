"""The paper configs: each loads, carries the paper's settings, and runs on the built-in dataset."""
import json

import pytest

from course_lib.cli import main
from course_lib.experiment import RunConfig, config_path, list_configs
from course_lib.methods import build_method
from course_lib.models import create_model

# (config, key values from the papers and their public code, as the method reference lists them)
EXPECTED = {
    "iic_r3d_ucf101": dict(method="iic", model="r3d_vcop", clip_len=16, stride=1, size=112, epochs=240, batch_size=16,
                           optimizer="sgd", lr=0.01, weight_decay=1e-4, schedule="multistep",
                           milestones=[45, 90, 125, 160], gamma=0.2,
                           options={"view2": "residual", "intra": "repeat", "intra_grad": True, "negatives": 1024, "temperature": 0.07,
                                    "bank_momentum": 0.5}),
    "cvrl_r3d50_k400": dict(method="cvrl", model="r3d_50", clip_len=16, stride=2, size=224, epochs=200,
                            batch_size=1024, optimizer="sgd", lr=0.32, weight_decay=1e-6, schedule="cosine",
                            options={"interval": "decreasing", "power": 1.0, "temperature": 0.1, "hidden": 2048,
                                     "dim": 128, "blur2": 0.1, "solarize2": 0.2}),
    "dualvar_r21d_simclr_ucf101": dict(method="dualvar", model="r21d_vcop", clip_len=16, stride=4, size=112,
                                       epochs=200, batch_size=64, optimizer="sgd", lr=0.003, weight_decay=1e-4,
                                       schedule="multistep", milestones=[120, 160], gamma=0.1,
                                       options={"base": "simclr", "segments": 2, "segment_dim": 64, "dim": 128,
                                                "temperature": 0.07, "theta": 0.05, "rank": True, "coherent": True}),
}
EXPECTED["cvrl_r3d50_k600"] = EXPECTED["cvrl_r3d50_k400"]
EXPECTED["dualvar_r21d_simclr_k400"] = EXPECTED["dualvar_r21d_simclr_ucf101"]
moco = {**EXPECTED["dualvar_r21d_simclr_ucf101"]}
moco["options"] = {**moco["options"], "base": "moco", "queue": 16384, "momentum": 0.999}
EXPECTED["dualvar_r21d_moco_ucf101"] = EXPECTED["dualvar_r21d_moco_k400"] = moco
# the small-scale settings that make a paper config run on the built-in dataset in seconds
SMALL = ["width=0.125", "clip_len=4", "size=28", "batch_size=4", "epochs=1", "steps_per_epoch=1", "num_workers=0",
         "test_clips=1", "amp=false", "channels_last=false"]


def test_every_paper_config_is_listed_and_checked():
    assert list_configs() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_carries_the_paper_settings(name):
    cfg = RunConfig.default(quick=False).with_overrides(name)
    for key, value in EXPECTED[name].items():
        got = getattr(cfg, key)
        if key == "options":
            assert got == value, name  # exactly these method settings, nothing else
        else:
            assert got == pytest.approx(value) if isinstance(value, float) else got == value, f"{name}: {key}"
    assert cfg.train_config().milestones == list(cfg.milestones)
    # the options are the method's own: build it (a small backbone) and check that they arrived
    method = build_method(cfg.method, create_model(cfg.model, width=0.125), num_videos=32, size=cfg.size, **cfg.options)
    assert method.temperature == cfg.options["temperature"]


def test_r3d50_and_r21d_are_the_paper_sizes():
    from course_lib.models import complexity

    assert complexity(create_model("r3d_50"), (1, 3, 16, 224, 224))["params"] / 1e6 == pytest.approx(31.7, abs=0.1)
    assert sum(p.numel() for p in create_model("r21d_vcop").parameters()) / 1e6 == pytest.approx(14.4, abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["iic_r3d_ucf101", "cvrl_r3d50_k400", "dualvar_r21d_moco_ucf101"])
def test_config_runs_on_the_builtin_dataset_with_overrides(name, synth_quick, tmp_path, capsys):
    out = tmp_path / name
    assert main(["pretrain", "--config", name, "--data", str(synth_quick.root), "--out", str(out),
                 "--no-progress", *SMALL]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == EXPECTED[name]["method"] and run["model"] == EXPECTED[name]["model"]
    assert run["options"] == EXPECTED[name]["options"] and run["size"] == 28  # the overrides win over the file
    assert (out / "checkpoint.pt").exists()


def test_config_errors(tmp_path, capsys):
    assert main(["pretrain", "--config", "no_such_config", "--out", str(tmp_path / "x")]) == 2
    assert "no_such_config: config file not found (shipped configs: cvrl_r3d50_k400" in capsys.readouterr().err
    assert main(["pretrain", "--method", "simclr", "--config", "iic_r3d_ucf101", "--out", str(tmp_path / "x")]) == 2
    assert "--method simclr contradicts method: iic" in capsys.readouterr().err
    assert config_path("iic_r3d_ucf101").name == "iic_r3d_ucf101.yaml"
