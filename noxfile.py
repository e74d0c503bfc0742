"""The TRL release matrix.

``nox -s tests`` runs the suite once per TRL release (pins in ``constraints/trl-X.txt``);
``nox -s "tests(trl='1.16.0')"`` runs one release. Sessions are uv virtualenvs that install the
CPU build of torch 2.13.0 from ``$PIP_FIND_LINKS`` (hard-linked from uv's cache, so no session
downloads or copies torch twice) under the release's constraints file.
"""
from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
RELEASES = [
    "0.8.6", "0.9.6", "0.11.4", "0.12.2", "0.13.0", "0.15.2", "0.16.1", "0.19.1", "0.20.0", "0.23.1",
    "0.26.2", "0.29.1", "1.0.0", "1.5.1", "1.10.0", "1.16.0",
]
NEWEST = RELEASES[-1]
TORCH = "torch==2.13.0+cpu"
# Every tests session installs triton: kernel routing (trlshim's fused cross-entropy and TRL's metrics on
# each release's loss path, RoPE, RMSNorm, SwiGLU) runs on CPU through Triton's interpreter on every
# release; the newest also runs the kernel suite itself (tests/kernels).
TRITON = "triton==3.7.1"
TEST_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_DISABLED": "true",
    "PYTHONDONTWRITEBYTECODE": "",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
}


def pins(release: str) -> list:
    for line in (ROOT / "constraints" / "pins.txt").read_text().splitlines():
        tag, _, specs = line.partition("|")
        if tag.strip() == f"trl-{release}":
            return specs.split()
    raise KeyError(release)


def install(session, release: str, *extra: str) -> None:
    env = {"UV_FIND_LINKS": os.environ.get("PIP_FIND_LINKS", ""), "UV_CONSTRAINT": str(ROOT / "constraints" / f"trl-{release}.txt")}
    session.install(TORCH, *pins(release), "pytest", "tokenizers", *extra, env=env)
    session.install("--no-deps", ".", env=env)


@nox.session(python="3.11")
@nox.parametrize("trl", RELEASES)
def tests(session, trl):
    """The test suite against one TRL release (the newest also runs the Triton-interpreter kernel tests)."""
    install(session, trl, "wrapt", TRITON)
    env = dict(TEST_ENV, TRITON_INTERPRET="1")
    ignore = [] if trl == NEWEST else ["--ignore", str(ROOT / "tests" / "kernels")]
    session.chdir(session.create_tmp())  # import the installed package, not the checkout
    session.run("pytest", "-q", str(ROOT / "tests"), "-p", "no:cacheprovider", "--rootdir", str(ROOT), *ignore,
                *session.posargs, env=env)


@nox.session(python="3.11", venv_backend="uv")
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "trlshim", "kernels", "tests", "noxfile.py", "benchmarks")


WRAPT_MAJORS = [nox.param("wrapt<2", id="1"), nox.param("wrapt>=2,<3", id="2")]
CORE_TESTS = ["tests/patches/test_sft_trainer.py", "tests/reliability"]


@nox.session(name="wrapt", python="3.11")
@nox.parametrize("trl", [RELEASES[0], NEWEST])
@nox.parametrize("spec", WRAPT_MAJORS)
def wrapt_majors(session, trl, spec):
    """The core tests (SFTTrainer patches + reliability) on wrapt 1.x and 2.x, oldest and newest TRL."""
    install(session, trl, spec)
    major = "1" if spec.startswith("wrapt<2") else "2"
    session.run("python", "-c", f"import wrapt; v = wrapt.__version__; print('wrapt', v); "
                f"assert v.split('.')[0] == '{major}', v")
    session.chdir(session.create_tmp())  # import the installed package, not the checkout
    session.run("pytest", "-q", *[str(ROOT / t) for t in CORE_TESTS], "-p", "no:cacheprovider",
                "--rootdir", str(ROOT), *session.posargs, env=TEST_ENV)


# Releases whose sdist ships tests/test_sft_trainer.py and builds with `pip download` (0.12.2's
# setup.py fails in pip's metadata step; the sdists of 0.26 and later ship no tests).
TRANSPARENCY_RELEASES = ["0.13.0", "0.20.0", "0.23.1"]


@nox.session(python="3.11")
@nox.parametrize("trl", TRANSPARENCY_RELEASES)
def transparency(session, trl):
    """TRL's own SFT tests (from the release's sdist) give the same outcomes without and with trlshim."""
    install(session, trl, "wrapt", "parameterized", "pip")
    tmp = Path(session.create_tmp()).resolve()
    session.run("python", "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", f"trl=={trl}",
                "-d", str(tmp))
    session.run("python", "-c", f"import tarfile; tarfile.open({str(tmp / f'trl-{trl}.tar.gz')!r}).extractall({str(tmp)!r})")
    env = dict(TEST_ENV, TRLSHIM_TRL_TESTS=str(tmp / f"trl-{trl}"), TRLSHIM_HUB=str(tmp / "hub"))
    session.chdir(tmp)
    session.run("pytest", "-q", "-s", str(ROOT / "tests" / "reliability" / "test_transparency.py"), "-p",
                "no:cacheprovider", "--rootdir", str(ROOT), *session.posargs, env=env)
