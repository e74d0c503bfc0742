"""``unpatch()`` restores TRL exactly: every attribute any patch touched is ``is``-identical to the
object TRL had before trlshim touched it, injected names are gone, the owners' namespaces are
as before, and TRL behaves as stock (native call works; a legacy call fails exactly as stock
TRL fails, or works exactly as stock TRL does on releases that still accept it).

One fresh interpreter with ``TRLSHIM_DISABLE=1``: the originals are captured before any patch,
then patch / unpatch run in the same process."""
from __future__ import annotations

import pytest
from reliability_support import run_scenario

SCENARIO = """
    import importlib, importlib.util, tempfile, types
    from reliability_support import *
    import trlshim
    from trlshim import hooks, patches, registry, versions
    assert not hooks.applied()
    out = tempfile.mkdtemp()

    # every module a selected row targets, imported while TRL is stock
    rows = registry.selected(versions.trl_version())
    modules = {}
    for name in dict.fromkeys(p.module for p in rows):
        try:
            if importlib.util.find_spec(name) is None:
                continue
            modules[name] = importlib.import_module(name)
        except Exception:  # a trainer module this release cannot import (optional deps)
            continue
    import trl

    def owner_of(p):
        owner = modules[p.module]
        for part in p.attribute.split(".")[:-1]:
            owner = vars(owner).get(part) if isinstance(owner, type) else getattr(owner, part, None)
            if owner is None:
                return None
        return owner

    MISSING = "<missing>"
    targets = {}  # row name -> (owner, attribute, original)
    for p in rows:
        if p.module in modules:
            owner = owner_of(p)
            if owner is not None:
                name = p.attribute.split(".")[-1]
                targets[p.name] = (owner, name, vars(owner).get(name, MISSING))
    owners = {id(o): o for o, _, _ in targets.values()}
    for p in rows:  # FIELDS rows change the class they name (fields, annotations, alias properties)
        if p.kind == "fields" and p.name in targets and isinstance(targets[p.name][2], type):
            owners[id(targets[p.name][2])] = targets[p.name][2]
    snapshot = {k: dict(vars(o)) for k, o in owners.items()}

    def changed(n, o, a, orig):
        if isinstance(orig, type) and registry_kinds[n] == "fields":
            return any(vars(orig).get(k, MISSING) is not v for k, v in snapshot[id(orig)].items()) or \
                set(vars(orig)) != set(snapshot[id(orig)])
        return vars(o).get(a, MISSING) is not orig

    registry_kinds = {p.name: p.kind for p in rows}

    r = {"stock_legacy": legacy_call(trl.trainer.sft_trainer.SFTTrainer, out),
         "stock_native": native_call(out), "targets": sorted(targets)}

    trlshim.patch()
    r["applied"] = hooks.applied()
    r["changed_while_patched"] = sorted(n for n, (o, a, orig) in targets.items() if changed(n, o, a, orig))
    r["patched_legacy"] = legacy_call(trl.trainer.sft_trainer.SFTTrainer, out)
    r["injected_visible"] = {n: hasattr(targets[n][0], targets[n][1]) for n in targets if "legacy" in n}

    trlshim.unpatch()
    r["applied_after"] = hooks.applied()
    r["not_identical"] = sorted(n for n, (o, a, orig) in targets.items() if changed(n, o, a, orig))
    diffs = []
    for k, o in owners.items():
        now = dict(vars(o))
        before = snapshot[k]
        for key in set(now) | set(before):
            if key == "__slotnames__":  # copyreg's cache, filled by any copy.copy() of an instance
                continue
            if now.get(key, MISSING) is not before.get(key, MISSING):
                diffs.append(f"{getattr(o, '__name__', o)}.{key}")
    r["namespace_diffs"] = sorted(diffs)
    r["wrappers_after"] = [trainer_init_wrappers(), config_init_wrappers()]
    r["after_legacy"] = legacy_call(trl.trainer.sft_trainer.SFTTrainer, out)
    r["after_native"] = native_call(out)
    emit(r)
"""


@pytest.fixture(scope="module")
def result():
    return run_scenario(SCENARIO, env={"TRLSHIM_DISABLE": "1"})


def test_patch_changed_what_it_claims(result):
    # guards the identity check below: patching really replaced the targets
    assert "sft.pipeline" in result["applied"]
    assert set(result["applied"]) <= set(result["targets"])
    assert set(result["changed_while_patched"]) == set(result["applied"])
    assert result["patched_legacy"][0] == "ok" and max(result["patched_legacy"][1]) == 8
    assert all(result["injected_visible"].values())


def test_every_touched_attribute_is_the_original(result):
    assert result["applied_after"] == []
    assert result["not_identical"] == []
    assert result["namespace_diffs"] == []  # injected names gone, nothing else left behind
    assert result["wrappers_after"] == [[], []]


def test_trl_behaves_as_stock_after_unpatch(result):
    assert result["stock_native"][0] == "ok", result["stock_native"]
    assert result["after_native"] == result["stock_native"]
    # the legacy call: identical outcome to stock TRL (same exception type and message, or the
    # same rows on releases that still accept the TRL 0.7 spelling)
    assert result["after_legacy"] == result["stock_legacy"]


def test_stock_rejects_legacy_call_where_trl_removed_it(result):
    from packaging.version import Version

    from trlshim.versions import trl_version

    if trl_version() >= Version("0.13"):  # tokenizer= gone in 0.16, max_seq_length on the trainer in 0.13
        assert result["after_legacy"][0] == "error"
        assert result["after_legacy"][1].startswith("TypeError:")
        # stock TRL names the first legacy argument it meets
        assert any(n in result["after_legacy"][1] for n in ("tokenizer", "max_seq_length", "dataset_text_field"))
    else:
        assert result["after_legacy"][0] == "ok"
