"""The course's budgets and named runs, each declared once (COURSE_DESIGN.md, "Three budgets, one owner").

Notebooks, the ablation scripts, ``bench`` and the tests ask for a run by name; nothing else
builds a run's folder or its options::

    >>> r = course.run("iic")                 # at this machine's mode: its folder and its RunConfig
    >>> r.train()                              # loads the cached run, or trains (or finishes) it
    >>> course.result("iic")["scores"]         # the committed reference: notebooks/results/full/iic.json

A run is declared with the notebook that trains it, its method and options, what it changes of
the shared budget, its data (the built-in dataset or its static-bias twin), its seed, and the
score groups its result file holds (``course_lib.results`` measures them). The baselines,
``random_init`` and ``random_vit``, are runs without training.

Modes (``machine.MODES``): ``test`` (a smoke budget for nbval and CI; its numbers are not
results), ``cpu`` (the default without a GPU) and ``full`` (the course budget of notebooks 03-10,
the default on a GPU; its measured results are the reference). The command line starts from the
same budget as the notebooks (``default_config``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import torch

from .data import builtin_dataset, course_dataset
from .debias import FIXES, NONE
from .experiment import RunConfig, backbone_from, load_backbone, load_method, pretrain
from .machine import MODES, check_mode, course_mode, runs_root, small_data
from .methods import method_class
from .models import create_model
from .runtime import repo_root

# the shared budget of notebooks 02-10: r3d_vcop at width 0.25, AdamW, batch 8, clips at frame stride 2,
# 3 evenly spaced clips per video for evaluation
_SHARED = dict(model="r3d_vcop", width=0.25, batch_size=8, lr=3e-3, optimizer="adamw", weight_decay=0.05,
               stride=2, warmup_epochs=1, num_workers=2, test_clips=3)
BUDGETS = {
    # a smoke test, on the small dataset; its loaders read in the process: at this size, forking workers from a
    # notebook's kernel costs more than the decoding they share (tests/test_data.py and test_train.py fork them)
    "test": dict(_SHARED, clip_len=8, size=48, epochs=2, test_clips=2, num_workers=0),
    # the budget study's choice (docs/measurements.md): every one of the 480 training videos, 16-frame clips, 48 px
    "cpu": dict(_SHARED, clip_len=16, size=48, epochs=10),
    "full": dict(_SHARED, clip_len=16, size=64, epochs=30),  # 480 training videos
}
# a method whose steps are cheap trains longer at the CPU default (the budget study, docs/measurements.md): at 10
# epochs the speed task's seeds spread from random init to +27 points; at 20 they all learn, in about half the
# CPU time of IIC's 10 epochs
METHOD_BUDGETS = {"cpu": {"speed": {"epochs": 20}}}
# the masked methods' backbone at the shared budget: vit_course x0.5 (0.71M parameters, 0.66 GMACs per
# 16 x 64 x 64 clip) beside r3d_vcop x0.25 (0.90M, 0.49 GMACs)
VIT = {"model": "vit_course", "width": 0.5}
FINETUNE_EPOCHS = {"test": 1, "cpu": 3, "full": 10}  # notebook 10's fine-tuning recipe: lr 1e-3, no warm-up


def mode_name(mode: str | None = None) -> str:
    """One of ``MODES``: ``mode`` itself, or (None) the mode this machine runs (``machine.course_mode``)."""
    return course_mode().name if mode is None else check_mode(mode)


def budget(mode: str | None = None, **changes) -> RunConfig:
    """The shared budget of notebooks 03-10 in ``mode``, so that every method's numbers compare; a ``method``
    among the changes gets its own share of it where ``METHOD_BUDGETS`` gives one."""
    name = mode_name(mode)
    own = METHOD_BUDGETS.get(name, {}).get(changes.get("method"), {})
    return RunConfig(**{**BUDGETS[name], **own, **changes})


def default_config(mode: str | None = None, **changes) -> RunConfig:
    """Where the command line starts: the notebooks' budget at ``mode`` (``BUDGETS``); a ViT-only method gets
    the course's ViT, as notebook 09's runs."""
    if "method" in changes and method_class(changes["method"]).vit_only and "model" not in changes:
        changes = {**VIT, **changes}
    return budget(mode, **changes)


def finetune_config(base: RunConfig, mode: str | None = None, epochs: int | None = None) -> RunConfig:
    """Notebook 10's fine-tuning recipe at the budget ``base``: lr 1e-3, no warm-up, ``FINETUNE_EPOCHS``
    (``epochs`` overrides), the budget's batch and clips."""
    return replace(base, epochs=epochs or FINETUNE_EPOCHS[mode_name(mode)], lr=1e-3, warmup_epochs=0)


def weights_id(model: torch.nn.Module) -> str:
    """A short hash of a model's weights, so that a cache folder named by it changes when they do."""
    h = hashlib.sha1()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def finetune_folder(runs: str | os.PathLike, name: str, backbone: torch.nn.Module, epochs: int | None = None, *,
                    flip: bool = True) -> Path:
    """Where the fine-tuning of ``backbone`` is cached (named by its weights, under ``runs/finetune``); a run
    without flips, or with another number of epochs than the recipe's, gets its own folder beside it."""
    return Path(runs) / "finetune" / (f"{name.replace(' ', '_')}-{weights_id(backbone)}-crop"
                                      + ("" if flip else "-noflip") + (f"-{epochs}ep" if epochs else ""))


# ------------------------------------------------------------------------------------------- named runs
@dataclass(frozen=True)
class RunSpec:
    """One named run: what it trains, on what, and what its result file measures."""

    name: str  # also its result file's name: notebooks/results/<mode>/<name>.json
    notebook: str  # the notebook that trains it ("05"); "" for the baselines
    method: str | None  # None: a random init, not trained
    title: str = ""  # how tables and plots label it
    folder: str = ""  # under the mode's runs cache
    options: dict = field(default_factory=dict)  # the method's options
    changes: dict = field(default_factory=dict)  # fields of the shared budget it changes
    data: str = "plain"  # "plain" (the course's dataset) or "twin" (the built-in static-bias twin)
    seed: int = 0
    scores: tuple[str, ...] = ("frozen",)  # the score groups of its result file (course_lib.results.SCORES)
    group: str = ""  # the family it belongs to: a notebook's ablation ("05"), "comparison", "twin", "seeds", ...


RUNS: dict[str, RunSpec] = {}


def declare(name: str, notebook: str, method: str | None, *, title: str = "", folder: str = "", **kwargs) -> RunSpec:
    """Add a named run to ``RUNS``."""
    if name in RUNS:
        raise ValueError(f"run {name!r} is declared twice")
    spec = RunSpec(name, notebook, method, title or name, folder, **kwargs)
    RUNS[name] = spec
    return spec


# notebook 10 compares these: every method of notebooks 03-09 at the shared budget, with random init (a random
# 3D CNN, and a random ViT for the masked methods) as the floor and supervised training as the ceiling
FRONT = ("frozen", "attentive", "attributes", "finetune", "reversal")  # what notebook 10 reads of every backbone
declare("random_init", "", None, title="random init",
        scores=(*FRONT, "twin", "direction", "iic_retrieval", "centred", "collapse"), group="baseline")
declare("random_init-residual", "", None, title="random init, residual frames", options={"view": "residual"},
        scores=("frozen", "centred", "reversal"), group="baseline")
MASKED = ("attentive_recipe", "attentive_control")  # notebook 09 reads the ViTs with both attentive probes
declare("random_vit", "", None, title="random ViT", changes=VIT, scores=(*FRONT, "twin", *MASKED), group="baseline")
_COMPARED = [  # name, notebook, folder, method, options, changes, title
    ("rotation", "03", "rotation", "rotation", {}, {}, "rotation"),
    ("vcop", "03", "vcop", "vcop", {}, {"stride": 1}, "VCOP"),  # three clips and two gaps must fit in a video
    ("speed", "03", "speed", "speed", {}, {}, "speed"),
    ("simclr", "04", "simclr", "simclr", {"temperature": 0.1}, {}, "SimCLR"),
    ("moco", "04", "moco", "moco", {"temperature": 0.1, "momentum": 0.99}, {}, "MoCo"),
    ("iic", "05", "residual_and_repeat", "iic", {"view2": "residual", "intra": "repeat"}, {}, "IIC"),
    ("cvrl", "06", "consistent_decreasing", "cvrl", {"hidden": 512}, {}, "CVRL"),
    ("dualvar", "07", "simclr_both", "dualvar", {"base": "simclr", "rank": True, "coherent": True}, {}, "DualVar"),
    ("byol", "08", "byol", "byol", {}, {}, "BYOL"),
    ("videomae", "09", "videomae", "videomae", {}, VIT, "VideoMAE"),
    ("vjepa", "09", "vjepa", "vjepa", {}, VIT, "V-JEPA"),
    ("supervised", "03", "supervised", "supervised", {}, {}, "supervised"),
]
FLIPPING = ("simclr", "moco", "cvrl", "byol", "vjepa")  # the compared methods whose views flip
for _name, _nb, _folder, _method, _options, _changes, _title in _COMPARED:
    extra = ("direction",) if _name in FLIPPING or _name == "supervised" else ()
    declare(_name, _nb, _method, title=_title, folder=f"{_nb}/{_folder}", options=_options, changes=_changes,
            scores=FRONT + extra + {"cvrl": ("cvrl_linear",), "supervised": ("classifier", "iic_retrieval", "centred"),
                                    "simclr": ("twin",), "moco": ("twin",), "iic": ("iic_retrieval",),
                                    "dualvar": ("centred",), "byol": ("collapse",), "videomae": MASKED,
                                    "vjepa": MASKED}.get(_name, ()),
            group="comparison")
    # the same run on the static-bias twin, cached beside it
    declare(f"twin-{_name}", _nb, _method, title=_title, folder=f"{_nb}/twin-{_folder}", options=_options,
            changes=_changes, data="twin", scores=("twin",), group="twin")

# 02: the diagnostic that appearance alone cannot tell the class
declare("single_frame", "02", "supervised", title="single frame", folder="02/single_frame",
        changes={"clip_len": 1, "stride": 1}, scores=("frozen", "classifier"), group="02")
# 04: SimCLR on the twin without colour jitter and grayscale
declare("twin-simclr_no_colour", "04", "simclr", title="SimCLR, no colour augmentation",
        folder="04/twin-simclr_no_colour", data="twin", scores=("twin",), group="04",
        options={"temperature": 0.1, "augment": {"jitter": 0.0, "grayscale": 0.0}})
# 05: IIC's ablation of the intra-negatives and of the second view ("iic" is residual + repeat)
for _name, _folder, _title, _options in (("iic-no_intra", "residual_no_intra", "residual, no intra", "none"),
                                         ("iic-shuffle", "residual_and_shuffle", "residual + shuffle", "shuffle"),
                                         ("iic-rgb", "RGB_and_repeat", "RGB + repeat", "repeat")):
    declare(_name, "05", "iic", title=_title, folder=f"05/{_folder}", group="05", scores=("frozen", "iic_retrieval"),
            options={"view2": "rgb" if _name == "iic-rgb" else "residual", "intra": _options})
# 06: CVRL's ablations of the augmentation's consistency and of the interval density ("cvrl" is the main run)
for _name, _folder, _title, _options in (
        ("cvrl-per_frame", "per-frame_decreasing", "per-frame, decreasing", {"augment": {"consistent": False}}),
        ("cvrl-uniform", "consistent_uniform", "consistent, uniform", {"interval": "uniform"}),
        ("cvrl-increasing", "consistent_increasing", "consistent, increasing", {"interval": "increasing"})):
    declare(_name, "06", "cvrl", title=_title, folder=f"06/{_folder}", options={"hidden": 512, **_options}, group="06")
    # the same ablation once the static shortcut is gone (residual frames, the fix that makes CVRL learn here;
    # the consistent, decreasing arm is "cvrl-residual" below)
    declare(f"{_name}+residual", "06", "cvrl", title=f"{_title}, residual", folder=f"06/{_folder}_residual",
            options={"hidden": 512, **_options, "debias": "residual"}, group="06",
            scores=("frozen", "direction", "attributes", "reversal"))
# 07: DualVar's two terms on SimCLR and MoCo ("dualvar" is SimCLR + both), and on residual frames
for _base in ("simclr", "moco"):
    for _arm, _rank, _coherent in (("alone", False, False), ("rank", True, False), ("coherent", False, True),
                                   ("both", True, True)):
        if (_base, _arm) == ("simclr", "both"):
            continue
        declare(f"dualvar-{_base}_{_arm}", "07", "dualvar", title=f"{_base} " + ("alone" if _arm == "alone" else f"+ {_arm}"),
                folder=f"07/{_base}_{_arm}", scores=("frozen", "centred", "reversal"), group="07",
                options={"base": _base, "rank": _rank, "coherent": _coherent,
                         **({"momentum": 0.99} if _base == "moco" else {})})
for _arm, _both in (("alone", False), ("both", True)):
    declare(f"dualvar-residual_{_arm}", "07", "dualvar", title=f"simclr {'+ both' if _both else 'alone'}, residual",
            folder=f"07/residual_{_arm}", scores=("frozen", "centred", "reversal", "direction", "attributes"), group="07",
            options={"base": "simclr", "rank": _both, "coherent": _both, "debias": "residual"})
# 08: BYOL without its predictor, without its EMA target, and with rho = 4 clips per video
for _name, _folder, _title, _options in (("byol-no_predictor", "no_predictor", "no predictor", {"predictor": False}),
                                         ("byol-no_ema", "no_EMA", "no EMA", {"momentum": 0.0}),
                                         ("byol-rho4", "rho4", "BYOL, rho = 4", {"rho": 4})):
    declare(_name, "08", "byol", title=_title, folder=f"08/{_folder}", options=_options,
            scores=(*FRONT, "collapse") if _name == "byol-rho4" else ("frozen", "collapse"), group="08")
# notebook 10's comparison: the baselines and the compared runs, with BYOL at rho = 4 beside rho = 2 (the paper's
# main setting, and the BYOL that learns here)
COMPARISON = ("random_init", "random_vit",
              *(n for c in _COMPARED for n in ((c[0], "byol-rho4") if c[0] == "byol" else (c[0],))))
# 09: VideoMAE's masking ablations
for _name, _folder, _title, _options in (("videomae-random", "videomae_random", "random 0.9", {"masking": "random"}),
                                         ("videomae-ratio75", "videomae_ratio75", "tube 0.75", {"mask_ratio": 0.75})):
    declare(_name, "09", "videomae", title=_title, folder=f"09/{_folder}", options=_options, changes=VIT,
            scores=("frozen", "attentive", *MASKED), group="09")
# seeds (notebooks/ablations/twin_seeds.py): SimCLR on both datasets and random inits, for the noise band
for _seed in (1, 2):
    for _data, _prefix in (("plain", ""), ("twin", "twin-")):
        declare(f"{_prefix}simclr-seed{_seed}", "04", "simclr", title="SimCLR", folder=f"04/seeds/{_prefix}simclr-seed{_seed}",
                options={"temperature": 0.1}, data=_data, seed=_seed, scores=("frozen", "twin"), group="seeds")
for _seed in (1, 2, 3, 4):
    declare(f"random_init-seed{_seed}", "", None, title="random init", seed=_seed, scores=("frozen", "twin"),
            group="seeds")
for _seed in (1, 2):  # the random ViT: how much of its attentive probe is the draw
    declare(f"random_vit-seed{_seed}", "", None, title="random ViT", changes=VIT, seed=_seed,
            scores=("frozen", "attentive", *MASKED), group="seeds")
for _seed in (1, 2):  # IIC, the method that learns most here: how much of its score is the seed
    declare(f"iic-seed{_seed}", "05", "iic", title="IIC", folder=f"05/seeds/iic-seed{_seed}", seed=_seed,
            options=RUNS["iic"].options, scores=("frozen", "iic_retrieval"), group="seeds")
# the pretraining flip (notebooks/ablations/pretrain_flip.py): each flipping method without its flip
for _name in FLIPPING:
    _spec = RUNS[_name]
    declare(f"{_name}-noflip", _spec.notebook, _spec.method, title=f"{_spec.title}, no flip",
            folder=f"{_spec.folder}_noflip", changes=_spec.changes, scores=("frozen", "direction"), group="flip",
            options={**_spec.options, "augment": {**_spec.options.get("augment", {}), "flip": 0.0}})

# the published fixes of the static shortcut (course_lib.debias) on every clip-contrast method, in its paper's
# form otherwise (RGB): the table of notebooks 06, 07 and 10. DualVar on residual frames is notebook 07's run.
DEBIASED = {"simclr": FIXES, "moco": FIXES, "cvrl": FIXES, "dualvar": FIXES, "byol": ("residual", "be", "fame")}
DEBIAS_RUNS = {(m, NONE): m for m in DEBIASED}  # (method, fix) -> run name
for _method, _fixes in DEBIASED.items():
    _spec = RUNS[_method]
    for _fix in _fixes:
        if (_method, _fix) == ("dualvar", "residual"):
            DEBIAS_RUNS[_method, _fix] = "dualvar-residual_both"
            continue
        DEBIAS_RUNS[_method, _fix] = declare(
            f"{_method}-{_fix}", _spec.notebook, _method, title=f"{_spec.title} + {_fix}",
            folder=f"{_spec.notebook}/debias/{_method}-{_fix}", changes=_spec.changes, group="debias",
            scores=("frozen", "direction", "attributes", "reversal"),
            options={**_spec.options, "debias": _fix}).name
# each of them with the fix that works at the CPU default (residual frames) on the static-bias twin too: does what a
# fixed method learns carry over when appearance names the class (notebook 10)?
DEBIAS_TWINS = {}  # method -> its twin run with the residual fix
for _method in DEBIASED:
    _spec = RUNS[DEBIAS_RUNS[_method, "residual"]]
    DEBIAS_TWINS[_method] = declare(
        f"twin-{_spec.name}", _spec.notebook, _method, title=f"{RUNS[_method].title} + residual, twin",
        folder=str(PurePosixPath(_spec.folder).with_name(f"twin-{PurePosixPath(_spec.folder).name}")),
        changes=_spec.changes,
        data="twin", scores=("twin",), group="twin-debias", options=_spec.options).name


# At the CPU default (and the test budget, its smaller copy) notebooks 05-09 train their main runs and the arms their
# lesson stands on; the other arms of their ablations are read from the reference (and from your cache where you
# trained them), so that each notebook fits its 15 minutes. Full mode trains them all.
ABLATIONS = ("05", "06", "07", "08", "09")
KEPT_ARMS = ("dualvar-residual_both", "byol-rho4")  # notebook 07's residual frames, notebook 08's rho = 4


def trains_here(name: str, mode: str | None = None) -> bool:
    """Whether a notebook trains run ``name`` at ``mode`` (else it reads the reference and the cache)."""
    return mode_name(mode) == "full" or spec(name).group not in ABLATIONS or name in KEPT_ARMS


def names(group: str | None = None) -> list[str]:
    """The declared runs, in declaration order; those of one ``group`` ("comparison", "twin", "05", ...)."""
    return [n for n, s in RUNS.items() if group is None or s.group == group]


def seeds_of(name: str) -> list[str]:
    """``name`` and the runs declared as its other seeds (``name-seedN``)."""
    return [name] + [n for n in RUNS if n.startswith(f"{name}-seed")]


def spec(name: str) -> RunSpec:
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}; the course's runs: {', '.join(RUNS)}.")
    return RUNS[name]


@dataclass(frozen=True)
class Run:
    """A named run at one mode: where it is cached, how it is configured, and how to get its backbone."""

    spec: RunSpec
    mode: str
    config: RunConfig
    folder: Path | None  # None for a baseline: nothing is trained

    @property
    def name(self) -> str:
        return self.spec.name

    def dataset(self):
        """The manifest it trains on: the course's dataset, or the built-in static-bias twin."""
        if self.spec.data == "twin":
            return builtin_dataset(small_data(self.mode), static_bias=1, progress=False)
        return course_dataset(small_data(self.mode), progress=False)

    def train(self, *, progress: bool = False) -> dict | None:
        """Load the finished run from the cache, or train (or finish) it; its summary (None for a baseline)."""
        if self.folder is None:
            return None
        return pretrain(self.config, str(self.dataset().root), self.folder, progress=progress)

    def trained(self) -> bool:
        """Whether the cache holds this run, finished."""
        summary = self.folder / "summary.json" if self.folder else None
        if summary is None or not summary.exists():
            return self.folder is None
        done = json.loads(summary.read_text(encoding="utf-8"))
        return done.get("epochs_done") == self.config.epochs

    def backbone(self) -> torch.nn.Module:
        """The trained backbone (trained first if the cache lacks it), or the baseline's random init."""
        if self.folder is None:
            torch.manual_seed(self.spec.seed)
            return create_model(self.config.model, width=self.config.width)
        self.train()
        return load_backbone(self.folder)[0]

    def method(self) -> torch.nn.Module:
        """The whole trained method (heads, decoder, target network too), in eval mode."""
        data = self.dataset()
        self.train()
        return load_method(self.folder, num_classes=len(data.classes), num_videos=len(data.split("train")))[0]

    def log(self) -> list[dict]:
        """The per-epoch training log (``metrics.jsonl``), one record per epoch."""
        path = self.folder / "metrics.jsonl" if self.folder else None
        if path is None or not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return list({r["epoch"]: r for r in records}.values())  # an epoch run again after a resume counts once


def run(name: str, mode: str | None = None, *, runs: str | os.PathLike | None = None, **changes) -> Run:
    """The named run ``name`` at ``mode`` (None: this machine's): folder under ``runs`` (default: the mode's
    runs cache, ``machine.runs_root``) and config. ``changes`` alter the config (a smoke test's epochs); a
    changed run is cached in a folder of its own beside the declared one."""
    s, mode = spec(name), mode_name(mode)
    config = budget(mode, **({"method": s.method} if s.method else {}), **s.changes, seed=s.seed, **changes)
    config = replace(config, options=dict(s.options))
    folder = None
    if s.folder:
        tag = "-".join(f"{k}{v}" for k, v in sorted(changes.items()))
        folder = Path(runs) if runs else runs_root(mode)
        folder = folder / (s.folder + (f"-{tag}" if tag else ""))
    return Run(s, mode, config, folder)


# ------------------------------------------------------------------------------------------- committed results
def results_dir() -> Path:
    """Where the reference result files are committed: ``notebooks/results`` of the course repository."""
    root = repo_root()
    return (root / "notebooks" / "results") if root else Path("notebooks") / "results"


def result_path(name: str, mode: str | None = "full") -> Path:
    return results_dir() / mode_name(mode) / f"{spec(name).name}.json"


def weights_path(name: str, mode: str | None = "full") -> Path:
    return results_dir() / mode_name(mode) / "weights" / f"{spec(name).name}.pt"


def reference_backbone(name: str, mode: str | None = "full") -> tuple[torch.nn.Module, RunConfig] | None:
    """The committed reference backbone of run ``name`` and its config, in float32 and eval mode, or None if it has
    none: the fp16 weights beside its result file (``results.save_weights``), loaded with ``weights_only=True``;
    a baseline is its random init at ``mode``. ``backbone, cfg = course.reference_backbone("iic")``."""
    if not spec(name).folder:  # a baseline: nothing trained
        r = run(name, mode)
        return r.backbone().eval(), r.config
    path = weights_path(name, mode)
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    cfg = RunConfig(**saved["config"])
    backbone = backbone_from(cfg)
    backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["state"].items()})
    return backbone.eval(), cfg


def result(name: str, mode: str | None = "full") -> dict | None:
    """The committed result file of run ``name`` at ``mode`` (the reference: full mode), or None if it has none."""
    path = result_path(name, mode)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def score(name: str, key: str, mode: str | None = "full") -> float | None:
    """One committed score of run ``name`` (``"linear"``, ``"R@1"``, ...), or None if it is not measured."""
    r = result(name, mode)
    return None if r is None else r["scores"].get(key)


def ablation_result(name: str, mode: str | None = "full") -> dict | None:
    """The committed output of an ablation script (``notebooks/ablations/<name>.py --out``), kept as
    ``notebooks/results/<mode>/ablations/<name>.json``, or None."""
    path = results_dir() / mode_name(mode) / "ablations" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
