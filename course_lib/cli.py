"""Command line: ``python -m course_lib {synth,prepare,probe,pretrain,evaluate,results,bench} ...``.

Results go to stdout as JSON; a user mistake (bad path, bad video, bad setting) is one
line on stderr starting with ``error:`` and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .data.manifest import ManifestError
from .video import VideoError


def _synth(args) -> int:
    from .data.synth import PRESETS, generate

    flags = {"seed": args.seed, "train_per_class": args.train_per_class, "test_per_class": args.test_per_class,
             "size": args.frame_size, "min_frames": args.min_frames, "max_frames": args.max_frames,
             "static_bias": args.static_bias}
    if args.static_bias is not None and not 0 <= args.static_bias <= 1:
        raise ValueError(f"--static-bias ({args.static_bias}) must be between 0 and 1.")
    cfg = replace(PRESETS[args.preset], **{k: v for k, v in flags.items() if v is not None})
    if cfg.min_frames > cfg.max_frames or cfg.min_frames < 1:
        raise ValueError(f"--min-frames ({cfg.min_frames}) must be between 1 and --max-frames ({cfg.max_frames}).")
    t0 = time.perf_counter()
    manifest = generate(args.out, cfg, workers=args.workers, progress=not args.no_progress)
    summary = {"out": str(args.out), "videos": len(manifest), "classes": manifest.classes,
               "seconds": round(time.perf_counter() - t0, 2), "config": asdict(cfg)}
    print(json.dumps(summary))
    return 0


def _probe(args) -> int:
    from .video import probe

    failed = 0
    for path in args.files:
        try:
            print(json.dumps(probe(path).to_dict()), flush=True)
        except VideoError as e:
            failed += 1
            print(json.dumps({"path": path, "error": str(e)}), flush=True)
            print(f"error: {e}", file=sys.stderr)
    return 1 if failed else 0


def _write_json(path, obj) -> None:
    """``obj`` as indented JSON in ``path``, its folder made if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _bench(args) -> int:
    import platform

    from .bench import augment_benchmark, decode_benchmark, format_table, train_benchmark
    from .experiment import load_manifest
    from .runtime import usable_cpus
    from .machine import get_device

    machine = {"cpu_cores": usable_cpus(), "python": platform.python_version(), "os": platform.system()}
    table = format_table  # the plain-text summary printed on stderr
    if args.what == "train":
        device = str(get_device(args.device))
        settings = [dict(amp=False), dict(amp=False, channels_last=True)]  # fp32, + channels_last_3d
        if device.startswith("cuda"):  # bf16, + channels_last_3d, + torch.compile
            settings += [dict(amp=True), dict(amp=True, channels_last=True),
                         dict(amp=True, channels_last=True, compile=True)]
        elif args.compile:  # on the CPU only when asked: inductor needs a C++ compiler
            settings += [dict(amp=False, channels_last=True, compile=True)]
        rows = []
        for model in args.models.split(","):
            for extra in settings:
                r = train_benchmark(model=model, width=args.width, method=args.method, clip_len=args.clip_len, size=args.size,
                                    batch=args.batch, device=device, steps=args.repeats, **extra)
                label = ("bf16" if r["amp"] else "fp32") + (" +cl3d" if r["channels_last"] else "") + (
                    " +compile" if r["compile"] else "")
                rows.append({**r, "what": f"{model} {label}", "data": r["device"][:16]})
        results = {"what": "train", "method": args.method, "rows": rows}
    elif args.what == "steps":
        from .bench import format_steps, step_times
        from .data.manifest import Manifest
        from .methods import list_methods

        trees = {"this": str(Path(__file__).resolve().parent.parent)}
        if args.against:
            if not (Path(args.against) / "course_lib").is_dir():
                raise ValueError(f"--against {args.against}: has no course_lib folder (a checkout of the course, "
                                 f"e.g. git worktree add {args.against} 7249e28).")
            trees = {Path(args.against).name: str(Path(args.against).resolve()), **trees}
        methods = list_methods() if args.methods == "all" else args.methods.split(",")
        from .data import builtin_dataset

        manifest = Manifest.load(args.data) if args.data else builtin_dataset(quick=False, progress=False)  # full budget
        def partial(rows):  # a run cut off keeps the rows it measured
            if args.out:
                _write_json(args.out, {"what": "steps", "partial": True, "rows": rows})

        results = step_times(methods, trees, data=str(manifest.root), rounds=args.rounds,
                             steps=args.steps, on_row=partial)
        table = format_steps
    elif args.what == "augment":
        results = augment_benchmark(batch=args.batch, clip_len=args.clip_len, device=str(get_device(args.device or "cpu")),
                                    repeats=args.repeats)
    else:
        manifest = load_manifest(args.data)
        results = decode_benchmark(manifest, clip_len=args.clip_len, short_side=args.short_side, clips=args.clips)
        machine["data"] = str(manifest.root)
    results["machine"] = machine
    print(table(results), file=sys.stderr)
    if args.out:
        _write_json(args.out, results)
    print(json.dumps(results))
    return 0


def _prepare(args) -> int:
    from .data.prepare import EncodeSettings, prepare

    if args.short_side < 16 or args.keyframe_interval < 1:
        raise ValueError(f"--short-side must be >= 16 and --keyframe-interval >= 1 "
                         f"(got {args.short_side}, {args.keyframe_interval}).")
    settings = EncodeSettings(short_side=args.short_side, keyframe_interval=args.keyframe_interval, crf=args.crf)
    summary = prepare(args.layout, args.src, args.out, settings=settings, workers=args.workers, splits=args.splits,
                      fold=args.fold, test_fraction=args.test_fraction, seed=args.seed,
                      progress=not args.no_progress)
    if summary["failed"]:
        print(f"warning: {summary['failed']} video(s) could not be prepared; see {args.out}/prepare_errors.jsonl",
              file=sys.stderr)
    if summary["missing"]:
        print(f"warning: {summary['missing']} video(s) listed by the split files were not found under {args.src}",
              file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _say_mode() -> None:
    """When the machine chose the mode (cpu without a GPU), say so on stderr, with how to change it."""
    from .machine import course_mode

    mode = course_mode()
    if mode.by_machine:
        print(f"course_lib: {mode.note()}.", file=sys.stderr)


def _pretrain(args) -> int:
    from .course import default_config
    from .experiment import pretrain

    if not args.method and not args.config:
        raise ValueError("give --method NAME (or a --config that sets method).")
    if args.config and not args.method:
        import yaml

        from .experiment import config_path

        if "method" not in (yaml.safe_load(config_path(args.config).read_text(encoding="utf-8")) or {}):
            raise ValueError(f"{args.config}: sets no method; an evaluation config goes with evaluate --config "
                             f"(or give --method).")
    cfg = default_config(method=args.method or "supervised").with_overrides(args.config, args.settings)
    if args.method and cfg.method != args.method:
        raise ValueError(f"--method {args.method} contradicts method: {cfg.method} of the config {args.config}.")
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.base:
        if cfg.method != "dualvar":
            raise ValueError(f"--base only applies to the dualvar method, not {cfg.method}.")
        cfg = replace(cfg, options={**cfg.options, "base": args.base})
    _say_mode()
    summary = pretrain(cfg, args.data, args.out, progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), "final": summary["final"], "epochs_done": summary["epochs_done"]}))
    return 0


def _evaluate(args) -> int:
    from .course import default_config
    from .experiment import eval_config, evaluate

    if bool(args.checkpoint) == bool(args.random_init):
        raise ValueError("give exactly one of --checkpoint CKPT and --random-init.")
    cfg = eval_config(args.protocol, args.checkpoint, args.config, args.settings, base=default_config())
    _say_mode()
    result = evaluate(args.protocol, cfg, args.data, checkpoint=args.checkpoint, out_dir=Path(args.out).with_suffix(""),
                      progress=not args.no_progress, inherit=False)
    _write_json(args.out, result)
    print(json.dumps(result))
    return 0


def _results(args) -> int:
    from . import course
    from .results import write

    names = course.names() if args.runs == "all" else args.runs.split(",")
    for name in names:
        course.spec(name)  # an unknown name is one error line before anything runs
    counts: dict[str, int] = {}
    for name in names:
        t0 = time.perf_counter()
        status, path = write(name, args.mode, train=args.train, force=args.force, progress=not args.no_progress)
        counts[status] = counts.get(status, 0) + 1
        print(f"{name}: {status}" + (f" {path} ({time.perf_counter() - t0:.0f} s)" if path else ""), file=sys.stderr,
              flush=True)
    if args.doc:
        from .results import write_report

        write_report(args.doc, course.mode_name(args.mode))
    print(json.dumps({"mode": course.mode_name(args.mode), "runs": len(names), **counts}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the built-in motion dataset")
    p.add_argument("--out", required=True, help="output folder (videos/ and manifest.jsonl)")
    p.add_argument("--preset", choices=["default", "quick"], default="default", help="dataset size preset")
    p.add_argument("--seed", type=int)
    p.add_argument("--train-per-class", dest="train_per_class", type=int)
    p.add_argument("--test-per-class", dest="test_per_class", type=int)
    p.add_argument("--frame-size", type=int, help="frame height and width in pixels")
    p.add_argument("--min-frames", dest="min_frames", type=int)
    p.add_argument("--max-frames", dest="max_frames", type=int)
    p.add_argument("--static-bias", dest="static_bias", type=float, metavar="P",
                   help="0 to 1: how often background, shape and colour take the class's preferred value "
                        "(0, the default: appearance tells nothing about the class)")
    p.add_argument("--workers", type=int, help="processes (default: all cores, at most 8)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="re-encode a video dataset (short side, dense keyframes) and write its manifest")
    p.add_argument("layout", choices=["folder", "ucf101", "hmdb51", "kinetics"],
                   help="folder: <class>/<video> with a stratified split; the others use their official splits")
    p.add_argument("--src", required=True, help="the dataset's video folder")
    p.add_argument("--out", required=True, help="output folder (videos, manifest.jsonl, prepare.json)")
    p.add_argument("--splits", help="split files (default: SRC/ucfTrainTestlist, SRC/testTrainMulti_7030_splits, "
                                    "SRC/annotations with train.csv/validate.csv/test.csv)")
    p.add_argument("--fold", type=int, default=1, help="ucf101, hmdb51: which official split (1-3)")
    p.add_argument("--test-fraction", dest="test_fraction", type=float, default=0.2, help="folder: test share")
    p.add_argument("--seed", type=int, default=0, help="folder: seed of the stratified split")
    p.add_argument("--short-side", dest="short_side", type=int, default=128)
    p.add_argument("--keyframe-interval", dest="keyframe_interval", type=int, default=16)
    p.add_argument("--crf", type=int, default=23, help="x264 quality (lower is better, larger files)")
    p.add_argument("--workers", type=int, help="processes (default: all cores, at most 8)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_prepare)

    from .experiment import PROTOCOLS, list_configs
    from .methods import METHODS

    p = sub.add_parser("pretrain", help="train a method on a dataset (default: the built-in one)")
    p.add_argument("--method", choices=METHODS, help="the method (may come from --config instead)")
    p.add_argument("--data", help="manifest file or folder (default: the built-in dataset)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.jsonl, summary.json, run.json")
    p.add_argument("--config", help="YAML file of settings, or a shipped paper config by name: "
                                    + ", ".join(list_configs("pretrain")))
    p.add_argument("--epochs", type=int)
    p.add_argument("--base", choices=["simclr", "moco"], help="dualvar: the clip contrast it builds on")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("settings", nargs="*", help="key=value overrides, e.g. model=r3d_18 width=0.5 lr=0.1")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (or a random init) with one protocol")
    p.add_argument("--checkpoint", help="checkpoint.pt of a pretrain run (or its folder)")
    p.add_argument("--random-init", action="store_true", help="evaluate an untrained backbone (the lower bound)")
    p.add_argument("--data", help="manifest file or folder (default: the built-in dataset)")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--out", required=True, help="result JSON file")
    p.add_argument("--config", help="YAML file of settings, or a shipped evaluation config by name ("
                                    + ", ".join(list_configs("evaluate"))
                                    + "); over the run's model and clips and the protocol's own defaults")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("settings", nargs="*", help="key=value overrides, e.g. eval_options.feature=iic")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("bench", help="measure throughput (decode, augment, train) and training steps per method (steps)")
    p.add_argument("what", choices=["decode", "augment", "train", "steps"])
    p.add_argument("--device", help="augment, train: cpu, cuda or mps (augment: default cpu; train: the GPU if present)")
    p.add_argument("--batch", type=int, default=32, help="augment: clips per batch; train: videos per step")
    p.add_argument("--repeats", type=int, default=3, help="augment: timed batches per side; train: timed steps")
    p.add_argument("--models", default="r3d_18", help="train: comma-separated backbones")
    p.add_argument("--method", default="simclr", help="train: the self-supervised method of the step")
    p.add_argument("--width", type=float, default=1.0, help="train: the backbones' width multiplier")
    p.add_argument("--compile", action="store_true", help="train on the CPU: add a torch.compile row")
    p.add_argument("--size", type=int, default=112, help="train: crop size")
    p.add_argument("--data", help="manifest file or folder (default: the built-in dataset)")
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--short-side", type=int, default=128)
    p.add_argument("--clips", type=int, default=128, help="clips per measurement")
    p.add_argument("--methods", default="all", help="steps: comma-separated methods (default: all)")
    p.add_argument("--against", help="steps: a checkout of another commit of the course, measured side by side")
    p.add_argument("--rounds", type=int, default=2, help="steps: rounds of every method in every tree")
    p.add_argument("--steps", type=int, default=20, help="steps: steps per epoch (epoch 2 is timed)")
    p.add_argument("--out", help="also write the JSON result here")
    p.set_defaults(func=_bench)

    p = sub.add_parser("results", help="write the result files of the course's named runs from the run cache")
    p.add_argument("--mode", choices=["test", "cpu", "full"], help="the runs' mode (default: this machine's)")
    p.add_argument("--runs", default="all", help="comma-separated run names of course_lib.course (default: all)")
    p.add_argument("--train", action="store_true", help="train the runs the cache lacks (default: skip them)")
    p.add_argument("--force", action="store_true", help="measure again, even where a file matches its run")
    p.add_argument("--doc", help="then write the report of the mode's result files into this markdown file "
                                 "(docs/measurements.md)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_results)

    p = sub.add_parser("probe", help="describe video files, one JSON line each")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_probe)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; ``key=value`` settings may stand before, between or after the options."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "settings"):  # settings on both sides of an option: parse the command's part again
        command = parser._subparsers._group_actions[0].choices[args.command]
        rest = argv[argv.index(args.command) + 1:]
        args = command.parse_intermixed_args(rest, argparse.Namespace(command=args.command))
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return args.func(args)
    except (VideoError, ManifestError, ValueError, OSError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
