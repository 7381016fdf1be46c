"""Script dependency environments without a stack: real uv, the real package index (and a
folder of wheels made here, offline), real virtualenvs and real script processes.

The packages are tiny pure-Python ones (six, idna): a cold install takes about a second."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from scriptflow_prefect.environments import builder, cleanup, installer, service
from scriptflow_prefect.environments.inline import InlineMetadataError, read_inline_metadata
from scriptflow_prefect.environments.layout import Layout, lease, waiting_lock
from scriptflow_prefect.environments.models import EnvironmentFailed, WaitCancelled
from scriptflow_prefect.execution import output_hook
from scriptflow_prefect.execution.environment import ensure_script_python, site_packages
from scriptflow_prefect.platform.settings import SettingsError, load_settings

SIX_BLOCK = b"# /// script\n# dependencies = ['six']\n# ///\nimport six\nprint(six.__version__)\n"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("SCRIPTFLOW_"):
            monkeypatch.delenv(name)
    return load_settings(home=tmp_path / "home")


def run_with(python: Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def prepare(settings, requirements=(), source=b"", script_id=1, **kwargs) -> Path:
    with service.python_for_run(
        settings,
        kind="python",
        requirements=list(requirements),
        source=source,
        script_id=script_id,
        **kwargs,
    ) as python:
        assert python is not None
        return python


def envs(settings) -> list[str]:
    return Layout(settings.envs_dir).keys()


# -- the `# /// script` block (PEP 723) ---------------------------------------------------------


def test_it_reads_dependencies_and_requires_python_from_the_block():
    source = (
        "#!/usr/bin/env python\n"
        "# /// script\n"
        '# requires-python = ">=3.10"\n'
        "# dependencies = [\n"
        '#   "requests<3",\n'
        "#   'rich',\n"
        "# ]\n"
        "# ///\n"
        "print('hi')\n"
    )
    meta = read_inline_metadata(source.encode())
    assert meta.dependencies == ("requests<3", "rich")
    assert meta.requires_python == ">=3.10"
    assert read_inline_metadata(b"print(1)\n").dependencies == ()
    # Windows line ends, and a cp1252 file with its coding line, read as Python reads them.
    crlf = source.replace("\n", "\r\n").encode()
    assert read_inline_metadata(crlf).dependencies == ("requests<3", "rich")
    legacy = "# -*- coding: cp1252 -*-\n# /// script\n# dependencies = ['six']\n# ///\n"
    assert read_inline_metadata((legacy + "print('não')\n").encode("cp1252")).dependencies == (
        "six",
    )


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("# /// script\n# dependencies = [\n# ///\n", "not valid TOML"),
        ("# /// script\n# dependencies = 'six'\n# ///\n", "list of strings"),
        ("# /// script\n# dependencies = ['six>>1']\n# ///\n", "not a valid requirement"),
        ("# /// script\n# requires-python = '>>3'\n# ///\n", "requires-python"),
        ("# /// script\n# dependencies = ['x @ file:///etc/x.whl']\n# ///\n", "not a URL"),
        ("x = 1\n" + "# /// script\n# dependencies = []\n# ///\nx = 2\n" * 2, "more than one"),
    ],
)
def test_it_says_what_is_wrong_with_a_block_and_on_which_line(source, says):
    with pytest.raises(InlineMetadataError) as caught:
        read_inline_metadata(source.encode())
    assert says in str(caught.value)
    assert caught.value.line == source.splitlines().index("# /// script") + 1


def test_a_script_that_needs_another_python_fails_with_both_versions(settings):
    source = b"# /// script\n# requires-python = '>=4'\n# ///\n"
    with pytest.raises(EnvironmentFailed) as caught:
        prepare(settings, source=source)
    assert caught.value.code == "python_unsupported"
    assert caught.value.params["needed"] == ">=4"
    assert caught.value.params["version"] == ".".join(map(str, sys.version_info[:3]))


# -- building, sharing, reusing -----------------------------------------------------------------


def test_no_requirements_keep_the_shared_script_venv(settings):
    python = prepare(settings, source=b"print(1)\n")
    assert python.parent.parent == settings.script_venv_dir
    assert not settings.envs_dir.exists()  # nothing resolved, nothing built


def test_it_builds_once_and_the_next_run_calls_no_installer(settings):
    python = prepare(settings, ["idna"], SIX_BLOCK)
    assert run_with(python, "import six, idna; print(six.__name__, idna.__name__)") == "six idna"
    state = service.state_of(settings, 1, "python", ["idna"], SIX_BLOCK)
    assert state.status == "ready"
    assert {p["name"] for p in state.packages} == {"six", "idna"}
    assert "uv pip sync" in state.log and "Installed 2 packages" in state.log

    layout = Layout(settings.envs_dir)
    spec = service.spec_for(settings, ["idna"], SIX_BLOCK)
    watched = [layout.resolution(spec.digest), layout.beside(envs(settings)[0], "log")]
    before = [(p.stat().st_mtime_ns, p.read_bytes()) for p in watched]
    started = time.monotonic()
    again = prepare(settings, ["idna"], SIX_BLOCK)
    warm = time.monotonic() - started
    assert again == python
    # Neither the resolution nor the install log was written again: uv was not called.
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in watched] == before
    assert service.state_of(settings, 1, "python", ["idna"], SIX_BLOCK).built_at == state.built_at
    print(f"warm environment look-up: {warm * 1000:.1f} ms")


def test_scripts_whose_requirements_pin_the_same_set_share_one_environment(settings):
    first = prepare(settings, ["six"], script_id=1)
    second = prepare(settings, ["six>=1.0"], script_id=2)  # other text, same pinned set
    assert first == second and len(envs(settings)) == 1


def test_concurrent_runs_wait_for_one_build(settings):
    pythons: list[Path] = []
    errors: list[BaseException] = []

    def run(script_id: int) -> None:
        try:
            pythons.append(prepare(settings, ["idna"], script_id=script_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(set(pythons)) == 1 and len(pythons) == 4
    log = Layout(settings.envs_dir).beside(envs(settings)[0], "log").read_text()
    assert log.count("$ uv venv") == 1


def test_a_run_waiting_for_a_build_stops_when_cancelled(settings):
    spec = service.spec_for(settings, ["idna"], b"")
    layout = Layout(settings.envs_dir)
    layout.ensure()
    resolution = builder.resolve(layout, spec, ensure_script_python(settings.script_venv_dir))
    cancel = threading.Event()
    with waiting_lock(layout.lock("build", resolution.key)):  # another build going on
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(WaitCancelled):
            prepare(settings, ["idna"], cancel=cancel)


def test_the_environment_is_read_only_and_holds_what_was_pinned(settings):
    python = prepare(settings, ["six"])
    env_dir = service.environment_dir_for_python(python)
    assert env_dir.parent == settings.envs_dir
    writable = [
        str(p)
        for p in [env_dir, *env_dir.rglob("*")]
        if not p.is_symlink() and p.stat().st_mode & 0o222
    ]
    assert not writable, writable[:5]
    assert (env_dir / "scriptflow-requirements.txt").read_text().startswith("six==")
    # Ordered stdout/stderr, as in the shared script-venv.
    assert output_hook.installed(site_packages(env_dir))
    # Bytecode was compiled at build time: scripts cannot write __pycache__ there.
    assert list(env_dir.rglob("six*.pyc"))


# -- failures ------------------------------------------------------------------------------------


def test_a_requirement_that_does_not_exist_fails_with_uvs_reason(settings):
    with pytest.raises(EnvironmentFailed) as caught:
        prepare(settings, ["six==999.0"], script_id=5)
    failed = caught.value
    assert failed.code == "install_failed"
    assert failed.params["requirements"] == "six==999.0"
    assert "no version of six==999.0" in failed.params["reason"]
    assert "uv pip compile" in failed.log
    state = service.state_of(settings, 5, "python", ["six==999.0"], b"")
    assert state.status == "failed"
    assert "no version of six==999.0" in state.log
    assert state.failure == (failed.code, failed.params)


def test_a_requirement_that_is_a_url_or_not_a_requirement_never_reaches_uv(settings):
    for text in ("six @ https://example.invalid/six.whl", "six\n--index-url http://x"):
        with pytest.raises(EnvironmentFailed) as caught:
            prepare(settings, [text])
        assert caught.value.code == "install_failed" and caught.value.params["reason"]
    assert not settings.envs_dir.exists()


def test_it_reads_uvs_error_as_one_line():
    stderr = (
        "Using Python 3.11.7 environment at: /x\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because there is no version of six==999.0 and you require six==999.0, we can "
        "conclude that your requirements are unsatisfiable.\n"
    )
    assert installer.reason_of(stderr).startswith("Because there is no version of six==999.0")
    network = "error: Failed to fetch: `https://x/simple/six/`\n  Caused by: dns error\n"
    assert installer.reason_of(network) == "Failed to fetch: `https://x/simple/six/`: dns error"


# -- a folder of wheels (offline hosts) ---------------------------------------------------------


def make_wheel(tmp_path: Path) -> Path:
    """A wheel of a package that exists nowhere else, written here as the wheel format says
    (a zip with the package, METADATA, WHEEL and RECORD): no index, no build backend."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    info = "sftinypkg-1.0.dist-info"
    files = {
        "sftinypkg/__init__.py": "ANSWER = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: sftinypkg\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = [f"{name},sha256={_urlsafe_sha256(text)},{len(text)}" for name, text in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(wheels / "sftinypkg-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return wheels


def _urlsafe_sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_a_folder_of_wheels_is_the_only_source_when_set(settings, tmp_path):
    wheels = make_wheel(tmp_path)
    offline = load_settings(home=settings.home, package_index_url=str(wheels))
    assert installer.index_arguments(offline.package_index_url) == [
        "--no-index",
        "--find-links",
        str(wheels),
    ]
    python = prepare(offline, ["sftinypkg==1.0"])
    assert run_with(python, "import sftinypkg; print(sftinypkg.ANSWER)") == "42"
    # From the folder only: a package that is on the public index is not found there.
    with pytest.raises(EnvironmentFailed) as caught:
        prepare(offline, ["six"], script_id=2)
    assert "six" in caught.value.params["reason"]


def test_the_index_setting_is_a_url_or_an_existing_folder(settings, tmp_path):
    assert load_settings(package_index_url="https://pypi.example/simple").package_index_url
    for bad in ("relative/wheels", str(tmp_path / "missing")):
        with pytest.raises(SettingsError, match="SCRIPTFLOW_PACKAGE_INDEX_URL"):
            load_settings(package_index_url=bad)


# -- garbage collection --------------------------------------------------------------------------


def test_the_collection_removes_unwanted_old_environments_and_keeps_used_ones(settings):
    wanted_python = prepare(settings, ["six"], script_id=1)
    unwanted_python = prepare(settings, ["idna"], script_id=2)
    service.forget_script(settings, 2)  # script 2 was deleted
    layout = Layout(settings.envs_dir)
    unwanted_key = unwanted_python.parent.parent.name
    later = time.time() + (cleanup.KEEP_DAYS + 1) * cleanup.DAY

    # Not collected while a run holds it, however old.
    with lease(layout, unwanted_key):
        report = cleanup.collect_garbage(layout, now=later)
    assert report["removed"] == [] and unwanted_python.exists()

    # Not collected when it was used recently.
    assert cleanup.collect_garbage(layout)["removed"] == []

    report = cleanup.collect_garbage(layout, now=later)
    assert report["removed"] == [unwanted_key] and report["bytes"] > 0
    assert not unwanted_python.parent.parent.exists()
    assert not layout.beside(unwanted_key, "log").exists()
    assert wanted_python.exists()  # script 1 still wants it, however old
    assert run_with(wanted_python, "import six; print('ok')") == "ok"
