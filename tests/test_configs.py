"""The paper configs: each loads, carries the paper's settings, and runs on the built-in dataset."""
import json

import pytest

from course_lib.course import default_config
from course_lib.cli import main
from course_lib.experiment import config_path, list_configs
from course_lib.methods import build_method
from course_lib.models import create_model

# (config, key values from the papers and their public code, as the method reference lists them)
EXPECTED = {
    "iic_r3d_ucf101": dict(method="iic", model="r3d_vcop", clip_len=16, stride=1, size=112, epochs=240, batch_size=16,
                           optimizer="sgd", lr=0.01, weight_decay=1e-4, schedule="multistep",
                           milestones=[45, 90, 125, 160], gamma=0.2,
                           options={"view2": "residual", "intra": "repeat", "intra_grad": True, "negatives": 1024, "temperature": 0.07,
                                    "bank_momentum": 0.5},
                           eval_options={"feature": "iic", "merge": True}),
    "cvrl_r3d50_k400": dict(method="cvrl", model="r3d_50", clip_len=16, stride=2, size=224, epochs=200,
                            batch_size=1024, optimizer="sgd", lr=0.32, weight_decay=1e-6, schedule="cosine",
                            weight_decay_on="kernels", warmup_epochs=5,
                            options={"interval": "decreasing", "power": 1.0, "temperature": 0.1, "hidden": 2048,
                                     "dim": 128, "blur2": 0.1, "solarize2": 0.2, "loss_sum": True}),
    "dualvar_r21d_simclr_ucf101": dict(method="dualvar", model="r21d_vcop", clip_len=16, stride=4, size=112,
                                       epochs=200, batch_size=64, optimizer="sgd", lr=0.003, weight_decay=1e-4,
                                       schedule="multistep", milestones=[120, 160], gamma=0.1,
                                       options={"base": "simclr", "segments": 2, "segment_dim": 64, "dim": 128,
                                                "temperature": 0.07, "theta": 0.05, "rank": True, "coherent": True,
                                                "rank_form": "matrix", "rank_cap": 5.0, "coherent_form": "nt_xent",
                                                "reverse": 0.5},
                                       eval_options={"center": "each"}),
    # evaluation configs: CVRL's linear evaluation, IIC's and DualVar's fine-tuning
    "cvrl_linear_eval_k600": dict(clip_len=32, stride=2, size=224, test_clips=10, epochs=100, batch_size=1024,
                                  optimizer="sgd", lr=32.0, momentum=0.9, weight_decay=0.0, schedule="cosine",
                                  warmup_epochs=5, eval_options={"test_size": 256}),
    "iic_finetune_ucf101": dict(clip_len=16, stride=1, size=112, test_clips=10, epochs=150, batch_size=16,
                                optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4,
                                eval_options={"view": "residual", "flip": 0.0}),
    "dualvar_finetune_ucf101": dict(clip_len=16, stride=2, size=112, test_clips=10, epochs=100, batch_size=16,
                                    optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, schedule="multistep",
                                    milestones=[30, 60, 80], gamma=0.1, eval_options={"flip": 0.5}),
}
# after 2021 (notebooks 08 and 09): rho-BYOL, VideoMAE and V-JEPA
EXPECTED.update({
    "byol_slowr50_k400": dict(method="byol", model="slow_r50", clip_len=8, stride=8, size=224, epochs=200,
                              batch_size=64, optimizer="sgd", lr=0.6, weight_decay=1e-6, weight_decay_on="kernels",
                              schedule="cosine", warmup_epochs=35,
                              options={"rho": 2, "dim": 256, "hidden": 4096, "momentum": 0.996, "predictor": True,
                                       "augment": {"scale": [0.2, 0.766], "ratio": [0.75, 1.333], "flip": 0.5,
                                                   "jitter": 0.8, "brightness": 0.6, "contrast": 0.6,
                                                   "saturation": 0.6, "hue": 0.15, "grayscale": 0.2, "blur": 0.5}}),
    "videomae_vitb_ucf101": dict(method="videomae", model="vit_b", clip_len=16, stride=4, size=224, epochs=3200,
                                 batch_size=192, optimizer="adamw", lr=3e-4 * 192 / 256, beta2=0.95,
                                 weight_decay=0.05, schedule="cosine", warmup_epochs=40,
                                 options={"mask_ratio": 0.75, "masking": "tube", "decoder_depth": 4,
                                          "norm_pix": True}),
    "videomae_vitb_k400": dict(method="videomae", model="vit_b", clip_len=16, stride=4, size=224, epochs=800,
                               batch_size=2048, optimizer="adamw", lr=1.5e-4 * 2048 / 256, beta2=0.95,
                               weight_decay=0.05, schedule="cosine", warmup_epochs=40,
                               options={"mask_ratio": 0.9, "masking": "tube", "decoder_depth": 4, "norm_pix": True}),
    "vjepa_vitl16_k400": dict(method="vjepa", model="vit_l", clip_len=16, stride=4, size=224, batch_size=3072,
                              epochs=round(90_000 * 3072 / 240_000), optimizer="adamw", lr=6.25e-4,
                              weight_decay=0.04, grad_clip=10.0, warmup_epochs=154,
                              options={"masks": [[8, 0.15], [2, 0.7]], "aspect": [0.75, 1.5], "predictor_depth": 12,
                                       "predictor_dim": 384, "momentum": 0.998, "momentum_horizon": 1.25}),
})
EXPECTED["cvrl_r3d50_k600"] = EXPECTED["cvrl_r3d50_k400"]
EXPECTED["dualvar_r21d_simclr_k400"] = EXPECTED["dualvar_r21d_simclr_ucf101"]
moco = {**EXPECTED["dualvar_r21d_simclr_ucf101"]}
moco["options"] = {**moco["options"], "base": "moco", "queue": 16384, "momentum": 0.999, "rank_cap": None,
                  "coherent_form": "queue"}
EXPECTED["dualvar_r21d_moco_ucf101"] = EXPECTED["dualvar_r21d_moco_k400"] = moco
# the small-scale settings that make a paper config run on the built-in dataset in seconds
SMALL = ["width=0.125", "clip_len=4", "size=32", "batch_size=4", "epochs=1", "steps_per_epoch=1", "num_workers=0",
         "test_clips=1", "amp=false", "channels_last=false"]


def test_every_paper_config_is_listed_and_checked():
    assert list_configs() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_carries_the_paper_settings(name):
    cfg = default_config("full").with_overrides(name)
    for key, value in EXPECTED[name].items():
        got = getattr(cfg, key)
        if key in ("options", "eval_options"):
            assert got == value, name  # exactly these method settings, nothing else
        else:
            assert got == pytest.approx(value) if isinstance(value, float) else got == value, f"{name}: {key}"
    assert cfg.train_config().milestones == list(cfg.milestones)
    if "method" not in EXPECTED[name]:  # an evaluation config
        return
    # the options are the method's own: build it (a small backbone) and check that they arrived
    method = build_method(cfg.method, create_model(cfg.model, width=0.125), num_videos=32, size=cfg.size, **cfg.options)
    attr, key = {"byol": ("rho", "rho"), "videomae": ("mask_ratio", "mask_ratio"),
                 "vjepa": ("base_momentum", "momentum")}.get(cfg.method, ("temperature", "temperature"))
    assert getattr(method, attr) == cfg.options[key]  # every option's path: tests/test_registry.py


def test_r3d50_and_r21d_are_the_paper_sizes():
    from course_lib.models import complexity

    assert complexity(create_model("r3d_50"), (1, 3, 16, 224, 224))["params"] / 1e6 == pytest.approx(31.7, abs=0.1)
    # Slow-R50 8x8: 54.5 GMACs at 256 x 256 (SlowFast, ICCV 2019, table 2: "Slow-only R-50 8x8")
    slow = complexity(create_model("slow_r50").to("meta"), (1, 3, 8, 256, 256))
    assert slow["gmacs"] == pytest.approx(54.5, rel=0.01) and slow["params"] / 1e6 == pytest.approx(31.6, abs=0.1)
    assert sum(p.numel() for p in create_model("r21d_vcop").parameters()) / 1e6 == pytest.approx(14.4, abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["iic_r3d_ucf101", "cvrl_r3d50_k400", "dualvar_r21d_moco_ucf101",
                                  "videomae_vitb_ucf101"])
def test_config_runs_on_the_builtin_dataset_with_overrides(name, synth_quick, tmp_path, capsys):
    out = tmp_path / name
    size = ["size=48"] if EXPECTED[name]["model"].startswith("vit") else []  # a ViT takes multiples of its patch
    assert main(["pretrain", "--config", name, "--data", str(synth_quick.root), "--out", str(out),
                 "--no-progress", *SMALL, *size]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == EXPECTED[name]["method"] and run["model"] == EXPECTED[name]["model"]
    assert run["options"] == EXPECTED[name]["options"] and run["size"] == (48 if size else 32)  # overrides win
    assert (out / "checkpoint.pt").exists()


def test_config_errors(tmp_path, capsys):
    assert main(["pretrain", "--config", "no_such_config", "--out", str(tmp_path / "x")]) == 2
    assert "no_such_config: config file not found (shipped configs: byol_slowr50_k400, cvrl_linear_eval_k600" in capsys.readouterr().err
    assert main(["pretrain", "--method", "simclr", "--config", "iic_r3d_ucf101", "--out", str(tmp_path / "x")]) == 2
    assert "--method simclr contradicts method: iic" in capsys.readouterr().err
    assert config_path("iic_r3d_ucf101").name == "iic_r3d_ucf101.yaml"


def test_evaluation_configs_layer_over_the_run_and_the_protocol(tmp_path, synth_quick, capsys):
    """evaluate's settings: defaults < the run's model, clips and eval_options < the protocol's training
    defaults < a config file < key=value."""
    from course_lib.experiment import eval_config

    run = tmp_path / "run"
    assert main(["pretrain", "--config", "iic_r3d_ucf101", "--data", str(synth_quick.root), "--out", str(run),
                 "--no-progress", *SMALL, "options.negatives=8"]) == 0
    cfg = eval_config("retrieval", run)
    assert (cfg.model, cfg.width, cfg.clip_len, cfg.size) == ("r3d_vcop", 0.125, 4, 32)
    assert cfg.eval_options == {"feature": "iic", "merge": True}  # the IIC config's retrieval
    lin = eval_config("cvrl-linear", run, pairs=["batch_size=8", "epochs=40"])
    assert (lin.optimizer, lin.weight_decay, lin.lr, lin.warmup_epochs) == ("sgd", 0.0, 0.25, 2.0)
    assert eval_config("cvrl-linear", run, pairs=["lr=0.5"]).lr == 0.5  # what the user sets wins
    paper = eval_config("cvrl-linear", run, "cvrl_linear_eval_k600", ["epochs=2"])
    assert (paper.clip_len, paper.size, paper.lr, paper.epochs, paper.eval_options["test_size"]) == (32, 224, 32.0, 2, 256)
    ft = eval_config("finetune", run, "iic_finetune_ucf101", ["clip_len=4", "size=32"])
    assert (ft.lr, ft.weight_decay, ft.epochs, ft.eval_options["view"]) == (1e-3, 5e-4, 150, "residual")
    out = tmp_path / "retrieval.json"
    assert main(["evaluate", "--checkpoint", str(run), "--protocol", "retrieval", "--data", str(synth_quick.root),
                 "--out", str(out), "--no-progress", "test_clips=1", "num_workers=0"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert (result["feature"], result["merge"]) == ("iic", True)
    assert main(["pretrain", "--config", "iic_finetune_ucf101", "--out", str(tmp_path / "x")]) == 2
    assert "sets no method" in capsys.readouterr().err
