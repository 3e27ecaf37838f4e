"""Results are data: every named run's scores, measured one way, kept as JSON.

``measure(name, mode)`` evaluates a run of ``course_lib.course`` (training it first if the cache
lacks it and ``train`` allows) with the score groups its declaration names, and returns its
record: ``run``, ``method``, ``mode``, ``seed``, ``config``, ``scores``, the per-epoch ``log``
and the ``seconds`` its training took. The record is cached beside the run (``scores.json``), so
a notebook that asks again reads it, unless the checkpoint changed. The run's frozen features are kept there too
(``features/``, ``Scoring.frozen``), so a group measured later, in another cell or notebook, does not decode again.

``write(name, mode)`` puts the record where the course commits it,
``notebooks/results/<mode>/<run>.json``, and for a run notebook 10 compares, its backbone in fp16 beside it
(``weights/<run>.pt``, ``course.reference_backbone``); ``python -m course_lib results --mode full`` does it for
every run the cache holds, resumably (a file whose run has not changed is kept).

Score groups (``SCORES``), each one function of a run's frozen backbone at the mode's budget, read on the
input the run was trained on (residual frames for a run with ``debias="residual"``):

* ``frozen``: retrieval R@1-50, the linear probe and kNN (notebooks 03-10);
* ``attentive``: V-JEPA's attentive probe on every token, trained on tokens extracted once (notebooks 09, 10);
* ``attentive_recipe``: the same probe trained as V-JEPA trains it, new augmented clips every epoch (notebook 09);
* ``attentive_control``: the frozen-token probe trained on shuffled labels (notebook 09's random ViT);
* ``iic_retrieval``: IIC's own retrieval feature, RGB, residual and merged (notebook 05);
* ``centred``: retrieval with each set centred on its mean, as DualVar's code (notebook 07);
* ``attributes``: linear probes of colour, shape, texture and background (notebook 10);
* ``finetune``: notebook 10's fine-tuning recipe;
* ``twin``: both sides of the static-bias twin (``evaluate.bias_probes``: notebooks 04, 10);
* ``direction``: a probe per mirrored class pair and cos(clip, mirrored clip) (the pretraining flip);
* ``reversal``: cos(clip, reversed clip) (notebook 07);
* ``collapse``: spread and effective rank of the projections and features (notebook 08);
* ``cvrl_linear``: CVRL's linear evaluation protocol (notebook 06);
* ``classifier``: a supervised run's own classifier on the test clips (notebook 02).
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import pickle
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import course
from .attentive import attentive_probe, extract_tokens
from .augment import crop_room
from .data import ClipDataset, Manifest, UniformClipSampler, builtin_dataset
from .debias import input_view
from .evaluate import (APPEARANCE, RETRIEVAL_KS, EvalContext, attribute_probe, bias_probes, classify, direction_probe,
                       eval_set, finetune, finetune_augment, frozen_features, knn, linear_probe, mirror_pairs,
                       mirror_similarity, retrieval, reversal_similarity, run_protocol, test_centre_clips, train_clips)
from .experiment import eval_config, evaluate, load_backbone
from .losses import effective_rank, embedding_std
from .machine import get_device, runs_root, small_data
from .methods.registry import resolved_options
from .runtime import usable_cpus
from .train import save_atomic

SCORES_FILE = "scores.json"  # the record, cached beside the run it measures
ATTRIBUTES = ("shape", "color", "texture", "background")


@dataclass
class Scoring:
    """One run being measured: its backbone and the features every group shares, made once."""

    run: course.Run
    device: torch.device
    base: object  # the mode's budget: the clips every protocol reads
    manifest: Manifest  # the course's dataset (the probes' classes)
    progress: bool = False
    fresh: bool = False  # extract features again rather than read those kept on disk (``measure(fresh=True)``)
    _cache: dict = field(default_factory=dict)

    def once(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def backbone(self) -> torch.nn.Module:
        return self.once("backbone", self.run.backbone)

    @property
    def view(self) -> str:
        """The input the run was trained on, "rgb" or "residual" (``debias.input_view``): it is read on the same."""
        return input_view(self.run.config.options)

    def features(self) -> tuple:
        """(train features, train labels, test features, test labels) on the course's dataset."""
        return self.frozen(self.manifest)

    def frozen(self, manifest: Manifest) -> tuple:
        """``evaluate.frozen_features`` of the run on ``manifest``, kept on disk beside the run's scores under a
        key of everything they depend on (the checkpoint's identity, the input view, the clips, the data), so a
        score group measured later (a notebook's next cell, notebook 10) reads them instead of decoding again."""
        key = json.dumps({"identity": self.once("identity", lambda: _identity(self.run)), "view": self.view,
                          "data": self.once(f"data {manifest.root}", lambda: _fingerprint(manifest)),
                          "version": VERSIONS["frozen"],
                          **{k: getattr(self.base, k) for k in ("clip_len", "stride", "size", "test_clips")}})
        cache = _cache_file(self.run).parent / "features" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"

        def load_or_extract():
            if cache.exists() and not self.fresh:
                try:
                    return tuple(torch.load(cache, weights_only=True))
                except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # unreadable: extracted again
                    pass
            features = frozen_features(self.backbone(), self.base, manifest, self.device, view=self.view)
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_atomic(list(features), cache)
            return features
        return self.once(f"frozen {cache.name}", load_or_extract)

    def test_clips(self) -> torch.Tensor:
        return self.once("clips", lambda: test_centre_clips(self.base, self.manifest))

    def protocol(self, name: str, **options) -> dict:
        """One protocol of ``evaluate.PROTOCOLS`` on the backbone, at the mode's budget."""
        ctx = EvalContext(self.backbone(), self.base, self.manifest, self.device, runs_root(self.run.mode),
                          self.progress)
        return run_protocol(name, ctx, options)


SCORES: dict[str, Callable[[Scoring], dict]] = {}
VERSIONS: dict[str, int] = {}  # a group's protocol version: a record measured with another one is measured again


def score_group(name: str, version: int = 1):
    """Register a score group: ``fn(scoring) -> {score: value}``. Raise ``version`` when its protocol changes, so
    that cached records and result files measured the old way count as missing that group."""
    def add(fn):
        SCORES[name], VERSIONS[name] = fn, version
        return fn
    return add


def _measured(record: dict) -> set[str]:
    """The groups a record holds, measured with their current protocol."""
    groups = record.get("groups")
    return {g for g, v in groups.items() if VERSIONS.get(g) == v} if isinstance(groups, dict) else set()


def frozen_group(a, ya, b, yb) -> dict:
    """The ``frozen`` group's scores from (train features, train labels, test features, test labels)."""
    return {**retrieval(a, ya, b, yb, ks=RETRIEVAL_KS), "linear": linear_probe(a, ya, b, yb)["test_acc"],
            "knn": knn(a, ya, b, yb)["test_acc"]}


@score_group("frozen")
def _frozen(s: Scoring) -> dict:
    return frozen_group(*s.features())


@score_group("centred")
def _centred(s: Scoring) -> dict:
    """Retrieval with each set centred on its own mean, as DualVar's ``test_retrieval`` does."""
    return {f"{k} centred": v for k, v in retrieval(*s.features(), ks=(1, 5, 10), center="each").items()}


@score_group("iic_retrieval")
def _iic_retrieval(s: Scoring) -> dict:
    """IIC's retrieval protocol (``retrieve_clips.py``): the last conv block max-pooled over (1, 2, 2) from centre
    crops, for RGB clips and residual frames, and the two concatenated (``--merge``, its headline)."""
    bb = s.backbone()
    rgb = frozen_features(bb, s.base, s.manifest, s.device, feature="iic")
    res = frozen_features(bb, s.base, s.manifest, s.device, feature="iic", view="residual")
    merged = (torch.cat([rgb[0], res[0]], 1), rgb[1], torch.cat([rgb[2], res[2]], 1), rgb[3])
    return {**{f"iic {k}": v for k, v in retrieval(*merged, ks=RETRIEVAL_KS).items()},
            "iic R@1 RGB": retrieval(*rgb, ks=(1,))["R@1"], "iic R@1 residual": retrieval(*res, ks=(1,))["R@1"]}


@score_group("attentive", version=2)  # 2: the probe's LayerNorm eps 1e-5, as jepa's
def _attentive(s: Scoring) -> dict:
    return {"attentive": s.protocol("attentive")["test_acc"]}


@score_group("attentive_recipe", version=2)
def _attentive_recipe(s: Scoring) -> dict:
    """The attentive probe trained as V-JEPA trains it (``attentive.ProbeRecipe``: new augmented clips every epoch)."""
    return {"attentive recipe": s.protocol("attentive", recipe="jepa")["test_acc"]}


@score_group("attentive_control", version=2)
def _attentive_control(s: Scoring) -> dict:
    """The frozen-token attentive probe trained on shuffled labels: what it scores when the labels carry nothing."""
    bb = s.backbone()
    (ta, tya), (tb, tyb) = (extract_tokens(bb, eval_set(s.base, s.manifest, split), device=s.device, size=s.base.size)
                            for split in ("train", "test"))
    shuffled = tya[torch.randperm(len(tya), generator=torch.Generator().manual_seed(0))]
    return {"attentive shuffled": attentive_probe(ta, shuffled, tb, tyb, heads=getattr(bb, "heads", None),
                                                  device=s.device)["test_acc"]}


@score_group("attributes")
def _attributes(s: Scoring) -> dict:
    train, test = s.manifest.split("train").entries, s.manifest.split("test").entries
    if not all(attr in e.attrs for e in train + test for attr in ATTRIBUTES):
        return {}  # a prepared dataset records no attributes
    a, _, b, _ = s.features()
    out = {}
    for attr in ATTRIBUTES:
        r = attribute_probe(a, b, [e.attrs[attr] for e in train], [e.attrs[attr] for e in test])
        out[attr], out[f"{attr} chance"] = r["test_acc"], r["chance"]
    return out


@score_group("finetune")
def _finetune(s: Scoring) -> dict:
    bb = s.backbone()
    room = crop_room(s.base.size)
    augment = finetune_augment(s.manifest.classes)  # flips only where a flip keeps the class
    folder = course.finetune_folder(runs_root(s.run.mode) / "10", s.run.spec.title, bb,
                                    flip=augment.flip > 0)  # named by a hash of the starting weights
    r = finetune(copy.deepcopy(bb), train_clips(s.base, s.manifest, room),
                 eval_set(s.base, s.manifest, "test", frames=room),
                 course.finetune_config(s.base, s.run.mode).train_config(), folder, augment=augment,
                 num_classes=len(s.manifest.classes), device=s.device, progress=s.progress, size=s.base.size)
    return {"finetune": r["test_acc"]}


@score_group("twin")
def _twin(s: Scoring) -> dict:
    plain = builtin_dataset(small_data(s.run.mode), progress=False)
    twin = builtin_dataset(small_data(s.run.mode), static_bias=1, progress=False)
    r = bias_probes(s.backbone(), s.base, plain, twin, s.device, view=s.view,
                    extract=lambda backbone, cfg, manifest, device, view: s.frozen(manifest))
    return {"twin": r["twin"], "R@1 twin": r["R@1 twin"], "plain": r["plain"], **{a: r[a] for a in APPEARANCE}}


@score_group("direction")
def _direction(s: Scoring) -> dict:
    pairs = mirror_pairs(s.manifest.classes)
    if not pairs:
        return {}
    return {"direction": direction_probe(*s.features(), pairs),
            "cos mirrored": mirror_similarity(s.backbone(), s.test_clips(), device=s.device, view=s.view)}


@score_group("reversal")
def _reversal(s: Scoring) -> dict:
    return {"cos reversed": reversal_similarity(s.backbone(), s.test_clips(), device=s.device, view=s.view)}


@score_group("collapse")
def _collapse(s: Scoring) -> dict:
    _, _, b, _ = s.features()
    out = {"feature rank": effective_rank(b).item()}
    method = s.run.method() if s.run.folder is not None else None  # a baseline has no heads
    if hasattr(method, "projector"):  # the online projections of the test videos' features: where BYOL's loss acts
        with torch.no_grad():
            z = method.projector.cpu()(b)
        out.update({"projection spread": embedding_std(z).item(), "projection rank": effective_rank(z).item()})
    return out


@score_group("cvrl_linear")
def _cvrl_linear(s: Scoring) -> dict:
    folder = s.run.folder
    cfg = eval_config("cvrl-linear", folder, pairs=[f"epochs={s.run.config.epochs}"],
                      base=course.default_config(s.run.mode))
    r = evaluate("cvrl-linear", cfg, str(s.manifest.root), checkpoint=str(folder), out_dir=folder / "linear-eval",
                 progress=s.progress)
    return {"cvrl linear": r["test_acc"]}


@score_group("classifier")
def _classifier(s: Scoring) -> dict:
    cfg = s.run.config
    test = ClipDataset(s.manifest, UniformClipSampler(clip_len=cfg.clip_len, stride=cfg.stride, num_clips=cfg.test_clips),
                       split="test", size=(cfg.size, cfg.size))
    return {"classifier": classify(s.run.method(), test, device=s.device)}


# ----------------------------------------------------------------------------------------- records
def _identity(run: course.Run) -> str:
    """What the scores depend on: the checkpoint's bytes, or a baseline's model and seed."""
    if run.folder is None:
        return f"random {run.config.model} x{run.config.width} seed {run.spec.seed}"
    h = hashlib.sha1((run.folder / "checkpoint.pt").read_bytes())
    return h.hexdigest()[:16]


def _fingerprint(manifest: Manifest) -> str:
    """What a dataset's features depend on: its classes, each video's path, label, split and file (size and time
    of change), so that data regenerated or re-prepared at the same place counts as other data."""
    h = hashlib.sha1(json.dumps(manifest.classes).encode())
    for e in manifest.entries:
        path = manifest.path(e)
        st = path.stat() if path.exists() else None
        h.update(json.dumps([str(path.resolve()), e.label, e.split, st and st.st_size, st and st.st_mtime_ns]).encode())
    return h.hexdigest()


def _cache_file(run: course.Run) -> Path:
    folder = run.folder or runs_root(run.mode) / "baselines" / run.name
    return folder / SCORES_FILE


def _write_json(path: Path, obj: dict) -> None:
    """Atomically: a temporary file, then a rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes writing at once never share it
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def measure(name: str, mode: str | None = None, *, groups: tuple[str, ...] | None = None, train: bool = True,
            device=None, progress: bool = False, run: course.Run | None = None, fresh: bool = False) -> dict | None:
    """The record of run ``name`` at ``mode`` (see the module's docstring) with the score ``groups`` (default, and
    at most: those its declaration names): read from the run's cache while its checkpoint is unchanged (unless
    ``fresh``), the groups it lacks measured and added. An untrained run is trained first with ``train``, else None."""
    run = run or course.run(name, mode)
    groups = tuple(g for g in (groups or run.spec.scores) if g in run.spec.scores)  # what the run declares
    if not run.trained():
        if not train:
            return None
        run.train(progress=progress)
    cache, identity = _cache_file(run), _identity(run)
    record = json.loads(cache.read_text(encoding="utf-8")) if cache.exists() else {}
    if fresh or record.get("identity") != identity:
        record = {}
    missing = [g for g in groups if g not in _measured(record)]
    if not missing:
        return record
    device = get_device(device or run.config.device)
    manifest = run.dataset() if run.spec.data == "plain" else builtin_dataset(small_data(run.mode), progress=False)
    s = Scoring(run, device, course.budget(run.mode), manifest, progress, fresh)
    t0 = time.perf_counter()
    scores = dict(record.get("scores", {}))
    for group in missing:
        scores.update({k: round(v, 4) for k, v in SCORES[group](s).items()})
    log = run.log()
    record = {
        "run": run.name, "title": run.spec.title, "notebook": run.spec.notebook, "method": run.spec.method,
        "mode": run.mode, "seed": run.spec.seed, "data": run.spec.data,
        "config": {**asdict(run.config), **({"method_settings": resolved_options(run.spec.method, run.config.options)}
                                            if run.spec.method else {})},
        "groups": {g: VERSIONS[g] for g in run.spec.scores if g in _measured(record) | set(missing)},
        "scores": scores, "test_videos": len(manifest.split("test")), "classes": len(manifest.classes),
        "log": log, "seconds": round(sum(r.get("seconds", 0.0) for r in log), 1),
        "eval_seconds": round(record.get("eval_seconds", 0.0) + time.perf_counter() - t0, 1), "identity": identity,
        "measured": {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
                     "device": str(device), "cpu_cores": usable_cpus(), "python": platform.python_version()},
    }
    _write_json(cache, record)
    return record


def write(name: str, mode: str | None = None, *, train: bool = False, force: bool = False,
          progress: bool = False, weights: bool | None = None) -> tuple[str, Path | None]:
    """Write run ``name``'s record to ``notebooks/results/<mode>/<name>.json``; ("kept" | "written" |
    "not trained", path). A file whose identity matches the cached run is kept unless ``force``. A run notebook 10
    compares also gets its fp16 backbone beside the file (``save_weights``) with ``weights``, by default in full mode."""
    run = course.run(name, mode)
    ship = (run.mode == "full" if weights is None else weights) and name in course.COMPARISON and bool(run.spec.folder)
    path = course.result_path(name, run.mode)
    if not run.trained() and not train:
        return "not trained", None
    if path.exists() and not force and run.trained():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("identity") == _identity(run) and set(run.spec.scores) <= _measured(old):
            if ship and not _weights_current(run):
                save_weights(name, run.mode)
            return "kept", path
    record = measure(name, run.mode, train=train, progress=progress, run=run, fresh=force)
    _write_json(path, record)
    if ship:  # notebook 10 compares these backbones live: their weights ship too
        save_weights(name, run.mode)
    return "written", path


def save_weights(name: str, mode: str | None = "full") -> Path:
    """Commit-sized copy of trained run ``name``'s evaluated backbone: its weights in fp16 with its config and the
    checkpoint identity its result file names, beside that file (``course.weights_path``), written atomically and
    loadable with ``weights_only=True`` (``course.reference_backbone``)."""
    run = course.run(name, mode)
    backbone, cfg = load_backbone(run.folder)
    state = {k: v.half() if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    path = course.weights_path(name, run.mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"run": run.name, "mode": run.mode, "identity": _identity(run), "config": asdict(cfg), "state": state},
                path)
    return path


def _weights_current(run: course.Run) -> bool:
    path = course.weights_path(run.name, run.mode)
    return path.exists() and torch.load(path, map_location="cpu", weights_only=True)["identity"] == _identity(run)


def reference_protocol(mode: str | None = None) -> tuple:
    """(budget, dataset) that the reference backbones are read with here: full mode's, as their result files were
    measured, so live scores reproduce the committed ones; at the test budget its own smaller data and clips (a
    smoke test of the code, not a result)."""
    read = "test" if course.mode_name(mode) == "test" else "full"
    return course.budget(read), builtin_dataset(small_data(read), progress=False)


def reference_features(name: str, mode: str | None = None, device=None, reference: str = "full") -> tuple | None:
    """Run ``name``'s committed reference backbone (``course.reference_backbone``) read by the frozen protocol on
    this machine: (train features, train labels, test features, test labels), or None without committed weights.
    Cached under the mode's run cache by the weights' hash, so a second call reads them."""
    spec, mode = course.spec(name), course.mode_name(mode)
    path = course.weights_path(name, reference)
    if spec.folder and not path.exists():
        return None
    key = hashlib.sha1(path.read_bytes()).hexdigest()[:12] if spec.folder else f"random{spec.seed}"
    cache = runs_root(mode) / f"reference-{reference}" / f"{name}-{key}.pt"
    if cache.exists():
        return tuple(torch.load(cache, weights_only=True))
    backbone, cfg = course.reference_backbone(name, reference)
    base, manifest = reference_protocol(mode)
    features = frozen_features(backbone, base, manifest, get_device(device), view=input_view(cfg.options))
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(list(features), cache)
    return features


def reference_scores(name: str, mode: str | None = None, device=None, reference: str = "full") -> dict:
    """The ``frozen`` scores (R@k, linear, kNN) of run ``name``'s reference backbone measured live here ({} without
    committed weights): beside ``course.result(name)``'s, they show that the committed numbers are reproducible."""
    features = reference_features(name, mode, device, reference)
    if features is None:
        return {}
    return frozen_group(*features)


def scores(name: str, mode: str | None = None, groups: tuple[str, ...] | None = None, **kwargs) -> dict:
    """The scores of the learner's own run ``name`` (trained and measured if the cache lacks them)."""
    return measure(name, mode, groups=groups, **kwargs)["scores"]


def compare(names: list[str], keys: tuple[str, ...], *, groups: tuple[str, ...] = ("frozen",),
            mode: str | None = None, reference: str = "full", device=None, mine: bool | str = True) -> list[dict]:
    """One row per run: the learner's scores at ``mode`` (measured here, ``groups`` only; none with
    ``mine=False``, for runs too long to train in a notebook; with ``mine="cached"`` only for the runs the cache
    holds, nothing trained) beside the committed reference at ``reference`` and its seed band, and, where
    ``mode`` is another budget, the committed result of the same run at ``mode`` and its seed band there:
    ``{"run", "title", "mine", "reference", "band", "here", "band_here"}``."""
    here_mode = course.mode_name(mode)

    def committed(name, at):
        record = course.result(name, at)
        return ({k: record["scores"][k] for k in keys if k in record["scores"]} if record else {},
                {k: b for k in keys if (b := band(name, k, at))})

    rows = []
    for name in names:
        record = measure(name, mode, groups=groups, device=device, train=mine is True) if mine else None
        measured = record["scores"] if record else {}
        ref, ref_band = committed(name, reference)
        here, here_band = committed(name, here_mode) if here_mode != reference else ({}, {})
        rows.append({"run": name, "title": course.spec(name).title,
                     "mine": {k: v for k, v in measured.items() if k in keys},
                     "reference": ref, "band": ref_band, "here": here, "band_here": here_band})
    return rows


def score_digits(key: str) -> int:
    """Decimals a score is shown with (tables, the report, plots): 3 for a cosine near 1 ("cos reversed") or a
    projection spread near 0, 1 for a percentage or a rank."""
    return 3 if key.startswith(("cos", "projection spread")) else 1


def score_label(key: str) -> str:
    """A score's axis label: a percentage says so; a cosine, a spread or a rank does not."""
    return f"{key} (%)" if not key.startswith(("cos", "projection", "feature rank")) else key


def table(rows: list[dict], keys: tuple[str, ...], *, mode: str | None = None, reference: str = "full") -> str:
    """``compare``'s rows as text: each score of the learner's run, then the reference's (with its seed band)."""
    here, ref = course.mode_name(mode), reference
    with_mine = any(r["mine"] for r in rows)  # compare(..., mine=False): the reference alone
    with_here = any(r.get("here") for r in rows)  # committed results at the learner's budget
    width = {k: max(15, len(f"{k} {here} ref")) + 2 for k in keys}  # a long key keeps its gap

    def committed(value, b, w, d):
        text = "-" if value is None else f"{value:.{d}f}" + (f" [{b[0]:.{d - 1}f}-{b[1]:.{d - 1}f}]" if b else "")
        return f"{text:>{w}s}"

    head = f"{'run':24s}" + "".join((f"{k + ' ' + here:>{width[k]}s}" if with_mine else "")
                                    + (f"{k + ' ' + here + ' ref':>{width[k]}s}" if with_here else "")
                                    + f"{k + ' ' + ref:>{width[k]}s}" for k in keys)
    lines = [head]
    for r in rows:
        cells = ""
        for k in keys:
            mine, w, d = r["mine"].get(k), width[k], score_digits(k)
            if with_mine:
                cells += f"{mine:{w}.{d}f}" if mine is not None else f"{'-':>{w}s}"
            if with_here:
                cells += committed(r["here"].get(k), r["band_here"].get(k), w, d)
            cells += committed(r["reference"].get(k), r["band"].get(k), w, d)
        lines.append(f"{r['title']:24s}" + cells)
    if not any(r["reference"] for r in rows):
        lines.append(f"(no committed {ref}-mode result files for these runs yet: python -m course_lib results --mode {ref})")
    return "\n".join(lines)


def band(name: str, key: str, mode: str | None = "full") -> tuple[float, float] | None:
    """The seed band of score ``key`` for the run ``name``: (lowest, highest) over its committed seed files
    (``name`` and ``name-seedN``), or None with fewer than two."""
    values = [course.score(n, key, mode) for n in course.seeds_of(name)]
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if len(values) >= 2 else None


def noise(names: list[str], key: str, mode: str | None = "full", test_videos: int = 120) -> tuple[float, str]:
    """How far two runs' ``key`` must differ at ``mode`` before a verdict says more than noise, and why: the widest
    seed band measured for these runs (``band``); without one, the widest measured for any run at that budget;
    with no seeds run at that budget, two test videos (the score's resolution, a floor under its noise)."""
    def widest(runs):
        spans = [(b[1] - b[0], n) for n in runs if (b := band(n, key, mode))]
        return max(spans) if spans else None
    if got := widest(names):
        return got[0], f"{course.spec(got[1]).title}'s seed spread at {course.mode_name(mode)}"
    if got := widest([n for n in course.RUNS if not course.spec(n).seed]):
        return got[0], f"the widest seed spread measured at {course.mode_name(mode)} ({course.spec(got[1]).title}'s)"
    return 2 * 100 / test_videos, f"no seeds run at {course.mode_name(mode)}: two test videos"


def verdict(scores: dict, a: str, b: str, key: str, mode: str | None = "full", *, test_videos: int = 120,
            expected: str = "holds", opposite: str = "reversed") -> str:
    """A paper's claim "``a`` beats ``b`` on ``key``" read from ``scores`` ({run: {key: value}}) at ``mode``:
    ``expected`` or ``opposite`` only when the difference exceeds ``noise``, "within noise" otherwise."""
    if key not in scores.get(a, {}) or key not in scores.get(b, {}):
        return f"{a} vs {b}: {key} not measured"
    d = scores[a][key] - scores[b][key]
    limit, why = noise([a, b], key, mode, test_videos)
    word = "within noise" if abs(d) <= limit else (expected if d > 0 else opposite)
    return f"{a} vs {b}: {d:+.1f} points of {key}, {word} ({why}: {limit:.1f})"


# ----------------------------------------------------------------------------------------- the report
REPORT_BEGIN = "<!-- results: generated by `python -m course_lib results --doc docs/measurements.md`; do not edit -->"
REPORT_END = "<!-- results: end -->"


def markers(mode: str = "full") -> tuple[str, str]:
    """Where ``report(mode)`` stands in a markdown file: full mode's block, or one of its own for another mode."""
    if mode == "full":
        return REPORT_BEGIN, REPORT_END
    return (f"<!-- results ({mode}): generated by `python -m course_lib results --mode {mode} --doc "
            f"docs/measurements.md`; do not edit -->", f"<!-- results ({mode}): end -->")


def debias_runs(methods: tuple[str, ...] | None = None) -> list[str]:
    """The runs of the static shortcut's fixes (``course.DEBIAS_RUNS``), method by method, the paper's form first."""
    return [name for (method, _), name in course.DEBIAS_RUNS.items() if methods is None or method in methods]


def debias_scores(key: str, mode: str = "full") -> dict[tuple[str, str], float | None]:
    """Score ``key`` of every clip-contrast method with each fix of ``course_lib.debias`` that applies to it, from the
    committed result files at ``mode``: {(method, fix): value, or None where not measured}; "none" is the paper's form.
    A cell that is absent is a fix that does not apply (BYOL has no negatives for ``intra``)."""
    return {(method, fix): course.score(name, key, mode) for (method, fix), name in course.DEBIAS_RUNS.items()}


def debias_floor(fix: str) -> str:
    """The run a fix is read against: a random network on residual frames for ``residual``, else random init."""
    return "random_init-residual" if fix == "residual" else "random_init"


def debias_grid(key: str, mode: str = "full") -> str:
    """A markdown table of score ``key``: one row per clip-contrast method, one column per fix of ``course_lib.debias``
    ("-": not measured), and random init (RGB and residual frames) and supervised as the lines to read it against."""
    scores = debias_scores(key, mode)
    fixes = list(dict.fromkeys(fix for _, fix in scores))
    head = ["| method | " + " | ".join(fixes) + " |", "|---" * (len(fixes) + 1) + "|"]
    rows = []
    for method in dict.fromkeys(m for m, _ in scores):
        cells = ["" if (method, fix) not in scores else "-" if scores[method, fix] is None
                 else f"{scores[method, fix]:.1f}" for fix in fixes]
        rows.append(f"| {course.spec(method).title} | " + " | ".join(cells) + " |")
    lines = [f"{key}, {mode} mode ('-': not measured; blank: the fix does not apply)", "", *head, *rows, ""]
    for name in ("random_init", "random_init-residual", "supervised"):
        v = course.score(name, key, mode)
        lines.append(f"{course.spec(name).title}: " + ("not measured" if v is None else f"{v:.1f}") + "  ")
    return "\n".join(lines)


# what the report shows of each family of runs: (heading, runs, score keys)
REPORT = (
    ("Notebook 10: every method at one budget", lambda: list(course.COMPARISON),
     ("linear", "R@1", "R@5", "knn", "attentive", "finetune")),
    ("Notebook 10: trained on the static-bias twin (twin→twin, twin→plain) and the colour it keeps",
     lambda: course.names("twin") + ["twin-simclr_no_colour", *course.names("twin-debias")],
     ("twin", "plain", "color", "background", "shape")),
    ("Notebook 02: reference points", lambda: ["random_init", "single_frame", "supervised"], ("classifier", "linear")),
    ("Notebook 05: IIC's ablations (IIC's retrieval feature, merged RGB + residual)",
     lambda: ["iic-no_intra", "iic", "iic-shuffle", "iic-rgb"], ("linear", "iic R@1", "iic R@1 RGB", "iic R@1 residual")),
    ("Notebook 06: CVRL's ablations", lambda: ["cvrl", *course.names("06")], ("linear", "R@1", "cvrl linear")),
    ("Notebook 07: DualVar's ablation (retrieval centred)", lambda: ["dualvar", *course.names("07")],
     ("linear", "R@1 centred", "cos reversed")),
    ("Notebook 08: BYOL's ablations", lambda: ["byol", *course.names("08")],
     ("linear", "R@1", "projection spread", "projection rank", "feature rank")),
    ("Notebook 09: masked video modelling", lambda: ["random_vit", "videomae", *course.names("09"), "vjepa"],
     ("linear", "attentive", "R@1")),
    ("Notebooks 06, 07 and 10: the fixes of the static shortcut (`options.debias`)",
     lambda: ["random_init", "random_init-residual", *debias_runs(), "supervised"],
     ("linear", "R@1", "direction", "color", "cos reversed")),
    ("Seeds: the noise band", lambda: course.names("seeds"), ("linear", "R@1", "twin", "color")),
    ("The pretraining flip", lambda: [n for m in course.FLIPPING for n in (m, f"{m}-noflip")],
     ("linear", "direction", "cos mirrored")),
)


def report(mode: str = "full") -> str:
    """Markdown tables of every committed result file of ``mode``, family by family (``REPORT``); a run without a
    file is listed as not measured. ``docs/measurements.md`` holds it between ``REPORT_BEGIN`` and ``REPORT_END``."""
    begin, end = markers(mode)
    lines = [begin, ""]
    for heading, runs, keys in REPORT:
        records = {n: course.result(n, mode) for n in runs()}
        measured = {n: r for n, r in records.items() if r}
        lines += [f"### {heading}", ""]
        if not measured:
            lines += ["Not measured yet.", ""]
            continue
        some = next(iter(measured.values()))
        epochs = "/".join(str(e) for e in sorted({r["config"]["epochs"] for r in measured.values()}))
        lines += [f"{mode} mode, {epochs} epochs, {some['test_videos']} test videos, "
                  f"{some['classes']} classes (chance {100 / some['classes']:.1f}); scores in %, cos in [-1, 1].", ""]
        lines += ["| run | " + " | ".join(keys) + " | training (min) |", "|---" * (len(keys) + 2) + "|"]
        for name, r in measured.items():
            cells = [f"{r['scores'][k]:.{score_digits(k)}f}" if k in r["scores"] else "-" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['seconds'] / 60:.1f} |")
        missing = [n for n, r in records.items() if not r]
        if missing:
            lines += ["", "Not measured yet: " + ", ".join(missing) + "."]
        lines.append("")
    lines.append(end)
    return "\n".join(lines)


def write_report(path: str | os.PathLike, mode: str = "full") -> None:
    """Put ``report(mode)`` into the markdown file ``path``, replacing what stands between the markers (or at its end)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = markers(mode)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + report(mode) + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + report(mode) + "\n"
    path.write_text(text, encoding="utf-8")
