"""Trainers TRL moved to trl.experimental or deleted: old import paths give the same class, or an
ImportError naming the release that removed it and the replacement (patches/common/moved_trainers.py)."""
from __future__ import annotations

import importlib
import sys

import pytest

from trlshim import report
from trlshim.versions import trl_in


def _import(module, name):
    return getattr(importlib.import_module(module), name)


OLD_PATHS = {  # name -> every path old code imported it from
    "ORPOTrainer": ("trl", "trl.trainer", "trl.trainer.orpo_trainer"),
    "ORPOConfig": ("trl", "trl.trainer", "trl.trainer.orpo_config"),
    "CPOTrainer": ("trl", "trl.trainer", "trl.trainer.cpo_trainer"),
    "CPOConfig": ("trl", "trl.trainer", "trl.trainer.cpo_config"),
    "KTOTrainer": ("trl", "trl.trainer", "trl.trainer.kto_trainer"),
    "KTOConfig": ("trl", "trl.trainer", "trl.trainer.kto_config"),
    "RewardTrainer": ("trl", "trl.trainer", "trl.trainer.reward_trainer"),
    "RewardConfig": ("trl", "trl.trainer", "trl.trainer.reward_config"),
    "OnlineDPOTrainer": ("trl", "trl.trainer", "trl.trainer.online_dpo_trainer"),
    "GKDTrainer": ("trl", "trl.trainer", "trl.trainer.gkd_trainer"),
}
# Where the same class lives on the installed release (>= 0.29: trl.experimental)
HOMES = {
    "ORPO": "trl.experimental.orpo", "CPO": "trl.experimental.cpo", "OnlineDPO": "trl.experimental.online_dpo",
    "GKD": "trl.experimental.gkd",
}


def _existed(name):
    """Whether the installed release ever had ``name`` (the trainers were added at different releases)."""
    added = {"ORPO": "0.8.2", "CPO": "0.8.2", "KTO": "0.8", "Reward": "0.7", "OnlineDPO": "0.10", "GKD": "0.11"}
    stem = name.removesuffix("Trainer").removesuffix("Config")
    return trl_in(f">={added[stem]}")


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_every_old_path_imports_one_class(name):
    if not _existed(name):
        pytest.skip(f"{name} does not exist on this release")
    objs = [_import(path, name) for path in OLD_PATHS[name]]
    assert all(o is objs[0] for o in objs), [getattr(o, "__module__", o) for o in objs]
    assert isinstance(objs[0], type) and objs[0].__name__ == name
    stem = name.removesuffix("Trainer").removesuffix("Config")
    if stem in HOMES and trl_in(">=0.29"):
        assert objs[0] is _import(HOMES[stem], name)  # the same class, not a copy or a stub
        assert any(f"-> {HOMES[stem]}" in m for m in report.applied())


def test_ppov2_is_ppo_where_ppo_is_ppov2_renamed():
    if trl_in("<0.10") or trl_in(">=1.13"):
        pytest.skip("no PPOv2 exported from trl here (0.9.x keeps it in trl.trainer.ppov2_trainer only; deleted "
                    "with PPO at 1.13)")
    trainer = _import("trl", "PPOv2Trainer")
    assert _import("trl.trainer", "PPOv2Trainer") is trainer
    assert _import("trl.trainer.ppov2_trainer", "PPOv2Trainer") is trainer
    config = _import("trl", "PPOv2Config")
    if trl_in(">=0.13"):  # renamed at 0.12, alias removed at 0.13: the same class under its new name
        home = "trl.experimental.ppo" if trl_in(">=0.29") else "trl"
        assert trainer is _import(home, "PPOTrainer")
        assert config is _import(home, "PPOConfig")
        assert _import("trl.trainer.ppov2_config", "PPOv2Config") is config


def test_ppo_moved_then_deleted():
    if trl_in("<0.29"):
        assert _import("trl", "PPOTrainer") is _import("trl.trainer.ppo_trainer", "PPOTrainer")
        return
    if trl_in("<1.13"):
        assert _import("trl", "PPOTrainer") is _import("trl.experimental.ppo", "PPOTrainer")
        return
    removed = r"removed from TRL in release 1\.13 .*GRPOTrainer"  # the import statements old code writes
    with pytest.raises(ImportError, match=removed):
        from trl import PPOTrainer  # noqa: F401
    with pytest.raises(ImportError, match=removed):
        from trl.trainer import PPOConfig  # noqa: F401
    with pytest.raises(ImportError, match=removed):
        from trl.trainer.ppo_trainer import PPOTrainer  # noqa: F401,F811
    with pytest.raises(ImportError, match=removed):
        from trl import PPOv2Trainer  # noqa: F401


def test_deleted_trainers_name_release_and_replacement():
    if trl_in("<0.24"):
        pytest.skip("DDPO / IterativeSFT still exist (deleted at 0.24)")
    with pytest.raises(ImportError, match=r"IterativeSFTTrainer was removed from TRL in release 0\.24.*SFTTrainer"):
        from trl import IterativeSFTTrainer  # noqa: F401
    with pytest.raises(ImportError, match=r"DDPOConfig was removed from TRL in release 0\.24"):
        from trl.trainer.ddpo_config import DDPOConfig  # noqa: F401


def test_probing_for_a_deleted_trainer_is_false_as_on_stock_trl():
    """Libraries probe with hasattr/getattr(..., None): a deleted trainer answers False / the default there (an
    AttributeError carrying the same message), and the ImportError only for an import statement."""
    import trl

    if trl_in("<0.24"):
        pytest.skip("IterativeSFT still exists (deleted at 0.24)")
    assert hasattr(trl, "IterativeSFTTrainer") is False
    assert getattr(trl, "IterativeSFTTrainer", None) is None
    with pytest.raises(AttributeError):
        trl.IterativeSFTTrainer  # noqa: B018


def test_unknown_names_still_fail_as_before():
    import trl

    with pytest.raises(ImportError, match="cannot import name"):
        from trl import NoSuchTrainer  # noqa: F401
    assert not hasattr(trl, "NoSuchTrainer")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("trl.trainer.no_such_trainer")


def test_unpatch_removes_the_legacy_modules():
    import trlshim

    if trl_in("<0.29"):
        pytest.skip("the old module paths exist on this release")
    importlib.import_module("trl.trainer.orpo_trainer")
    trlshim.unpatch()
    try:
        assert "trl.trainer.orpo_trainer" not in sys.modules
        import trl

        assert "__getattr__" not in vars(trl)
        with pytest.raises(ImportError):
            from trl import ORPOTrainer  # noqa: F401
    finally:
        trlshim.patch()
    assert _import("trl.trainer.orpo_trainer", "ORPOTrainer") is _import("trl.experimental.orpo", "ORPOTrainer")
