"""Shared by the reliability tests: run a scenario in a fresh interpreter, and the probes the
scenarios use inside it (count trlshim wrappers, build a legacy-style trainer, read what the
model would be fed).

A scenario is a Python source string run with ``python -c``; it imports this module (the
tests directories are put on ``PYTHONPATH``) and ends with ``emit(result)``, which prints one
JSON line that ``run_scenario`` returns as a dict. TRL's import costs seconds, so each
scenario batches several checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
MARK = "@@trlshim-result@@"


def run_scenario(code: str, env: dict = None, timeout: int = 180, pythonpath: list = ()) -> dict:
    """Run ``code`` in a fresh interpreter (same Python, same environment plus ``env``; ``pythonpath``
    first on the path, e.g. a modified copy of trlshim)."""
    full_env = dict(os.environ)
    for key in ("TRLSHIM_DISABLE", "TRLSHIM_STRICT", "TRLSHIM_TRL_VERSION"):
        full_env.pop(key, None)
    full_env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_DISABLED="true",
        TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore::FutureWarning",
    )
    full_env["PYTHONPATH"] = os.pathsep.join([*pythonpath, HERE, TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    full_env.update(env or {})
    # a hang (deadlock) dumps every thread's stack and exits, so the failure shows where
    prelude = f"import faulthandler; faulthandler.dump_traceback_later({timeout - 30}, exit=True)\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
            result["_stderr"] = proc.stderr[-4000:]
            return result
    raise AssertionError(f"scenario produced no result (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def structural_release() -> bool:
    """Checks of trlshim's own structure (import order, the stable names' pipeline) run on the oldest, a
    middle and the newest matrix release: CI time, and the property does not depend on the release."""
    from trlshim import versions

    releases = list(versions.TESTED)
    return str(versions.installed("trl")) in {releases[0], releases[len(releases) // 2], releases[-1]}


def emit(result: dict) -> None:
    sys.stdout.write(MARK + json.dumps(result, default=repr) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- probes used inside scenarios


def own(owner, name):
    """``name`` as stored on ``owner`` itself (no descriptor binding)."""
    return vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)


def shim_wrappers(func) -> list:
    """Names of the trlshim wrappers in the ``__wrapped__`` chain of ``func``, outermost first.

    Independent of trlshim's own marker: a layer counts when it is a wrapt proxy whose wrapper
    function lives in the trlshim package.
    """
    import wrapt

    names, seen = [], set()
    obj = func
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        if isinstance(obj, wrapt.FunctionWrapper):
            wrapper = getattr(obj, "_self_wrapper", None)
            if (getattr(wrapper, "__module__", "") or "").startswith("trlshim"):
                names.append(getattr(obj, "_self_trlshim_patch", None) or wrapper.__qualname__)
        try:
            obj = obj.__wrapped__
        except AttributeError:
            obj = None
    return names


def trainer_init_wrappers() -> list:
    from trl.trainer import sft_trainer

    return shim_wrappers(own(sft_trainer.SFTTrainer, "__init__"))


def config_init_wrappers() -> list:
    try:
        from trl.trainer import sft_config
    except ImportError:
        return []
    return shim_wrappers(own(sft_config.SFTConfig, "__init__"))


def expected_wrappers(module: str, attribute: str) -> list:
    """The rows selected for this TRL that target ``module.attribute`` and did not skip themselves."""
    from trlshim import hooks, registry, versions

    skipped = hooks.skipped()
    rows = registry.selected(versions.trl_version())
    return sorted(p.name for p in rows if p.module == module and p.attribute == attribute and p.name not in skipped)


def wrappers() -> dict:
    """The trlshim layers on ``SFTTrainer.__init__`` / ``SFTConfig.__init__`` now, and the rows
    that should be there exactly once each while patched."""
    import importlib.util

    has_config = importlib.util.find_spec("trl.trainer.sft_config") is not None
    return {
        "trainer": trainer_init_wrappers(), "config": config_init_wrappers(),
        "trainer_expected": expected_wrappers("trl.trainer.sft_trainer", "SFTTrainer.__init__"),
        "config_expected": expected_wrappers("trl.trainer.sft_config", "SFTConfig.__init__") if has_config else [],
    }


def check_patched_once(w: dict) -> None:
    """Every selected row exactly once (no double wrap, none missing); SFTTrainer.__init__ carries
    exactly one trlshim layer, the SFT pipeline."""
    assert "sft.pipeline" in w["trainer_expected"], w
    for kind in ("trainer", "config"):
        chain = w[kind]
        assert len(chain) == len(set(chain)), f"{kind} double-wrapped: {chain}"
        assert sorted(chain) == w[f"{kind}_expected"], f"{kind}: {chain} != {w[kind + '_expected']}"
    assert w["trainer"] == ["sft.pipeline"], w["trainer"]


def check_unpatched(w: dict) -> None:
    assert w["trainer"] == [] and w["config"] == [], w


_FIXTURES = {}


def fixtures():
    import helpers

    if not _FIXTURES:
        _FIXTURES["tok"] = helpers.make_tokenizer()
    return _FIXTURES["tok"]


def fed_lengths(trainer) -> list:
    """Lengths (padding removed) of the rows of the first training batch the model would get."""
    batch = next(iter(trainer.get_train_dataloader()))
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    if mask is None:
        return [ids.shape[1]] * ids.shape[0]
    return [int(m.sum()) for m in mask]


def legacy_call(trainer_cls, output_dir, max_len=8):
    """A TRL 0.7/0.8-style call: ``tokenizer=`` and SFT options as trainer kwargs.

    Returns ("ok", fed row lengths) or ("error", "ExceptionType: message").
    """
    import helpers
    from transformers import TrainingArguments

    try:
        trainer = trainer_cls(
            model=helpers.make_model(), args=TrainingArguments(**helpers.training_kwargs(output_dir)),
            train_dataset=helpers.text_dataset(n=8), tokenizer=fixtures(), dataset_text_field="text",
            max_seq_length=max_len,
        )
        return ["ok", fed_lengths(trainer)]
    except Exception as exc:  # the scenario reports it; the test decides
        return ["error", f"{type(exc).__name__}: {exc}"]


def positional_call(trainer_cls, output_dir, max_len=8):
    """The legacy call with its first six arguments passed by position (model, args, data_collator,
    train_dataset, eval_dataset, tokenizer), as 0.7-era scripts do."""
    import helpers
    from transformers import TrainingArguments

    try:
        trainer = trainer_cls(helpers.make_model(), TrainingArguments(**helpers.training_kwargs(output_dir)), None,
                              helpers.text_dataset(n=8), None, fixtures(), dataset_text_field="text",
                              max_seq_length=max_len)
        return ["ok", fed_lengths(trainer)]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]


def native_call(output_dir, max_len=8):
    """The installed release's own spelling (whatever it is), without trlshim's help."""
    import inspect

    import helpers
    from trl.trainer.sft_trainer import SFTTrainer

    params = inspect.signature(SFTTrainer.__init__).parameters
    kw = dict(model=helpers.make_model(), train_dataset=helpers.text_dataset(n=8))
    kw["processing_class" if "processing_class" in params else "tokenizer"] = fixtures()
    try:
        from trl.trainer.sft_config import SFTConfig
    except ImportError:  # TRL < 0.9: options on the trainer
        from transformers import TrainingArguments

        kw.update(args=TrainingArguments(**helpers.training_kwargs(output_dir)), dataset_text_field="text",
                  max_seq_length=max_len)
    else:
        fields = SFTConfig.__dataclass_fields__
        cfg = dict(helpers.training_kwargs(output_dir), dataset_text_field="text")
        cfg["max_length" if "max_length" in fields else "max_seq_length"] = max_len
        if "bf16" in fields and fields["bf16"].default is not False:
            cfg["bf16"] = False
        kw["args"] = SFTConfig(**cfg)
    try:
        return ["ok", fed_lengths(SFTTrainer(**kw))]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]
