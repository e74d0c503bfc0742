"""pytest plugin for libraries built on TRL (loaded by its entry point, or ``-p trlshim.pytest_plugin``).

``--trlshim-strict``: every translation trlshim would apply becomes a failing ``TranslationError`` that
names the caller's file and line, so a library finds its legacy TRL calls in its own test suite.
``--trlshim-report``: the run goes on as usual and ends with each distinct translation and the call sites
that needed it. Without either option the plugin does nothing (it imports nothing of trlshim or TRL).
"""
from __future__ import annotations

import os

_ENV = "TRLSHIM_STRICT"


def pytest_addoption(parser):
    group = parser.getgroup("trlshim", "trlshim: legacy TRL calls")
    group.addoption("--trlshim-strict", action="store_true", default=False,
                    help="turn every trlshim translation into a failure naming the calling file and line")
    group.addoption("--trlshim-report", action="store_true", default=False,
                    help="list each distinct trlshim translation with its call sites at the end of the run")


class _Collector:
    def __init__(self):
        self.sites: dict = {}  # message -> {(file, line)}

    def __call__(self, key, message, site):
        self.sites.setdefault(message, set())
        if site is not None:
            self.sites[message].add(site)


def pytest_configure(config):
    if config.getoption("--trlshim-strict", default=False):
        config._trlshim_env = os.environ.get(_ENV)
        os.environ[_ENV] = "1"
    if config.getoption("--trlshim-report", default=False):
        from trlshim import report

        config._trlshim_collector = _Collector()
        report.add_listener(config._trlshim_collector)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    collector = getattr(config, "_trlshim_collector", None)
    if collector is None:
        return
    terminalreporter.section("trlshim translations")
    if not collector.sites:
        terminalreporter.write_line("none: every TRL call used the installed release's spelling")
    for message, sites in collector.sites.items():
        terminalreporter.write_line(message)
        for file, line in sorted(sites):
            terminalreporter.write_line(f"    {file}:{line}")


def pytest_unconfigure(config):
    if hasattr(config, "_trlshim_env"):
        if config._trlshim_env is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = config._trlshim_env
    collector = getattr(config, "_trlshim_collector", None)
    if collector is not None:
        from trlshim import report

        report.remove_listener(collector)
