"""Runs as the command line makes them: a flat config, pretraining, evaluation.

``RunConfig`` holds everything a run needs; a YAML file and ``key=value`` overrides change it
(the course's budgets and named runs, which start from it, live in ``course_lib.course``). ``pretrain``
writes ``run.json`` (the config) beside the checkpoint, so ``evaluate`` can rebuild the
backbone from the checkpoint alone.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import yaml

from . import debias, distributed
from .data import ClipDataset, Manifest, builtin_dataset
from .augment import crop_room
from .evaluate import PROTOCOLS as PROTOCOL_TABLE
from .evaluate import EvalContext, check_eval_options, run_protocol
from .methods import build_method, check_options, list_methods, method_class, sampler_for
from .methods.registry import resolved_options
from .models import create_model, input_problem, is_vit, list_models, smallest_input
from .machine import get_device, parse_device
from .settings import SettingError, integer, mapping, number, one_of
from .train import CHECKPOINT, TrainConfig, load_checkpoint, train

RUN_FILE = "run.json"
PROTOCOLS = tuple(PROTOCOL_TABLE)


def _device_setting(name: str, value):
    """The ``device`` setting: unset (None: pick one), or a device string that ``torch.device`` reads."""
    return None if value is None else str(parse_device(value))


@dataclass
class RunConfig(TrainConfig):
    """Everything a run needs: the training settings of ``TrainConfig`` (with laptop-size defaults),
    plus method, backbone, clips and evaluation. Every field is checked when it is set; ``check``
    adds what needs several fields (the model's smallest input, the method's clip needs)."""

    method: str = "supervised"  # a registered method (course_lib.methods)
    model: str = "r3d_18"  # a registered backbone (course_lib.models)
    width: float = 0.5  # channel multiplier of the backbone
    clip_len: int = 16
    stride: int = 1  # frame stride inside a clip
    size: int = 112  # the network sees size x size frames
    decode_size: int | None = None  # frames are decoded to this square size; None: size, or size * 8/7 to crop from
    test_clips: int = 10  # evenly spaced clips per video for evaluation
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adamw"  # robust at small scale; the paper configs (notebook 11) mostly use SGD
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    device: str | None = None  # None: CUDA, else Apple MPS, else the CPU (runtime.get_device)
    options: dict = field(default_factory=dict)  # method settings, e.g. {intra: shuffle} for IIC
    eval_options: dict = field(default_factory=dict)  # protocol settings, e.g. {feature: iic, merge: true}

    RULES = {
        **TrainConfig.RULES,
        "method": one_of(list_methods), "model": one_of(list_models), "width": number(above=0),
        "clip_len": integer(1), "stride": integer(1), "size": integer(1), "decode_size": integer(1, optional=True),
        "test_clips": integer(1), "device": _device_setting, "options": mapping(example="{intra: shuffle}"),
        "eval_options": mapping(example="{center: each}"),
    }

    def check(self) -> None:
        """The checks across fields; a SettingError names the settings at fault."""
        if self.decode_size is not None and self.decode_size < self.size:
            raise SettingError(f"setting decode_size={self.decode_size} is not allowed: decode_size must be "
                               f">= size ({self.size}), since the {self.size} px crop is taken from the decoded frames.")
        if method_class(self.method).vit_only and not is_vit(self.model):
            raise SettingError(f"setting model={self.model} is not allowed: method {self.method} needs a ViT backbone "
                               f"({', '.join(m for m in list_models() if is_vit(m))}).")
        problem = input_problem(self.model, self.clip_len, self.size, self.width)
        if problem:
            frames, pixels = smallest_input(self.model, self.width)
            short = {}  # the settings below the model's smallest input
            if frames and self.clip_len < frames:
                short[f"clip_len={self.clip_len}"] = f"clips of at least {frames} frames"
            if pixels and self.size < pixels:
                short[f"size={self.size}"] = f"frames of at least {pixels} px"
            at_fault = ", ".join(short) or f"clip_len={self.clip_len}, size={self.size}"
            needs = (f"model {self.model} needs {' and '.join(short.values())}" if short
                     else f"model {self.model} cannot take {self.clip_len} x {self.size} x {self.size} clips")
            raise SettingError(f"setting{'s' if ',' in at_fault else ''} {at_fault} "
                               f"{'are' if ',' in at_fault else 'is'} not allowed: {needs} ({problem}).")
        try:
            check_options(self.method, self.options)
        except SettingError:
            raise
        except ValueError as e:
            raise SettingError(f"setting options={self.options!r} is not allowed: {e}".rstrip(".") + ".") from None
        try:
            check_eval_options(self.eval_options)
        except ValueError as e:
            raise SettingError(f"setting eval_options={self.eval_options!r} is not allowed: {e}") from None
        problem = (method_class(self.method).clip_problem(self.clip_len, self.options)
                   or debias.clip_problem(self.clip_len, self.options.get("debias", debias.NONE)))
        if problem:
            raise SettingError(f"setting clip_len={self.clip_len} is not allowed: {problem}.")

    @property
    def frames_size(self) -> int:
        """The decoded frame size: methods that crop on the device get room around the crop."""
        if self.decode_size:
            return self.decode_size
        return crop_room(self.size) if method_class(self.method).augments else self.size

    def train_config(self) -> TrainConfig:
        """The training settings alone, as ``train`` takes them."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})

    def with_overrides(self, yaml_path: str | None = None, pairs: list[str] = ()) -> "RunConfig":
        """Apply a YAML file (a path, or the name of a paper config, see ``list_configs``), then
        ``key=value`` strings (values parsed as YAML scalars)."""
        cfg = self
        if yaml_path:
            p = config_path(yaml_path)
            try:
                loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"{p}: not a YAML file ({str(e).splitlines()[0]}).") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"{p}: a config file must be a mapping of settings.")
            try:
                cfg = cfg._changed(loaded)
            except SettingError as e:
                raise SettingError(f"{p}: {e}") from None
        changes = {}
        for pair in pairs:
            if "=" not in pair:
                raise ValueError(f"setting {pair!r} is not key=value.")
            key, value = pair.split("=", 1)
            key, value = key.strip(), yaml.safe_load(value)
            group = key.split(".", 1)[0]
            if "." in key and group in ("options", "eval_options"):  # options.intra=shuffle sets one option
                options = dict(changes.get(group, getattr(cfg, group)))
                options[key.split(".", 1)[1]] = value
                key, value = group, options
            changes[key] = value
        return cfg._changed(changes)

    def _changed(self, changes: dict) -> "RunConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SettingError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}.")
        return replace(self, **changes)


CONFIGS = Path(__file__).parent / "configs"


def list_configs(kind: str | None = None) -> list[str]:
    """The paper configs shipped with course_lib (``course_lib/configs/*.yaml``), by name: all, or those of
    one ``kind``: "pretrain" (they set a method) or "evaluate" (the papers' linear evaluation and fine-tuning)."""
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    if kind is None:
        return names
    if kind not in ("pretrain", "evaluate"):
        raise ValueError(f"config kind {kind!r} is not pretrain or evaluate.")
    sets_method = {n: "method" in (yaml.safe_load((CONFIGS / f"{n}.yaml").read_text(encoding="utf-8")) or {})
                   for n in names}
    return [n for n in names if sets_method[n] == (kind == "pretrain")]


def config_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML file path, or the name of a shipped config (``iic_r3d_ucf101``), as a path."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if p.suffix == "" and (CONFIGS / f"{p.name}.yaml").exists():
        return CONFIGS / f"{p.name}.yaml"
    raise ValueError(f"{p}: config file not found (shipped configs: {', '.join(list_configs())}).")


def load_manifest(data: str | os.PathLike | None) -> Manifest:
    return Manifest.load(data) if data else builtin_dataset(progress=False)


def backbone_from(cfg: RunConfig):
    return create_model(cfg.model, width=cfg.width)


# what makes two runs different models (the training settings are checked by train itself)
SETTING_KEYS = ("method", "model", "width", "clip_len", "stride", "size", "decode_size", "options", "data")


def _renamed(saved: dict) -> dict:
    """A run file written before an option was renamed, in today's names: DualVar's ``view`` is ``debias``."""
    if saved.get("method") != "dualvar":
        return saved
    for key, rgb in (("options", None), ("method_settings", debias.NONE)):
        options = dict(saved.get(key) or {})
        if "view" in options:
            view = options.pop("view")
            if view == "residual" or rgb is not None:
                options["debias"] = "residual" if view == "residual" else rgb
            saved = {**saved, key: options}
    return saved


def _check_same_setting(out: Path, run: dict) -> None:
    """A run folder with a checkpoint is continued (or loaded) only for the same method, backbone, clips,
    method options and data; otherwise the cached run would silently stand in for another one."""
    saved_file = out / RUN_FILE
    if not ((out / CHECKPOINT).exists() and saved_file.exists()):
        return
    saved = _renamed(json.loads(saved_file.read_text(encoding="utf-8")))
    now = json.loads(json.dumps(run))  # tuples as lists, as in the file
    for key in SETTING_KEYS:
        if key in saved and saved[key] != now[key]:
            raise ValueError(f"{out}: holds a run with {key}={saved[key]!r}, not {now[key]!r}; "
                             f"use a new --out (or delete the folder).")
    # every option with its default: a course_lib update that changed a default makes another run; an option
    # added after the run was made matches when it holds its default (what the code did before it existed)
    old, new = saved.get("method_settings"), now["method_settings"]
    if old is not None:
        defaults = json.loads(json.dumps(resolved_options(now["method"], {})))
        old = {**{k: defaults[k] for k in new.keys() - old.keys() if k in defaults}, **old}
    if old is not None and old != new:
        key = next(k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k))
        raise ValueError(f"{out}: holds a run made with the method option {key}={old.get(key)!r}, now "
                         f"{new.get(key)!r} (a changed default?); use a new --out (or delete the folder).")


def pretrain(cfg: RunConfig, data: str | None, out: str | os.PathLike, *, progress: bool = True) -> dict:
    """Train ``cfg.method`` on the train split; write checkpoint, metrics, summary and run.json under ``out``.

    Under torchrun, process 0 loads (or generates) the dataset first and alone writes the files.
    """
    cfg.check()  # fields set one at a time (cfg.size = ...) are checked together here
    ctx = distributed.init(get_device(cfg.device).type)
    if ctx.is_main:
        manifest = load_manifest(data)  # the built-in dataset is generated here on first use
    distributed.barrier()
    if not ctx.is_main:
        manifest = load_manifest(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = sampler_for(cfg.method, clip_len=cfg.clip_len, stride=cfg.stride, **cfg.options)
    train_set = ClipDataset(manifest, sampler, split="train", size=(cfg.frames_size,) * 2, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg.method, backbone_from(cfg), num_classes=len(manifest.classes),
                          num_videos=len(train_set), size=cfg.size, **cfg.options)
    run = {**asdict(cfg), "data": str(manifest.root), "method_settings": resolved_options(cfg.method, cfg.options)}
    _check_same_setting(out, run)
    if ctx.is_main:
        (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    summary = train(method, train_set, cfg.train_config(), out, device=cfg.device, progress=progress)
    summary["run"] = asdict(cfg)
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def load_backbone(checkpoint: str | os.PathLike, *, weights: bool = True,
                  network: str | None = None) -> tuple[torch.nn.Module | None, RunConfig]:
    """The encoder a pretraining run is evaluated with, from its checkpoint and the run.json beside it (the
    config alone, with ``weights=False``): the method's ``evaluated`` network (its ``backbone``; V-JEPA's EMA
    ``target``, as jepa evaluates ``checkpoint_key: target_encoder``), or ``network`` if given."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT
    run_file = checkpoint.parent / RUN_FILE
    if not run_file.exists():
        raise ValueError(f"{run_file}: not found; a checkpoint needs the run.json that pretrain writes beside it.")
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    cfg = RunConfig(**{k: v for k, v in saved.items() if k in {f.name for f in fields(RunConfig)}})
    if not weights:
        return None, cfg
    backbone = backbone_from(cfg)
    state = load_checkpoint(checkpoint)["method"]
    prefix = (network or method_class(cfg.method).evaluated) + "."
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{checkpoint}: holds no network {prefix[:-1]!r} (method {cfg.method}).")
    backbone.load_state_dict(weights, strict=True)
    return backbone, cfg


def load_method(checkpoint: str | os.PathLike, **context) -> tuple[torch.nn.Module, RunConfig]:
    """The whole trained method of a pretraining run (heads, decoder, target network too), in eval mode, from its
    checkpoint and run.json; ``context`` gives what its constructor needs (``num_classes``, ``num_videos``)."""
    _, cfg = load_backbone(checkpoint, weights=False)
    checkpoint = Path(checkpoint)
    method = build_method(cfg.method, backbone_from(cfg), size=cfg.size, **context, **cfg.options)
    method.load_state_dict(load_checkpoint(checkpoint / CHECKPOINT if checkpoint.is_dir() else checkpoint)["method"],
                           strict=True)
    return method.eval(), cfg


def eval_config(protocol: str, checkpoint: str | os.PathLike | None = None, config: str | None = None,
                pairs: list[str] = (), *, base: RunConfig | None = None) -> RunConfig:
    """The settings of an evaluation, in layers, each over the last: ``base`` (default: ``RunConfig()``; the
    command line passes ``course.default_config()``); the pretraining
    run's model, clips and ``eval_options`` (from ``checkpoint``); the protocol's own training
    defaults (``evaluate.PROTOCOLS``: CVRL's SGD at lr 32 x batch / 1024 for ``cvrl-linear``,
    computed from the final batch and epochs); a config file; ``key=value`` pairs. What the
    command line's ``evaluate`` runs with."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}.")
    cfg = base or RunConfig()
    if checkpoint:
        trained = load_backbone(checkpoint, weights=False)[1]
        # a run trained on residual frames (debias="residual") is read on them too, unless its eval_options say
        view = {"view": "residual"} if debias.input_view(trained.options) == "residual" else {}
        cfg = replace(cfg, **{k: getattr(trained, k) for k in INHERITED},
                      eval_options={**view, **trained.eval_options})
    cfg = cfg.with_overrides(config, pairs)
    explicit = {pair.split("=", 1)[0].split(".", 1)[0].strip() for pair in pairs}
    if config:
        explicit |= set(yaml.safe_load(config_path(config).read_text(encoding="utf-8")) or {})
    # the protocol's defaults follow the final batch and epochs, and yield to what the user set
    defaults = PROTOCOL_TABLE[protocol].train_defaults(cfg)
    return replace(cfg, **{k: v for k, v in defaults.items() if k not in explicit})


# what an evaluation takes from the pretraining run: the backbone and the clips it was trained on
INHERITED = ("model", "width", "clip_len", "stride", "size")


def evaluate(protocol: str, cfg: RunConfig, data: str | None, *, checkpoint: str | None = None,
             out_dir: str | os.PathLike | None = None, progress: bool = True, inherit: bool = True) -> dict:
    """Run one protocol of ``evaluate.PROTOCOLS`` and return its result dict.

    The backbone comes from ``checkpoint`` (its model and width always), or is a random init. With
    ``inherit``, the clips (length, stride, size) are the pretraining run's too; the command line
    resolves every setting with ``eval_config`` first and passes ``inherit=False``. Protocol
    options come from ``cfg.eval_options``.
    """
    if protocol not in PROTOCOLS:  # before any loading or feature extraction
        raise ValueError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}.")
    cfg.check()
    if checkpoint:
        backbone, trained = load_backbone(checkpoint)
        keys = INHERITED if inherit else ("model", "width")
        cfg = replace(cfg, **{k: getattr(trained, k) for k in keys})
    else:
        torch.manual_seed(cfg.seed)
        backbone = backbone_from(cfg)
    manifest = load_manifest(data)
    device = get_device(cfg.device)
    result = {"protocol": protocol, "checkpoint": str(checkpoint) if checkpoint else "random-init",
              "data": str(manifest.root), "model": cfg.model, "width": cfg.width}
    ctx = EvalContext(backbone, cfg, manifest, device, Path(out_dir or f"runs/{protocol}"), progress)
    result.update(run_protocol(protocol, ctx, cfg.eval_options))
    return result
