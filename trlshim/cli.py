"""``trlshim demo`` (the main job) and ``trlshim doctor``."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}


def doctor(_args=None) -> int:
    """Installed versions, whether the pair is known to work, and the patches for this TRL."""
    from . import hooks, registry, versions

    trl = versions.trl_version()
    tf = versions.installed("transformers")
    print("trlshim", _version())
    for name in versions.PACKAGES:
        v = versions.installed(name)
        print(f"  {name:<13} {v if v is not None else '-'}")
    problems = versions.pair_problems(trl, tf)
    if trl is None:
        print("pair: TRL is not installed")
    elif problems:
        print(f"pair: TRL {trl} + transformers {tf} is KNOWN NOT TO WORK:")
        for why in problems:
            print(f"  - {why}")
    elif versions.known_good(trl, tf):
        print(f"pair: TRL {trl} + transformers {tf} is tested by the trlshim matrix")
    else:
        print(f"pair: TRL {trl} + transformers {tf} is not in the matrix (no known problem)")
    missing = versions.dependency_problems(trl)
    for why, fix in missing:
        print(f"KNOWN NOT TO WORK here: {why}; fix: {fix}")
    problems = problems + [why for why, _ in missing]
    if trl is None:
        return 1
    _import_trl_targets()
    rows = registry.selected(trl)
    applied, skipped = set(hooks.applied()), hooks.skipped()
    print(f"patches for TRL {trl} ({len(rows)} selected):")
    for p in rows:
        if p.name in applied:
            state = "active"
        elif p.name in skipped:
            state = "skipped"
        else:
            state = "not loaded"
        if p.optional and state != "active":
            continue
        print(f"  [{state:>10}] {p.name}: {p.reason}")
    from .pipeline import pipelines

    for pl in pipelines():
        print(f"{pl.trainer}.__init__ pipeline ({pl.name}), in order:")
        for name, spec, reason, chosen in pl.describe(trl):
            print(f"  [{'on' if chosen else 'off':>3}] {name} (TRL {spec}): {reason}")
    _print_auto_padding_free()
    if getattr(_args, "written_for", None):
        _print_written_for(_args.written_for)
    real_skips = hooks.skipped(optional=False)
    if real_skips:
        print("skipped patches (target changed shape):")
        for name, why in real_skips.items():
            print(f"  - {name}: {why}")
    return 1 if problems else 0  # a known-bad pair fails CI scripts that run `trlshim doctor`


def _print_auto_padding_free() -> None:
    """The inputs of the automatic padding-free decision known before any trainer exists."""
    from .patches.sft import packing, varlen

    print("auto padding-free (SFT; when neither packing nor padding_free is asked for):")
    missing = varlen.environment_reason()
    print(f"  variable-length attention ({varlen.NAME}, torch's flash kernel): "
          f"{'available' if missing is None else 'unavailable: ' + missing}")
    print(f"  flash attention models: on through their own kernel; padding waste threshold: {packing.MIN_WASTE:.0%} "
          "of a batch (sampled from the dataset when the trainer is built)")
    print(f"  never for model types: {', '.join(sorted(packing.BLOCKED_MODEL_TYPES))}")


def _print_written_for(value) -> None:
    """Every default that ``written_for=value`` would restore on the installed release, per config class."""
    import importlib
    import warnings

    from . import versions
    from .patches.common import written_for

    release = versions.matrix_release(value)
    print(f"written_for={release}: defaults that differ on TRL {versions.trl_version()} (restored where unset):")
    for name in written_for.table()["classes"]:
        cls = None
        for module in ("trl", "trl.experimental"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cls = getattr(importlib.import_module(module), name, None)
            except Exception:
                cls = None
            if cls is not None:
                break
        if cls is None:
            print(f"  {name}: not in this release")
            continue
        diffs = written_for.differences(name, cls, release)
        print(f"  {name}: {'no difference' if not diffs else ''}")
        for field, old, new in diffs:
            now = "no such field" if new == written_for.ABSENT else repr(getattr(new, "value", new))
            print(f"    {field}: {now} -> {old!r}")


def _import_trl_targets() -> None:
    """Import the TRL modules the SFT patches target, so doctor shows them applied."""
    import importlib

    import trlshim  # noqa: F401  (patches)

    for name in ("trl", "trl.trainer", "trl.trainer.sft_trainer", "trl.trainer.sft_config", "trl.trainer.utils"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def release_table() -> str:
    """The README's supported-release table, generated from the registry (tests keep them equal)."""
    from packaging.version import Version

    from . import patches, registry, versions  # noqa: F401
    from .pipeline import pipelines

    lines = ["| TRL | tested with transformers | patches selected (besides trainer aliases) | pipeline steps |",
             "|---|---|---|---|"]
    for trl, tf in versions.TESTED.items():
        names = [p.name for p in registry.selected(Version(trl), Version(tf)) if not p.optional]
        steps = [name for pl in pipelines() for name, _, _, chosen in pl.describe(Version(trl)) if chosen]
        lines.append(f"| {trl} | {tf} | {', '.join(f'`{n}`' for n in names)} | {', '.join(f'`{n}`' for n in steps)} |")
    return "\n".join(lines)


def table(args=None) -> int:
    if getattr(args, "json", False):
        import json

        from . import matrix

        print(json.dumps(matrix.as_dict(), indent=2))
    else:
        print(release_table())
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def demo(args) -> int:
    """Fine-tune a tiny model with a TRL-0.8-style script on whatever TRL is installed."""
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    import logging
    import warnings

    import trlshim
    from trlshim import report, tiny, versions

    warnings.simplefilter("ignore")  # TRL's and transformers' own chatter; ours is printed below
    logging.getLogger("trlshim").setLevel(logging.WARNING)
    print(f"trlshim {trlshim.__version__} demo on TRL {versions.trl_version()}, transformers "
          f"{versions.installed('transformers')}, torch {versions.installed('torch')}")

    from datasets import Dataset
    from transformers import TrainerCallback, TrainingArguments

    texts = tiny.demo_texts()
    tok = tiny.make_tokenizer(tiny.tokenizer_json(texts))
    model = tiny.make_model(vocab_size=len(tok), hidden=64)
    data = Dataset.from_list([{"text": t} for t in texts])

    losses = []

    class Losses(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))

    def run(output_dir):
        from trl import SFTTrainer  # the script below is written for TRL 0.8

        targs = dict(output_dir=output_dir, max_steps=args.steps, per_device_train_batch_size=8,
                     learning_rate=3e-3, logging_steps=max(1, args.steps // 6), report_to="none",
                     save_strategy="no", seed=0, disable_tqdm=True)
        if "use_cpu" in TrainingArguments.__dataclass_fields__:
            targs["use_cpu"] = True
        trainer = SFTTrainer(
            model=model, args=TrainingArguments(**targs), train_dataset=data, tokenizer=tok,
            dataset_text_field="text", max_seq_length=32, packing=False, callbacks=[Losses()],
        )
        trainer.train()

    if args.output_dir:
        run(args.output_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(tmp)
    print("translations applied (and decisions logged):")
    for msg in report.applied():
        print("  -", msg)
    if not report.applied():
        print("  (none: the installed TRL takes this script as written)")
    print("loss:")
    for step, loss in losses:
        print(f"  step {step:>3}  {loss:.4f}")
    if len(losses) < 2 or not losses[-1][1] < losses[0][1]:
        print("FAILED: the loss did not go down")
        return 1
    print(f"loss went down: {losses[0][1]:.4f} -> {losses[-1][1]:.4f}")
    return 0


def migrate(args) -> int:
    """Rewrite legacy TRL calls for the target release (trlshim/migrate)."""
    from .migrate import run

    return run(args.paths, args.target, args.mode)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="trlshim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fine-tune a tiny model with a TRL-0.8-style script on the installed TRL")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--output-dir", default=None, help="where the trainer may write (default: a temporary folder)")
    p.set_defaults(func=demo)
    d = sub.add_parser("doctor", help="versions, known-good pairs, and the patches active for this TRL")
    d.add_argument("--written-for", default=None, metavar="RELEASE",
                   help="also print every config default that written_for=RELEASE would restore here")
    d.set_defaults(func=doctor)
    t = sub.add_parser("table", help="print the supported-release table (as in README.md)")
    t.add_argument("--json", action="store_true", help="the tested matrix for machines: releases and their pins")
    t.set_defaults(func=table)
    m = sub.add_parser("migrate", help="rewrite legacy TRL calls in source files to a release's spelling (LibCST)")
    m.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (*.py)")
    m.add_argument("--target", default=None, metavar="RELEASE", help="the TRL release to write for (default: installed)")
    how = m.add_mutually_exclusive_group()
    how.add_argument("--diff", action="store_const", dest="mode", const="diff",
                     help="print a unified diff, change nothing; exit 1 when changes are pending")
    how.add_argument("--write", action="store_const", dest="mode", const="write", help="write the changes")
    m.set_defaults(func=migrate, mode="report")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
