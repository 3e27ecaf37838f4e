"""The method registry: every option of every method reaches its place (the constructor, the sampler or
both), each method declares what it needs, and the command line passes options through."""
import pytest
import torch

from course_lib.cli import main
from course_lib.data.samplers import RandomClipSampler
from course_lib.methods import METHODS, build_method, method_class, sampler_for
from course_lib.models import create_model

# a value other than the default for every option of every method
ALT = {
    "supervised": {"augment": {"crop": "random"}, "view": "residual"},
    "rotation": {},
    "vcop": {"num_clips": 4, "gap": 2, "hidden": 64, "dropout": 0.1},
    "speed": {"strides": [1, 2]},
    "simclr": {"augment": {"blur": 0.5}, "dim": 32, "hidden": 48, "temperature": 0.2, "debias": "be"},
    "moco": {"augment": {"blur": 0.5}, "dim": 32, "queue": 12, "momentum": 0.9, "temperature": 0.2, "bn_groups": 1,
             "debias": ["intra", "fame"]},
    "iic": {"view2": "rgb", "intra": "shuffle", "intra_grad": False, "negatives": 8, "temperature": 0.2,
            "bank_momentum": 0.9, "augment": {"flip": 0.5}},
    "cvrl": {"interval": "uniform", "power": 2.0, "augment": {"flip": 0.0}, "blur2": 0.5, "solarize2": 0.0,
             "hidden": 64, "dim": 32, "temperature": 0.2, "loss_sum": False, "debias": "intra"},
    "dualvar": {"base": "moco", "augment": {"blur": 0.0}, "segments": 4, "segment_dim": 16, "dim": 32,
                "temperature": 0.2, "theta": 0.5, "rank": False, "coherent": False, "rank_form": "anchor",
                "rank_cap": 2.0, "coherent_form": "cross", "reverse": 0.0, "queue": 12, "momentum": 0.9,
                "debias": "residual"},
    "byol": {"augment": {"blur": 0.5}, "rho": 3, "dim": 32, "hidden": 48, "momentum": 0.9, "predictor": False,
             "debias": "fame"},
    "videomae": {"augment": {"flip": 0.5}, "mask_ratio": 0.75, "masking": "random", "decoder_depth": 2,
                 "norm_pix": False},
    "vjepa": {"augment": {"flip": 0.0}, "masks": [[4, 0.2]], "aspect": [1.0, 1.0], "predictor_depth": 2,
              "predictor_dim": 12, "momentum": 0.99, "momentum_horizon": 1.0},
}
CONTEXT = {("dualvar", "queue"): {"base": "moco"}, ("dualvar", "momentum"): {"base": "moco"}}  # options of MoCo
SCALARS = (int, float, str, bool, tuple, type(None))


def small_backbone(method: str):
    """The smallest backbone of the kind a method takes (a ViT for the masked methods)."""
    return create_model("vit_course" if method_class(method).vit_only else "r3d_vcop", width=0.125)


def fingerprint(name: str, **options) -> tuple:
    """What a method built with ``options`` is: its parameter shapes, every module's scalar settings, its
    printed form (augmentation included), and the sampler of its training clips."""
    torch.manual_seed(0)
    m = build_method(name, small_backbone(name), num_classes=4, num_videos=40, size=32, **options)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    settings = {(path, k): repr(v) for path, mod in m.named_modules() for k, v in vars(mod).items()
                if not k.startswith("_") and isinstance(v, SCALARS)}
    return shapes, settings, repr(m), repr(sampler_for(name, clip_len=8, stride=2, **options))


@pytest.mark.parametrize("name", METHODS)
def test_the_table_covers_every_option(name):
    assert sorted(ALT[name]) == sorted(method_class(name).option_names())


@pytest.mark.parametrize("name, option", [(n, o) for n in METHODS for o in ALT[n]])
def test_every_option_reaches_its_place(name, option):
    context = CONTEXT.get((name, option), {})
    changed = fingerprint(name, **context, **{option: ALT[name][option]})
    assert changed != fingerprint(name, **context), f"{name}: {option} had no effect"


def test_options_shared_by_the_sampler_and_the_method_reach_both():
    vcop = build_method("vcop", create_model("r3d_vcop", width=0.125), num_clips=4)
    sampler = sampler_for("vcop", clip_len=8, num_clips=4)
    assert vcop.num_clips == 4 and len(vcop.orders) == 24 and sampler.num_clips == 4
    speed = build_method("speed", create_model("r3d_vcop", width=0.125), strides=[1, 2])
    assert speed.strides.tolist() == [1, 2] and sampler_for("speed", clip_len=8, strides=[1, 2]).strides == (1, 2)
    assert isinstance(sampler_for("simclr", clip_len=8), RandomClipSampler)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_declares_its_needs(name):
    cls = method_class(name)
    assert set(cls.needs) <= {"num_classes", "num_videos"}
    for need in cls.needs:
        with pytest.raises(ValueError, match=f"the {name} method needs {need}"):
            build_method(name, small_backbone(name), **{"num_classes": 4, "num_videos": 8,
                                                                         need: None})


@pytest.mark.slow
@pytest.mark.parametrize("method, settings", [("speed", ["options.strides=[1, 2]"]),
                                              ("vcop", ["options.num_clips=4", "clip_len=4", "stride=1"])])
def test_sampler_options_work_from_the_command_line(method, settings, tmp_path, synth_quick, capsys):
    """Once: pretrain --method speed "options.strides=[1,2]" failed on the first batch, and --method vcop
    options.num_clips=4 with "needs 4 clips, got 3" (notebook 03's exercise 2)."""
    small = ["width=0.125", "size=28", "batch_size=4", "epochs=1", "steps_per_epoch=1", "num_workers=0"]
    assert main(["pretrain", "--method", method, "--data", str(synth_quick.root), "--out", str(tmp_path / "run"),
                 "--no-progress", *small, *settings]) == 0, capsys.readouterr().err


@pytest.mark.slow
def test_config_with_base_takes_the_method_from_the_config(tmp_path, synth_quick, capsys):
    small = ["width=0.125", "clip_len=4", "size=28", "batch_size=4", "epochs=1", "steps_per_epoch=1",
             "num_workers=0", "amp=false", "options.queue=8"]
    assert main(["pretrain", "--config", "dualvar_r21d_moco_ucf101", "--base", "simclr", "--data",
                 str(synth_quick.root), "--out", str(tmp_path / "run"), "--no-progress", *small[:-1],
                 "options.rank_cap=5.0", "options.coherent_form=nt_xent"]) == 0, capsys.readouterr().err
