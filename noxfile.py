"""The TRL release matrix.

``nox -s tests`` runs the suite once per TRL release (the list: ``trlshim/data/matrix.txt``; pins in
``trlshim/data/constraints/trl-X.txt``); ``nox -s "tests(trl='1.16.0')"`` runs one release; ``nox -s kernels``
the Triton kernel suite on the pinned and the newest triton. Sessions are uv virtualenvs that install
torch 2.13.0 (the CPU build from ``$PIP_FIND_LINKS`` when that folder has it, else the index's build;
hard-linked from uv's cache, so no session downloads or copies torch twice) under the release's
constraints file.
"""
from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent


def _matrix() -> dict:
    """``{release: [pip specs]}`` from trlshim/data/matrix.txt, the single source of the release list
    (trlshim.versions reads the same file; read here without importing trlshim)."""
    out = {}
    for line in (ROOT / "trlshim" / "data" / "matrix.txt").read_text().splitlines():
        tag, sep, specs = line.partition("|")
        if sep and not line.lstrip().startswith("#"):
            out[tag.strip().removeprefix("trl-")] = specs.split()
    return out


MATRIX = _matrix()
RELEASES = list(MATRIX)
NEWEST = RELEASES[-1]
# torch 2.13.0: the CPU build where a find-links folder (PIP_FIND_LINKS) holds it, else PyPI's build
# (a fresh machine without the folder: uv would find no "+cpu" version on the index).
FIND_LINKS = os.environ.get("PIP_FIND_LINKS", "")
HAS_CPU_WHEEL = bool(FIND_LINKS) and any(Path(d).is_dir() and any(Path(d).glob("torch-2.13.0+cpu-*.whl"))
                                        for d in FIND_LINKS.split())
TORCH = "torch==2.13.0+cpu" if HAS_CPU_WHEEL else "torch==2.13.0"
# Every tests session installs triton: kernel routing (trlshim's fused cross-entropy and TRL's metrics on
# each release's loss path, RoPE, RMSNorm, SwiGLU) runs on CPU through Triton's interpreter on every
# release. The kernel suite itself (tests/kernels: no TRL in it) runs once, in the `kernels` session,
# on the pinned triton and on the newest.
TRITON = "triton==3.7.1"
BITSANDBYTES = "bitsandbytes==0.50.2"  # checked: nf4 4-bit runs on CPU with torch 2.13 (issue 15)
TEST_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_DISABLED": "true",
    "PYTHONDONTWRITEBYTECODE": "",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),  # .ci/run: 1 (two sessions side by side)
}


def constraints(session, release: str) -> str:
    """The release's constraints file; without the CPU wheel, a copy without its torch pin (the "+cpu"
    local version exists only in the find-links folder)."""
    path = ROOT / "trlshim" / "data" / "constraints" / f"trl-{release}.txt"
    if HAS_CPU_WHEEL:
        return str(path)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("torch==")]
    out = Path(session.create_tmp()) / f"constraints-trl-{release}.txt"
    out.write_text("\n".join(lines) + "\n")
    return str(out)


def install(session, release: str, *extra: str, constrain: bool = True) -> None:
    env = {"UV_FIND_LINKS": FIND_LINKS if HAS_CPU_WHEEL else ""}
    if constrain:
        env["UV_CONSTRAINT"] = constraints(session, release)
    session.install(TORCH, *MATRIX[release], "pytest", "tokenizers", *extra, env=env)
    session.install("--no-deps", ".", env=env)


def run_pytest(session, *paths: str, args: tuple = (), env: dict = TEST_ENV) -> None:
    """pytest on checkout paths, run from a temporary folder so the installed package is imported."""
    session.chdir(session.create_tmp())
    session.run("pytest", "-q", *[str(ROOT / p) for p in paths], "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                *args, *session.posargs, env=env)


@nox.session(python="3.11")
@nox.parametrize("trl", RELEASES)
def tests(session, trl):
    """The test suite against one TRL release (the kernel suite runs in the `kernels` session)."""
    # pillow: the vision-language tests' images and processor; libcst: trlshim migrate (tests/test_migrate.py).
    # bitsandbytes (4-bit on CPU): the QLoRA tests (tests/patches/test_qlora.py, ~40 s), on the newest release
    # only; they skip on the others.
    install(session, trl, "wrapt", TRITON, "pillow", "libcst", *([BITSANDBYTES] if trl == NEWEST else []))
    run_pytest(session, "tests", args=("--ignore", str(ROOT / "tests" / "kernels")),
               env=dict(TEST_ENV, TRITON_INTERPRET="1"))


@nox.session(python="3.11")
@nox.parametrize("triton", [nox.param(TRITON, id="pin"), nox.param("triton", id="newest")])
def kernels(session, triton):
    """The Triton kernels (Triton's interpreter, CPU) on the pinned triton and on the newest release."""
    install(session, NEWEST, triton, constrain=triton == TRITON)
    session.run("python", "-c", "import triton; print('triton', triton.__version__)")
    run_pytest(session, "tests/kernels", env=dict(TEST_ENV, TRITON_INTERPRET="1"))


@nox.session(python="3.11", venv_backend="uv")
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "trlshim", "kernels", "tests", "noxfile.py", "benchmarks")


# wrapt 2.x is what every `tests` session installs (pyproject: wrapt>=1.14, no pin): only 1.x needs its own run.
WRAPT_MAJORS = [nox.param("wrapt<2", id="1")]
CORE_TESTS = ["tests/patches/test_sft_trainer.py", "tests/reliability"]


@nox.session(name="wrapt", python="3.11")
@nox.parametrize("trl", [RELEASES[0], NEWEST])
@nox.parametrize("spec", WRAPT_MAJORS)
def wrapt_majors(session, trl, spec):
    """The core tests (SFTTrainer patches + reliability) on wrapt 1.x, oldest and newest TRL (2.x: every `tests`
    session)."""
    install(session, trl, spec)
    major = "1" if spec.startswith("wrapt<2") else "2"
    session.run("python", "-c", f"import wrapt; v = wrapt.__version__; print('wrapt', v); "
                f"assert v.split('.')[0] == '{major}', v")
    run_pytest(session, *CORE_TESTS, args=("--ignore", str(ROOT / "tests/reliability/test_import_order.py")))


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


# Old releases whose SFT tests run against the newest TRL with trlshim (`crossversion`): the oldest tested
# release, the last with trainer kwargs, and the last with DataCollatorForCompletionOnlyLM in TRL.
CROSSVERSION_RELEASES = ["0.8.6", "0.12.2", "0.19.1"]


def download_sdist(session, release: str, dest: Path) -> Path:
    """The TRL sdist of ``release``, unpacked under ``dest``. pip first; where pip cannot prepare the sdist's
    metadata (0.8-0.12: setup.py symlinks examples/scripts), the file from the index's JSON API (PEP 691),
    checked against its sha256."""
    tarball = dest / f"trl-{release}.tar.gz"
    try:
        session.run("python", "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"trl=={release}", "-d", str(dest), silent=True)
    except Exception:  # nox raises CommandFailed
        session.log(f"pip cannot prepare trl=={release}'s sdist (expected for 0.8-0.12): fetching the file itself")
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        session.run("python", "-c", f"""
import hashlib, json, urllib.request
req = urllib.request.Request({index + '/trl/'!r}, headers={{"Accept": "application/vnd.pypi.simple.v1+json"}})
f = {{f["filename"]: f for f in json.load(urllib.request.urlopen(req))["files"]}}[{tarball.name!r}]
data = urllib.request.urlopen(f["url"]).read()
assert hashlib.sha256(data).hexdigest() == f["hashes"]["sha256"], "sha256 mismatch"
open({str(tarball)!r}, "wb").write(data)
""")
    session.run("python", "-c", f"import tarfile; tarfile.open({str(tarball)!r}).extractall({str(dest)!r})")
    return dest / f"trl-{release}"


@nox.session(python="3.11")
def crossversion(session):
    """Old releases' own SFT tests (sdists) on the newest TRL with trlshim: every test that passes on its own
    release (tests/reliability/crossversion_own_release.json, measured by scripts/crossversion_baseline.py in
    the old releases' venvs: not CI time) passes, or is allow-listed (tests/reliability/crossversion_allowlist.txt);
    an allow-listed test that passes fails the session."""
    install(session, NEWEST, "wrapt", "parameterized", "pip", "pillow")
    tmp = Path(session.create_tmp()).resolve()
    folders = [str(download_sdist(session, r, tmp)) for r in CROSSVERSION_RELEASES]
    env = dict(TEST_ENV, TRLSHIM_OLD_TRL_TESTS=os.pathsep.join(folders))
    session.chdir(tmp)
    session.run("pytest", "-q", "-s", str(ROOT / "tests" / "reliability" / "test_crossversion.py"), "-p",
                "no:cacheprovider", "--rootdir", str(ROOT), *session.posargs, env=env)
