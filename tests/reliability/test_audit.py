"""Safety audit: with a ``sys.addaudithook`` installed before ``import trlshim``, importing,
patching, building a trainer through the shim and training 2 steps, no event *caused by
trlshim* is an ``exec``/``compile`` of source, a ``sys.path`` change, a socket, a subprocess,
or a file write outside the trainer's output directory.

Who caused an event: walk the Python stack from the innermost frame outward, skipping the
standard library and the frozen import machinery; the first remaining frame is responsible.
Only events whose responsible frame lies inside the trlshim package count. Events raised by
the import machinery itself (executing an imported module's code, writing its bytecode cache)
and by the standard library's own code generators at class creation (dataclasses,
namedtuple) are the interpreter's, not trlshim's. A canary (code compiled with a filename inside
the trlshim package) proves each category is detected. In a subprocess: audit hooks cannot
be removed."""
from __future__ import annotations

import pytest
from reliability_support import run_scenario

SCENARIO = r"""
    import importlib.util, os, sys, sysconfig, tempfile, threading

    SHIM_DIR = os.path.dirname(importlib.util.find_spec("trlshim").origin) + os.sep
    # the standard library only (a venv's platstdlib is the folder that holds its site-packages)
    STDLIB = tuple({os.path.realpath(p) + os.sep for p in (sysconfig.get_paths()["stdlib"], os.path.dirname(os.__file__))})
    OUT = os.path.realpath(tempfile.mkdtemp(prefix="trlshim-audit-out-")) + os.sep
    GENERATORS = (os.sep + "dataclasses.py", os.sep + "collections" + os.sep + "__init__.py")
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    PATH_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link",
                   "os.chmod", "os.chown", "os.utime", "shutil.copyfile", "shutil.copytree", "shutil.move",
                   "shutil.rmtree", "shutil.make_archive")
    PROC_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "pty.spawn")
    findings = []
    attributed = []  # every watched event trlshim was responsible for, allowed or not
    local = threading.local()
    HOOK_FILE = "<string>"

    def _stdlib(filename):
        if filename.startswith("<frozen"):
            return True
        real = os.path.realpath(filename)
        return real.startswith(STDLIB) and "site-packages" not in real and "dist-packages" not in real

    def responsible():
        # (responsible frame's file:line or None, skipped an import frame, skipped a code generator)
        f = sys._getframe(2)
        importing = generator = False
        while f is not None:
            name = f.f_code.co_filename
            if f.f_code.co_name in ("hook", "responsible", "_record_path", "method") and name == HOOK_FILE:
                f = f.f_back
                continue
            if not _stdlib(name):
                return name, f.f_lineno, importing, generator
            if name.startswith("<frozen importlib"):
                importing = True
            if name.endswith(GENERATORS):
                generator = True
            f = f.f_back
        return None, 0, importing, generator

    def is_write(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str) and mode:
                return any(c in mode for c in "wax+"), path
            return bool((flags or 0) & WRITE_FLAGS), path
        return True, args[0] if args else None

    def outside_out(path):
        if isinstance(path, int) or path is None:
            return False  # an already open descriptor: its opening was audited
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return not (os.path.realpath(path) + os.sep).startswith(OUT)

    def hook(event, args):
        if getattr(local, "busy", False):
            return
        if not (event in ("open", "exec", "compile") or event in PATH_EVENTS or event in PROC_EVENTS
                or event.startswith("socket.")):
            return
        local.busy = True
        try:
            name, line, importing, generator = responsible()
            if name is None or not name.startswith(SHIM_DIR):
                return
            attributed.append(event)
            if importing:
                return  # the import machinery: module code execution, bytecode cache
            where = f"{os.path.relpath(name, SHIM_DIR)}:{line}"
            if event in ("exec", "compile"):
                if not generator:
                    findings.append(("exec/compile", event, where))
            elif event.startswith("socket."):
                findings.append(("socket", event, where))
            elif event in PROC_EVENTS:
                findings.append(("subprocess", event, where))
            else:
                write, path = is_write(event, args)
                if write and outside_out(path):
                    findings.append(("write", f"{event} {path!r}", where))
        finally:
            local.busy = False

    class AuditedPath(list):  # sys.path mutations, attributed the same way
        def _record_path(self, op):
            if getattr(local, "busy", False):
                return
            local.busy = True
            try:
                name, line, importing, _ = responsible()
                if name and name.startswith(SHIM_DIR):
                    findings.append(("sys.path", op, f"{os.path.relpath(name, SHIM_DIR)}:{line}"))
            finally:
                local.busy = False
    for _op in ("append", "insert", "extend", "remove", "pop", "clear", "__setitem__", "__delitem__", "__iadd__"):
        def _make(op):
            base = getattr(list, op)
            def method(self, *a):
                self._record_path(op)
                return base(self, *a)
            method.__name__ = op
            return method
        setattr(AuditedPath, _op, _make(_op))

    sys.path = AuditedPath(sys.path)
    sys.addaudithook(hook)

    # --- canary: the same detector must flag each category from a frame inside trlshim
    scratch = tempfile.mkdtemp(prefix="trlshim-audit-canary-")
    canary = compile(
        "import os, socket, subprocess, sys\n"
        "def canary(scratch):\n"
        "    open(os.path.join(scratch, 'x'), 'w').close()\n"
        "    exec('1')\n"
        "    compile('1', '<canary>', 'eval')\n"
        "    sys.path.append(scratch); sys.path.remove(scratch)\n"
        "    socket.socket().close()\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], check=True)\n",
        SHIM_DIR + "_audit_canary.py", "exec")
    ns = {}
    exec(canary, ns)
    ns["canary"](scratch)
    canary_kinds = sorted({k for k, _, _ in findings})
    findings.clear()
    attributed.clear()

    # --- the real run: import, patch, build through the shim (legacy call), train 2 steps
    import trlshim
    import trl
    from reliability_support import emit, fixtures
    import helpers
    from transformers import TrainingArguments
    trainer = trl.SFTTrainer(
        model=helpers.make_model(), args=TrainingArguments(**helpers.training_kwargs(OUT, max_steps=2)),
        train_dataset=helpers.text_dataset(n=8), tokenizer=fixtures(), dataset_text_field="text",
        max_seq_length=8)
    trainer.train()
    trlshim.SFTConfig  # the stable names are built lazily
    trlshim.unpatch()
    trlshim.patch()
    emit({"canary": canary_kinds, "findings": findings, "steps": trainer.state.global_step,
          "patched": trlshim.is_patched(),
          "attributed": sorted(set(attributed))})
"""


@pytest.fixture(scope="module")
def audit():
    return run_scenario(SCENARIO)


def test_detector_sees_every_category(audit):
    assert audit["canary"] == ["exec/compile", "socket", "subprocess", "sys.path", "write"]


def test_trlshim_causes_no_unsafe_event(audit):
    assert audit["steps"] == 2 and audit["patched"] is True
    assert audit["findings"] == []
    # attribution works on trlshim's real code too (e.g. reading package metadata): not vacuous
    assert "open" in audit["attributed"]
