"""Settings are checked for type and range wherever they are set: command line, YAML file, Python."""
import subprocess
import sys
from dataclasses import fields, replace

import pytest

from course_lib.course import default_config
from course_lib.cli import main
from course_lib.experiment import RunConfig
from course_lib.settings import SettingError
from course_lib.train import TrainConfig

# (key=value settings, the setting the message must name, the value it must show, words of what is allowed)
BAD = [
    (["lr=abc"], "lr", "'abc'", "a number > 0"),
    (["width=0"], "width", "0", "a number > 0"),
    (["epochs=two"], "epochs", "'two'", "an integer >= 1"),
    (["epochs=2.5"], "epochs", "2.5", "an integer >= 1"),
    (["milestones=5"], "milestones", "5", "a list of integers"),
    (["optimizer=adamz"], "optimizer", "'adamz'", "one of sgd, adamw"),
    (["schedule=linear"], "schedule", "'linear'", "one of cosine, multistep, constant"),
    (["weight_decay=-0.0001"], "weight_decay", "-0.0001", "a number >= 0"),
    (["momentum=1.5"], "momentum", "1.5", "a number in [0, 1]"),
    (["batch_size=0"], "batch_size", "0", "an integer >= 1"),
    (["num_workers=-1"], "num_workers", "-1", "an integer >= 0"),
    (["amp=maybe"], "amp", "'maybe'", "true or false"),
    (["device=tpu"], "device", "'tpu'", "cpu, cuda, cuda:N or mps"),
    (["steps_per_epoch=0"], "steps_per_epoch", "0", "an integer >= 1, or null"),
    (["lr=.inf"], "lr", "inf", "a number > 0"),
    (["model=c3d_vcop", "size=8"], "size", "8", "model c3d_vcop needs frames of at least 16 px"),
    (["model=c3d", "clip_len=8", "size=112"], "clip_len", "8", "model c3d needs clips of at least 16 frames"),
    (["decode_size=40"], "decode_size", "40", "decode_size must be >= size (48)"),
    (["method=dualvar", "clip_len=3"], "clip_len", "3", "segments=2 equal segments"),
    (["method=iic", "clip_len=1"], "clip_len", "1", "at least 2 frames"),
    (["method=iic", "options.intra=shuffle", "clip_len=6"], "clip_len", "6", "4 chunks"),
    (["options.temperatur=0.1"], "options", "{'temperatur': 0.1}", "method simclr has no option 'temperatur'"),
]


@pytest.mark.parametrize("settings, name, value, allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_a_bad_setting_is_one_error_line_and_a_nonzero_exit(settings, name, value, allowed, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "simclr", "--out", str(out), "--no-progress", *settings]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"{name}={value}" in err and allowed in err, err
    assert not (out / "checkpoint.pt").exists()  # nothing was trained


def test_no_traceback_from_a_real_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "course_lib", "pretrain", "--method", "simclr", "--out", str(tmp_path),
                        "lr=abc"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: setting lr='abc' is not allowed: lr must be a number > 0, e.g. 0.001."


def test_a_bad_value_in_a_yaml_file_names_the_file(tmp_path, capsys):
    config = tmp_path / "my config.yaml"
    config.write_text("method: simclr\nmilestones: 5\n", encoding="utf-8")
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: setting milestones=5 is not allowed") and err.count("\n") == 1


def test_a_bad_value_set_in_python_raises_a_setting_error():
    cfg = default_config("test")
    with pytest.raises(SettingError, match=r"^setting lr='abc' is not allowed: lr must be a number > 0"):
        RunConfig(lr="abc")
    with pytest.raises(SettingError, match="setting width=0 is not allowed"):
        replace(cfg, width=0)
    with pytest.raises(SettingError, match="setting epochs='two' is not allowed"):
        cfg.epochs = "two"  # attribute assignment is checked too
    with pytest.raises(SettingError, match="setting optimizer='adamz' is not allowed"):
        TrainConfig(optimizer="adamz")
    cfg.size = 8  # each field alone is fine; together they are checked when the config is used
    cfg.model = "c3d_vcop"
    with pytest.raises(SettingError, match="model c3d_vcop needs frames of at least 16 px"):
        cfg.check()


def test_good_values_are_normalised():
    cfg = default_config("test").with_overrides(None, ["lr=1e-3", "epochs=8.0", "milestones=[3, 6]",
                                                             "width=1", "amp=0", "device=cpu"])
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)  # PyYAML reads 1e-3 as a string
    assert cfg.epochs == 8 and isinstance(cfg.epochs, int)
    assert cfg.milestones == [3, 6] and cfg.width == 1.0 and isinstance(cfg.width, float)
    assert cfg.amp is False and cfg.device == "cpu"
    assert cfg.train_config().lr == 0.001


def test_every_field_has_a_rule():
    assert {f.name for f in fields(RunConfig)} == set(RunConfig.RULES)
    assert {f.name for f in fields(TrainConfig)} == set(TrainConfig.RULES)
    assert issubclass(RunConfig, TrainConfig)  # one source for the training settings, no hand copy


def test_shipped_paper_configs_pass_their_checks():
    from course_lib.experiment import list_configs

    for name in list_configs():
        default_config("full").with_overrides(name).check()


def test_grad_clip_reaches_training():
    cfg = default_config("test").with_overrides(None, ["grad_clip=1.0"])
    assert cfg.train_config().grad_clip == 1.0
