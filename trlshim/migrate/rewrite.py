"""The LibCST transformer of ``trlshim migrate``: legacy TRL calls -> the target release's spelling.

Every decision reads the runtime tables (through ``target.Target`` and the option tables of
``translate`` / ``patches.dpo.options``). What cannot keep its meaning is left as it is, with a
``# trlshim: ...`` comment above the statement (and a note in the report).
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Optional

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor
from libcst.metadata import PositionProvider

from ..patches.common import moved_trainers, removed_names
from ..patches.common.model_init_kwargs import read_spelling
from ..patches.dpo.options import ADVICE, DPO_OPTIONS, DROPPED_AT, EMULATED, RENAMED
from ..patches.sft.legacy_datasets import HONOURED
from ..translate import NO_OPS, SFT_OPTIONS, rename, spellings
from .target import Target

MARK = "# trlshim: "
TRAINERS = {"SFTTrainer": ("sft", "SFTConfig", SFT_OPTIONS + tuple(NO_OPS)),
            "DPOTrainer": ("dpo", "DPOConfig", DPO_OPTIONS)}
CONFIGS = {"SFTConfig": "sft", "DPOConfig": "dpo", "TrainingArguments": None}
DICT_OPTIONS = ("model_init_kwargs", "ref_model_init_kwargs")
TRL_MODULES = ("trl", "trl.trainer")


@dataclasses.dataclass
class Note:
    line: int
    text: str


def _kw(call: cst.Call) -> dict:
    return {a.keyword.value: a for a in call.args if a.keyword is not None}


def _positional(call: cst.Call) -> list:
    return [a for a in call.args if a.keyword is None and not a.star]


def _literal(node):
    try:
        return ast.literal_eval(cst.Module([]).code_for_node(node))
    except Exception:  # noqa: BLE001 - not a literal
        return dataclasses.MISSING


_EQUAL = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))


def _with_keyword(arg: cst.Arg, name: str) -> cst.Arg:
    return arg.with_changes(keyword=cst.Name(name), equal=arg.equal if arg.keyword is not None else _EQUAL)


def _string(text: str) -> cst.SimpleString:
    return cst.SimpleString('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


def _new_arg(name: str, value: cst.BaseExpression) -> cst.Arg:
    return cst.Arg(value=value, keyword=cst.Name(name), equal=_EQUAL)


def _comma_fixed(args: list, original=()) -> list:
    """Each argument but the last keeps (or gets) a comma; the last takes the original last argument's comma
    and trailing whitespace (a trailing comma and the line break before ``)`` survive)."""
    out = []
    for i, a in enumerate(args):
        if i < len(args) - 1 and not isinstance(a.comma, cst.Comma):
            a = a.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        out.append(a)
    if out and original and out[-1] is not original[-1]:
        last = original[-1]
        out[-1] = out[-1].with_changes(comma=last.comma, whitespace_after_arg=last.whitespace_after_arg)
    return out


def _returns(value, body) -> Optional[str]:
    """'batched' for a list, 'example' for a string, else None (a name: what the function body assigns it)."""
    if isinstance(value, (cst.List, cst.ListComp)):
        return "batched"
    if isinstance(value, (cst.SimpleString, cst.FormattedString, cst.ConcatenatedString)):
        return "example"
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
        return _returns(value.left, body) or _returns(value.right, body)
    if isinstance(value, cst.Name) and body is not None:
        found = {_returns(a.value, None) for a in _all(body, cst.Assign)
                 if any(isinstance(t.target, cst.Name) and t.target.value == value.value for t in a.targets)}
        return found.pop() if len(found) == 1 else None
    return None


def _all(node, kind) -> list:
    out = []

    class _Collect(cst.CSTVisitor):
        def on_visit(self, n):
            if isinstance(n, kind):
                out.append(n)
            return True

    node.visit(_Collect())
    return out


def _shape(func, functions: dict) -> Optional[str]:
    """The shape of a ``formatting_func`` from its source, or None when it cannot be read."""
    if isinstance(func, cst.Lambda):
        return _returns(func.body, None)
    if isinstance(func, cst.Name) and func.value in functions:
        fdef = functions[func.value]
        shapes = {_returns(r.value, fdef.body) for r in _all(fdef.body, cst.Return)}
        return shapes.pop() if len(shapes) == 1 else None
    return None


class Migrator(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, target: Target, context: CodemodContext):
        super().__init__()
        self.t = target
        self.context = context
        self.names = {}  # local name -> (module, imported name)
        self.notes: list = []
        self._pending: list = [[]]  # per enclosing statement: the comments to put above it
        self._extra: list = [[]]  # per enclosing statement: import statements to put after it
        self.functions = {}  # name -> FunctionDef (to tell a formatting_func's shape)

    # --- bookkeeping ------------------------------------------------------------------------------------

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions[node.name.value] = node

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = cst.Module([]).code_for_node(node.module)
        for alias in node.names:
            name = cst.Module([]).code_for_node(alias.name)
            local = alias.asname.name.value if alias.asname else name
            self.names[local] = (module, name)

    def _note(self, node, text: str) -> None:
        line = self.get_metadata(PositionProvider, node).start.line
        self.notes.append(Note(line, text))
        self._pending[-1].append(text)

    def _kind(self, func) -> Optional[str]:
        """The TRL / transformers class a call's function names (through ``from x import y as z``)."""
        if isinstance(func, cst.Name):
            module, name = self.names.get(func.value, (None, func.value))
            if module is not None and not (module.startswith("trl") or module.startswith("transformers")):
                return None
            return name
        if isinstance(func, cst.Attribute) and isinstance(func.value, (cst.Name, cst.Attribute)):
            base = cst.Module([]).code_for_node(func.value)
            if base.split(".")[0] in ("trl", "transformers"):
                return func.attr.value
        return None

    def _class_ref(self, func, cls_name: str):
        """An expression naming ``cls_name`` in the style the call used (``trl.X`` or an imported name)."""
        if isinstance(func, cst.Attribute) and cst.Module([]).code_for_node(func.value).split(".")[0] == "trl":
            return cst.Attribute(value=func.value, attr=cst.Name(cls_name))
        if isinstance(func, cst.Attribute):
            return cst.Attribute(value=cst.Name("trl"), attr=cst.Name(cls_name))  # ... from transformers.X
        AddImportsVisitor.add_needed_import(self.context, "trl", cls_name)
        return cst.Name(cls_name)

    # --- statements: attach the comments ----------------------------------------------------------------

    STATEMENTS = (cst.SimpleStatementLine, cst.BaseCompoundStatement)

    def on_visit(self, node) -> bool:
        if isinstance(node, self.STATEMENTS):
            self._pending.append([])
            self._extra.append([])
        return super().on_visit(node)

    def on_leave(self, original, updated):
        updated = super().on_leave(original, updated)
        if not isinstance(original, self.STATEMENTS):
            return updated
        texts, extra = self._pending.pop(), self._extra.pop()
        if extra and isinstance(updated, cst.SimpleStatementLine):
            after = [cst.SimpleStatementLine(body=[imp]) for imp in extra]
            return cst.FlattenSentinel([self._commented(updated, texts), *after])
        return self._commented(updated, texts)

    def _commented(self, updated, texts):
        """``updated`` with a ``# trlshim:`` line above it per text (the comments a call in a compound
        statement's header gets go above that statement); a comment already there is not added again."""
        if not texts or not isinstance(updated, self.STATEMENTS):
            return updated
        have = {ln.comment.value for ln in updated.leading_lines if ln.comment is not None}
        lines = list(updated.leading_lines)
        for text in texts:
            comment = MARK + text
            if comment not in have:
                lines.append(cst.EmptyLine(comment=cst.Comment(comment)))
                have.add(comment)
        return updated.with_changes(leading_lines=lines)

    # --- imports -----------------------------------------------------------------------------------------

    def leave_ImportFrom(self, original, updated):
        """``from trl import ORPOTrainer`` -> its home in the target; names that stay keep the statement, the
        moved ones get a statement of their own right after it."""
        if updated.module is None or isinstance(updated.names, cst.ImportStar) or updated.relative:
            return updated
        module = cst.Module([]).code_for_node(updated.module)
        kept, moved = [], {}
        for alias in updated.names:
            name = cst.Module([]).code_for_node(alias.name)
            found = self._moved_import(module, name, original)
            if found is None:
                kept.append(alias)
                continue
            home, new_name = found
            if new_name != name:
                alias = alias.with_changes(name=cst.Name(new_name), asname=alias.asname or cst.AsName(
                    name=cst.Name(name), whitespace_before_as=cst.SimpleWhitespace(" "),
                    whitespace_after_as=cst.SimpleWhitespace(" ")))
            moved.setdefault(home, []).append(alias.with_changes(comma=cst.MaybeSentinel.DEFAULT))
        if not moved:
            return updated
        homes = list(moved)
        if not kept:  # the statement itself moves (to the first home)
            first = homes.pop(0)
            updated = updated.with_changes(module=cst.parse_expression(first), names=_comma_fixed(moved[first]),
                                           lpar=None, rpar=None)
        else:
            kept = [a if isinstance(a.comma, cst.Comma) else a.with_changes(comma=cst.Comma(
                whitespace_after=cst.SimpleWhitespace(" "))) for a in kept]
            kept[-1] = kept[-1].with_changes(comma=updated.names[-1].comma)  # the layout before ``)`` survives
            updated = updated.with_changes(names=kept)
        for home in homes:
            self._extra[-1].append(cst.ImportFrom(module=cst.parse_expression(home), names=_comma_fixed(moved[home])))
        return updated

    def _moved_import(self, module: str, name: str, node):
        """(module to import from, name there) on the target, or None when the import stays."""
        found = moved_trainers._BY_NAME.get(name)
        if found is not None and module in TRL_MODULES:
            entry, new_name = found
            if entry.is_removed(self.t.version):
                self._note(node, f"{name} was removed in TRL {entry.removed}: {entry.replacement}")
                return None
            home = entry.home(self.t.version)
            if home is not None and home != module:
                return home, new_name
            return None
        virtual = {m: spec for m, _, _, spec in removed_names.VIRTUAL_MODULES}
        virtual.update({sub: virtual[m] for m, subs in removed_names.SUBMODULES.items() for _, sub in subs})
        for row in removed_names.NAMES:
            if row.name != name or module not in row.paths:
                continue
            missing = any(self.t.contains(s) for s in row.versions) if row.versions else (
                module in virtual and self.t.contains(virtual[module]))
            if not missing:
                continue
            kind, _, what = row.provider.partition(":")
            if kind == "alias":
                home, _, attr = what.rpartition(".")
                if self.t.provided(home, attr):  # the new home has it only through trlshim (SftScriptArguments)
                    self._note(node, f"{self.t.label} has no {module}.{name} nor {home}.{attr} (trlshim provides "
                                     "its own implementation): keep `import trlshim`, or replace it")
                    return None
                return home, attr
            if kind == "removed":
                self._note(node, what)
            else:
                self._note(node, f"{self.t.label} has no {module}.{name} (trlshim provides its own "
                                 "implementation): keep `import trlshim`, or replace it")
            return None
        if module.split(".")[0] == "trl" and self.t.provided(module, name):  # e.g. DataCollatorForCompletionOnlyLM
            self._note(node, f"{self.t.label} has no {module}.{name} (trlshim provides its own implementation): "
                             "keep `import trlshim`, or replace it")
        return None

    # --- calls -------------------------------------------------------------------------------------------

    def leave_Call(self, original, updated):
        kind = self._kind(updated.func)
        if kind in TRAINERS:
            return self._trainer(original, updated, kind)
        if kind in CONFIGS and kind != "TrainingArguments":
            return self._config(original, updated, kind)
        return updated

    def _dict_keys(self, node, arg: cst.Arg, owner: str) -> cst.Arg:
        """``model_init_kwargs={"torch_dtype": ...}``: keys in the spelling the target reads."""
        if not isinstance(arg.value, cst.Dict):
            return arg
        keys = [_literal(e.key) for e in arg.value.elements if isinstance(e, cst.DictElement)]
        elements = []
        for e in arg.value.elements:
            key = _literal(e.key) if isinstance(e, cst.DictElement) else None
            wanted = read_spelling(key, self.t.version) if isinstance(key, str) else None
            if wanted is not None and wanted != key:
                if wanted in keys:
                    self._note(node, f"{owner}[{key!r}] and [{wanted!r}] are one option; {self.t.label} reads "
                                     f"{wanted!r}: keep one")
                    return arg
                quote = e.key.quote if isinstance(e.key, cst.SimpleString) else '"'
                e = e.with_changes(key=cst.SimpleString(f"{quote}{wanted}{quote}"))
            elements.append(e)
        return arg.with_changes(value=arg.value.with_changes(elements=elements))

    def _config(self, original, updated, cls_name: str):
        """``SFTConfig(...)`` / ``DPOConfig(...)``: field names and dict keys of the target."""
        trainer = CONFIGS[cls_name]
        if not self.t.native_config(cls_name):  # nothing in TRL to rewrite to
            self._note(original, f"{self.t.label} has no {cls_name} (trlshim provides one): keep `import trlshim`, "
                                 f"or pass its fields to the trainer and TrainingArguments")
            return updated
        args, changed = [], False
        for a in updated.args:
            new = self._placed(original, a, trainer, cls_name)
            changed |= new is not a
            if new is not None:
                args.append(new)
        return updated.with_changes(args=_comma_fixed(args, updated.args)) if changed else updated

    def _placed(self, node, arg: cst.Arg, trainer: str, cls_name: str):
        """``arg`` spelled for the target's ``cls_name`` (the same object when nothing changes); None to drop it;
        a note (and ``arg`` unchanged) when it has no place there."""
        if arg.keyword is None:
            return arg
        name = arg.keyword.value
        if name in DICT_OPTIONS:
            return self._dict_keys(node, arg, f"{cls_name}.{name}")
        if trainer == "sft" and name == "dataset_kwargs" and self._legacy_dataset_kwargs(arg):
            self._note(node, f"{cls_name}(dataset_kwargs=) keys {list(HONOURED)} are ignored by {self.t.label}; "
                             "only trlshim applies them (keep `import trlshim`, or tokenize the texts yourself)")
            return arg
        if trainer == "sft" and name == "packing" and _literal(arg.value) is not False and \
                self.t.step("sft.packing.eos_between"):
            self._note(node, f"{cls_name}(packing=) on {self.t.label} packs plain texts with nothing between them; "
                             "only trlshim separates them by EOS as every other release does (keep `import trlshim`)")
        fields = self.t.config_fields(cls_name)
        options = SFT_OPTIONS + tuple(NO_OPS) if trainer == "sft" else DPO_OPTIONS
        if name not in options and name not in fields and len(spellings(name)) == 1 and \
                name not in self.t.known_config_fields(cls_name):
            return arg  # a TrainingArguments field (or one the tables do not follow)
        target = rename(name, fields)
        if target is None and name in RENAMED and trainer == "dpo":
            target = RENAMED[name] if RENAMED[name] in fields else None
        if target is not None:
            return arg if target == name else _with_keyword(arg, target)
        value = _literal(arg.value)
        if trainer == "sft" and name in NO_OPS:
            return None
        if trainer == "dpo" and name in DROPPED_AT and (DROPPED_AT[name] is ... or value in DROPPED_AT[name]):
            return None
        if trainer == "dpo" and (name in EMULATED or RENAMED.get(name) in EMULATED):
            self._note(node, f"{cls_name}({name}=) was removed in {self.t.label}; only trlshim applies it "
                             "(keep `import trlshim`, or truncate the dataset yourself)")
        elif name in self.t.known_config_fields(cls_name) and name not in ADVICE:
            self._note(node, f"{cls_name}({name}=) is a field of other releases, not of {self.t.label}; only trlshim "
                             "applies it (keep `import trlshim`, or remove it knowing the training differs)")
        else:
            advice = ADVICE.get(name, "remove it, or keep `import trlshim`")
            self._note(node, f"{cls_name}({name}=) has no place in {self.t.label}: {advice}")
        return arg

    def _formatting(self, node, kw: dict) -> None:
        """A ``formatting_func`` keeps its meaning without trlshim only where the target calls it in the shape it
        has (read from its source: returns a list -> batched, a string -> per example): TRL < 0.15 calls it
        batched unpacked, per example packed, and may ignore it next to ``dataset_text_field`` (trlshim applies
        it itself there: ``sft.formatting.legacy``); TRL >= 0.15 calls it per example (batched only detected,
        or as a fallback: trlshim adapts it). A shape it cannot read is refused."""
        func = kw["formatting_func"].value
        if isinstance(func, cst.Name) and func.value == "None":
            return
        shape = _shape(func, self.functions)
        config = kw["args"].value if "args" in kw and isinstance(kw["args"].value, cst.Call) else None
        options = {**(_kw(config) if config is not None else {}), **kw}
        if self.t.step("sft.formatting.legacy"):
            packing = _literal(options["packing"].value) if "packing" in options else False
            wanted = {True: "example", False: "batched"}.get(packing) if isinstance(packing, bool) else None
            ok = shape is not None and shape == wanted and "dataset_text_field" not in options
        else:
            ok = shape == "example"
        if not ok:
            what = {"batched": "a batched", "example": "a per-example"}.get(shape, "an unreadable")
            self._note(node, f"formatting_func ({what} function) is called in another shape, or not at all, by "
                             f"{self.t.label} here; only trlshim applies it as written (keep `import trlshim`, or "
                             "format the dataset yourself)")

    def _legacy_dataset_kwargs(self, arg: cst.Arg) -> bool:
        """``dataset_kwargs`` with a key the target ignores and trlshim honours (``sft.dataset_kwargs``); a value
        the codemod cannot read counts as having one."""
        if not self.t.step("sft.dataset_kwargs"):
            return False
        value = _literal(arg.value)
        return not isinstance(value, dict) or any(k in value for k in HONOURED)

    def _trainer(self, original, updated, kind: str):
        trainer, cls_name, options = TRAINERS[kind]
        kw = _kw(updated)
        positional = _positional(updated)
        args_list = list(updated.args)
        if trainer == "sft" and "formatting_func" in kw:
            self._formatting(original, kw)
        # tokenizer= <-> processing_class=
        for name in ("tokenizer", "processing_class"):
            if name in kw:
                wanted = self.t.trainer_spelling(name)
                if wanted != name and wanted not in kw:
                    i = args_list.index(kw[name])
                    args_list[i] = _with_keyword(kw[name], wanted)
        beta_positional = None
        if trainer == "dpo" and len(positional) == 3 and isinstance(_literal(positional[2].value), (int, float)):
            beta_positional = positional[2]  # DPOTrainer(model, ref_model, beta) of TRL 0.7-0.12
        moving = [a for a in args_list if a.keyword is not None and a.keyword.value in options]
        if beta_positional is not None:
            moving.insert(0, _with_keyword(beta_positional, "beta"))
        moving += [a for a in args_list if a.keyword is not None and a.keyword.value in DICT_OPTIONS
                   and a not in moving]
        if not moving:
            return updated.with_changes(args=args_list)
        if not self.t.native_config(cls_name):  # trainer keywords there: only their spellings change
            placed = []
            for a in args_list:
                new = self._placed(original, a, trainer, cls_name) if a in moving else a
                if new is not None:
                    placed.append(new)
            return updated.with_changes(args=_comma_fixed(placed, updated.args))
        names = [a.keyword.value for a in moving]
        if trainer == "dpo" and "max_length" in names and "max_prompt_length" in names and \
                "max_completion_length" not in names and self.t.fact("dpo", "legacy_truncation") is not None:
            self._note(original, f"{kind}(max_length=, max_prompt_length=) truncates with the TRL <= 0.11 rule "
                                 f"(prompt cut only when prompt + completion exceed max_length); no DPOConfig of "
                                 f"{self.t.label} does that: keep `import trlshim`, or set max_prompt_length/"
                                 "max_completion_length on a DPOConfig knowing the cut differs")
            return updated.with_changes(args=args_list)
        args_arg = kw.get("args")
        if args_arg is None and len(positional) >= 2 and beta_positional is None and \
                (trainer == "sft" or len(positional) == 3):
            args_arg = positional[1] if trainer == "sft" else positional[2]
        if args_arg is not None and not (isinstance(args_arg.value, cst.Call) and
                                         self._kind(args_arg.value.func) in CONFIGS):
            shown = ", ".join(f"{n}=" for n in names)
            self._note(original, f"move {shown} from {kind}(...) onto the {cls_name} passed as args "
                                 f"({self.t.label} takes them only there); trlshim cannot follow "
                                 f"`{cst.Module([]).code_for_node(args_arg.value)}`")
            return updated.with_changes(args=args_list)
        placed = []
        for a in moving:
            new = self._placed(original, a.with_changes(comma=cst.MaybeSentinel.DEFAULT), trainer, cls_name)
            if new is not None:
                placed.append(new)
        if args_arg is not None:
            config = args_arg.value
            existing = [a for a in config.args
                        if not (a.keyword is not None and any(a.keyword.value in spellings(p.keyword.value)
                                                              for p in placed))]  # trainer kwargs win
            func = config.func
            if self._kind(func) == "TrainingArguments":
                if isinstance(func, cst.Name) and func.value in self.names:  # dropped if nothing else uses it
                    module, name = self.names[func.value]
                    RemoveImportsVisitor.remove_unused_import(
                        self.context, module, name, func.value if func.value != name else None)
                func = self._class_ref(updated.func, cls_name)
            new_config = config.with_changes(func=func, args=_comma_fixed(existing + placed, config.args))
            new_args_arg = args_arg.with_changes(value=new_config)
        else:
            new_args_arg = _new_arg("args", cst.Call(
                func=self._class_ref(updated.func, cls_name),
                args=_comma_fixed([_new_arg("output_dir", self._default_output_dir(trainer, kw, positional))]
                                  + placed)))
        out, inserted = [], False
        for a in args_list:
            if a is args_arg:
                out.append(new_args_arg.with_changes(comma=a.comma))
                inserted = True
            elif a in moving or a is beta_positional:
                if not inserted and args_arg is None:
                    out.append(new_args_arg.with_changes(comma=a.comma))
                    inserted = True
            else:
                out.append(a)
        return updated.with_changes(args=_comma_fixed(out, updated.args))

    def _default_output_dir(self, trainer: str, kw: dict, positional: list):
        """Where the target release writes when no args are given (its facts table), spelled in source."""
        pattern = self.t.fact(trainer, "default_output_dir", "tmp_trainer")
        if "{model_name}" not in pattern:
            return _string(pattern)
        model = kw["model"].value if "model" in kw else (positional[0].value if positional else None)
        value = _literal(model) if model is not None else None
        if isinstance(value, str):
            return _string(pattern.format(model_name=value.split("/")[-1]))
        if isinstance(model, (cst.Name, cst.Attribute)):
            code = cst.Module([]).code_for_node(model)
            return cst.parse_expression(
                "f" + repr(pattern.replace("{model_name}", "{" + code + ".config._name_or_path.split('/')[-1]}")))
        return _string(pattern.format(model_name="model"))
