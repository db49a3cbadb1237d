"""The wheel is the product: the Docker image and `.ci/boot-wheel` install it, not the checkout.

A non-editable install has only what the wheel carries, so every file the platform reads from
disk (page templates, static files, both Alembic trees, gunicorn's `wsgi` entry point) must be
inside it. `.ci/boot-wheel` then proves the installed wheel actually boots.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level folders the platform runs from; anything else with Python in it is not shipped.
SHIPPED = (
    "core",
    "tenants",
    "payments",
    "billing",
    "compliance",
    "webhooks",
    "frontend",
    "staff",
    "migrations",
)
NOT_SHIPPED = {"tests", "bench"}
LEFT_BEHIND = (".git", ".venv", ".lango", "build", "dist", "*.egg-info", "__pycache__", "*.pyc")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    # Built from a copy: setuptools reuses build/ in the source folder, where files deleted
    # since an earlier build would linger and hide a missing one.
    source = tmp_path_factory.mktemp("source") / "lango"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LEFT_BEHIND, *NOT_SHIPPED))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), "."],
        cwd=source,
        check=True,
    )
    (wheel,) = dist.glob("lango-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _checkout_files(folder: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.mark.parametrize("folder", SHIPPED)
def test_wheel_carries_every_file_of_each_shipped_folder(wheel_files, folder):
    missing = sorted(_checkout_files(folder) - wheel_files)
    assert missing == [], f"not in the wheel: {missing}"


def test_wheel_carries_the_templates_static_files_and_migration_trees(wheel_files):
    templates = {name for name in wheel_files if name.startswith("frontend/templates/")}
    assert len(templates) == len(_checkout_files("frontend/templates")) >= 53
    assert "frontend/static/lango.css" in wheel_files
    assert {
        "migrations/public/alembic.ini",
        "migrations/public/env.py",
        "migrations/tenant/script.py.mako",
        "wsgi.py",
    } <= wheel_files


def test_every_folder_with_python_code_is_shipped_or_deliberately_left_out():
    folders = {
        folder.name
        for folder in ROOT.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")
        and folder.name not in {"build", "dist"}
        and any(folder.rglob("*.py"))
    }
    assert folders - NOT_SHIPPED == set(SHIPPED)


def test_wheel_leaves_out_tests_and_benchmarks(wheel_files):
    assert not {name for name in wheel_files if name.split("/")[0] in NOT_SHIPPED}
