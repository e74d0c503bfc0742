"""``trlshim migrate PATH... [--target X] [--diff | --write]``: rewrite legacy TRL calls in source files to
the spelling of the target release (default: the installed TRL), so the code runs without trlshim.

A LibCST codemod (comments and formatting survive; optional dependency: ``pip install trlshim[migrate]``)
driven by the runtime shim's tables (``rewrite.py``, ``target.py``). What it cannot rewrite with the same
meaning stays as it is, with a ``# trlshim: ...`` comment, and is listed in the report.

- plain run: lists the files that would change and the notes; changes nothing;
- ``--diff``: prints a unified diff, changes nothing; exit code 1 when changes are pending (a CI check);
- ``--write``: writes each changed file whole (a temporary file renamed over it), and refuses a file whose
  content changed since it was read.

Files that do not parse are reported and skipped (exit code 2 whatever the mode). A second run changes nothing.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import tempfile
from pathlib import Path

SKIP_DIRS = {".git", ".hg", ".venv", "venv", ".nox", ".tox", "__pycache__", "node_modules", "build", "dist"}
INSTALL = "pip install trlshim[migrate]"


@dataclasses.dataclass
class Result:
    path: Path
    before: str
    after: str = ""
    notes: list = dataclasses.field(default_factory=list)
    error: str = ""
    stat: tuple = ()

    @property
    def changed(self) -> bool:
        return not self.error and self.after != self.before


def _libcst():
    try:
        import libcst
    except ImportError:
        raise SystemExit(f"trlshim migrate needs LibCST, which is not installed: {INSTALL}") from None
    return libcst


def files(paths) -> list:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*.py")):
                if not SKIP_DIRS.intersection(f.relative_to(p).parts[:-1]):
                    out.append(f)
        else:
            out.append(p)
    return out


def _stat(path: Path) -> tuple:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def migrate_source(source: str, target) -> tuple:
    """``(new source, notes)`` for one module's text; raises libcst.ParserSyntaxError on bad input."""
    cst = _libcst()
    from libcst.codemod import CodemodContext
    from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor

    from .rewrite import Migrator

    module = cst.parse_module(source)
    context = CodemodContext()
    migrator = Migrator(target, context)
    new = cst.MetadataWrapper(module).visit(migrator)
    if new.deep_equals(module):  # nothing rewritten: never add an import
        return source, migrator.notes
    new = AddImportsVisitor(context).transform_module(new)
    new = RemoveImportsVisitor(context).transform_module(new)  # TrainingArguments, where no longer used
    return new.code, migrator.notes


def migrate_file(path: Path, target) -> Result:
    cst = _libcst()
    try:
        raw = path.read_bytes()
        stat = _stat(path)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Result(path, "", error=f"cannot read: {exc}")
    result = Result(path, text, stat=stat)
    try:
        result.after, result.notes = migrate_source(text, target)
    except cst.ParserSyntaxError as exc:
        result.error = f"cannot parse ({str(exc).splitlines()[0]}): skipped"
    return result


def write(result: Result) -> str:
    """Write ``result.after`` over the file, whole; '' or why it was refused."""
    try:
        if _stat(result.path) != result.stat or result.path.read_bytes().decode("utf-8") != result.before:
            return "changed on disk during the run: not written (run trlshim migrate again)"
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot re-read: {exc}"
    mode = result.path.stat().st_mode
    fd, tmp = tempfile.mkstemp(prefix=f".{result.path.name}.", suffix=".trlshim", dir=result.path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(result.after)
        os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, result.path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return ""


def run(paths, target_text=None, mode="report", out=None) -> int:
    """The ``trlshim migrate`` command. Returns the exit code."""
    from .target import resolve

    out = out or sys.stdout
    _libcst()
    target = resolve(target_text)
    pending = failed = 0
    for path in files(paths):
        r = migrate_file(path, target)
        if r.error:
            failed += 1
            print(f"{path}: {r.error}", file=out)
            continue
        for note in r.notes:
            print(f"{path}:{note.line}: {note.text}", file=out)
        if not r.changed:
            continue
        pending += 1
        if mode == "diff":
            out.writelines(difflib.unified_diff(r.before.splitlines(True), r.after.splitlines(True),
                                                f"a/{path}", f"b/{path}"))
        elif mode == "write":
            refused = write(r)
            if refused:
                failed += 1
                pending -= 1
                print(f"{path}: {refused}", file=out)
            else:
                print(f"{path}: rewritten for {target.label}", file=out)
        else:
            print(f"{path}: would be rewritten for {target.label} (--diff shows how, --write writes)", file=out)
    print(f"trlshim migrate ({target.label}): {pending} file(s) {'rewritten' if mode == 'write' else 'to rewrite'}"
          f"{f', {failed} skipped or refused' if failed else ''}", file=out)
    if failed:
        return 2
    return 1 if mode == "diff" and pending else 0
