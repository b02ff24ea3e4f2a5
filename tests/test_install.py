# -*- test-case-name: tests.test_install -*-
"""
The installed package works on its own: C{pip install .} (not editable) into a
fresh virtual environment, then run from a folder outside the checkout with
C{PYTHONPATH} unset, so the plugin and the modules can only come from what pip
installed.

To stay fast (and work without building Twisted and its friends from PyPI),
the fresh environment is given the dependencies of the environment running
the tests through a C{.pth} line naming the folder that holds Twisted; that
folder holds no Artcast, and a test checks that C{artcast} and the plugin are
imported from the fresh environment.  pip may reach PyPI for the build tools
(setuptools and wheel, in its isolated build environment).

Set C{CI_SKIP_INSTALL} to skip these tests.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import twisted
from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Bounds, in seconds, of the slow steps.
VENV_LIMIT = 120
INSTALL_LIMIT = 300
RUN_LIMIT = 60

#: What L{sourceFiles} leaves out when the checkout is not a git repository.
IGNORED = shutil.ignore_patterns(
    ".git", "_trial_temp*", ".hypothesis", ".tox", "__pycache__", "*.pyc",
    "*.egg-info", "build", "dist", "dropin.cache", "twistd.pid", "*.log",
)


def sourceFiles(root: str) -> list[str] | None:
    """
    The files of the working tree that git would commit (tracked, and
    untracked but not ignored), relative to C{root}; L{None} if C{root} is
    not a git checkout.
    """
    if not os.path.isdir(os.path.join(root, ".git")):
        return None
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, check=True, timeout=RUN_LIMIT,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = [name.decode("utf-8", "surrogateescape") for name in listed.split(b"\0") if name]
    return [name for name in names if os.path.isfile(os.path.join(root, name))]


def copySource(root: str, destination: str) -> None:
    """
    Copy the working tree to C{destination}, without build output, caches or
    test leftovers.
    """
    names = sourceFiles(root)
    if names is None:
        shutil.copytree(root, destination, ignore=IGNORED)
        return
    for name in names:
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, name), target)


def cleanEnvironment() -> dict[str, str]:
    """
    The environment without C{PYTHONPATH}, C{PYTHONHOME} or the running
    virtual environment's settings.
    """
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Installation:
    """
    A fresh virtual environment with Artcast installed by pip.

    @ivar top: the temporary folder holding everything.
    @ivar venv: the virtual environment.
    @ivar outside: an empty folder outside the checkout to run commands in.
    """

    def __init__(self) -> None:
        self.top = tempfile.mkdtemp(prefix="artcast-install-")
        self.venv = os.path.join(self.top, "venv")
        self.outside = os.path.join(self.top, "elsewhere")
        os.makedirs(self.outside)
        self.env = cleanEnvironment()

    @property
    def python(self) -> str:
        return os.path.join(self.venv, "bin", "python")

    def run(self, args: list[str], limit: float = RUN_LIMIT) -> subprocess.CompletedProcess[str]:
        """
        Run a command in the folder outside the checkout; raise with its
        output if it fails.
        """
        done = subprocess.run(
            args, cwd=self.outside, env=self.env, capture_output=True, text=True,
            timeout=limit,
        )
        if done.returncode != 0:
            raise FailTest(
                "%r exited with %d:\n%s\n%s" % (args, done.returncode, done.stdout, done.stderr)
            )
        return done

    def build(self) -> None:
        """
        Copy the source, make the environment, install Artcast into it.
        """
        source = os.path.join(self.top, "source")
        copySource(ROOT, source)
        # The real interpreter, not the running venv's: a venv made from a
        # venv's python would do the same, but say so.
        base = getattr(sys, "_base_executable", None) or sys.executable
        self.run([base, "-m", "venv", self.venv], VENV_LIMIT)
        dependencies = os.path.dirname(os.path.dirname(os.path.abspath(twisted.__file__)))
        site = self.run([
            self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]).stdout.strip()
        with open(os.path.join(site, "zz-artcast-test-dependencies.pth"), "w") as pth:
            pth.write(dependencies + "\n")
        self.run(
            [self.python, "-m", "pip", "install", "--no-deps", "--quiet", source],
            INSTALL_LIMIT,
        )
        shutil.rmtree(source)

    def remove(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)


_installation: Installation | None = None
_failure: BaseException | None = None


def installation() -> Installation:
    """
    The one installation these tests share, made at first use and removed
    when the test run ends.
    """
    global _installation, _failure
    if os.environ.get("CI_SKIP_INSTALL"):
        raise SkipTest("CI_SKIP_INSTALL is set")
    if _failure is not None:
        raise _failure
    if _installation is None:
        made = Installation()
        atexit.register(made.remove)
        try:
            made.build()
        except BaseException as error:
            _failure = error
            raise
        _installation = made
    return _installation


TWISTD = "from twisted.scripts.twistd import run; run()"


class InstallTests(SynchronousTestCase):
    """
    Artcast installed by C{pip install .} into a fresh environment.
    """

    def test_importedFromInstallation(self) -> None:
        """
        C{artcast} and its plugin are imported from the fresh environment, not
        from the checkout, and the declared dependencies are present.
        """
        made = installation()
        done = made.run([made.python, "-c", (
            "import artcast, twisted.plugins.artcast_plugin as p, importlib.metadata as m\n"
            "print(artcast.__file__); print(p.__file__)\n"
            "for r in m.requires('artcast') or []:\n"
            "    if 'extra ==' not in r:\n"
            "        name = r.split(';')[0].split('>')[0].split('=')[0].split('<')[0].strip()\n"
            "        print(name, m.version(name))\n"
        )])
        lines = done.stdout.splitlines()
        venv = os.path.realpath(made.venv) + os.sep
        self.assertTrue(os.path.realpath(lines[0]).startswith(venv), lines[0])
        # The plugin file is installed into the environment.  Where the
        # dependencies' folder holds an installed Artcast too (CI runs these
        # tests from an environment made by `pip install .`), Twisted may
        # load the plugin module from there: either way it is an installed
        # copy, never the checkout's.
        installed = glob.glob(
            os.path.join(made.venv, "lib", "python*", "site-packages",
                         "twisted", "plugins", "artcast_plugin.py")
        )
        self.assertEqual(len(installed), 1, installed)
        checkout = os.path.realpath(
            os.path.join(ROOT, "twisted", "plugins", "artcast_plugin.py")
        )
        self.assertNotEqual(os.path.realpath(lines[1]), checkout)
        self.assertIn(os.sep + "site-packages" + os.sep, lines[1])
        self.assertIn("twisted", [line.split()[0].lower() for line in lines[2:]])

    def test_getPlugins(self) -> None:
        """
        C{getPlugins(IServiceMaker)} finds the installed C{artcast} plugin.
        """
        made = installation()
        done = made.run([made.python, "-c", (
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "for maker in getPlugins(IServiceMaker):\n"
            "    print(maker.tapname, maker.module)\n"
        )])
        found = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        self.assertEqual(found.get("artcast"), "artcast.server.tap")

    def test_twistdHelp(self) -> None:
        """
        C{twistd artcast --help} lists the server's options.
        """
        made = installation()
        done = made.run([made.python, "-c", TWISTD, "artcast", "--help"])
        for option in (
            "--client-port", "--data-group", "--data-port", "--register-group",
            "--register-port", "--interface", "--access-log", "--error-log",
            "--access-control-allow-origin", "--templates", "--demo",
        ):
            self.assertIn(option, done.stdout)

    def test_artcastSend(self) -> None:
        """
        The C{artcast-send} console script is installed and C{--help} works.
        """
        made = installation()
        script = os.path.join(made.venv, "bin", "artcast-send")
        self.assertTrue(os.path.isfile(script))
        done = made.run([script, "--help"])
        self.assertIn("KEY", done.stdout.upper())

    def test_browserScript(self) -> None:
        """
        The browser client served at C{/artcast.js} is installed as package
        data, and the installed routes read it.
        """
        made = installation()
        done = made.run([made.python, "-c", (
            "import artcast.server.routes as r\n"
            "print(r.__file__); print(len(r.SCRIPT)); print(b'Artcast.follow' in r.SCRIPT)\n"
        )])
        path, size, found = done.stdout.split()
        venv = os.path.realpath(made.venv) + os.sep
        self.assertTrue(os.path.realpath(path).startswith(venv), path)
        with open(os.path.join(ROOT, "artcast", "server", "outlets", "artcast.js"), "rb") as f:
            self.assertEqual(int(size), len(f.read()))
        self.assertEqual(found, "True")
