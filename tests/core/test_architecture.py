"""The rules of ARCHITECTURE.md that import-linter cannot see (its contracts, in
pyproject.toml, hold the layers; .ci/run runs them): where transactions end, where Daraja
URLs are built, and why an import sits inside a function."""

from __future__ import annotations

import ast
import re
import tomllib

import pytest

from tests.conftest import ROOT

LANGO = ("core", "tenants", "billing", "compliance", "webhooks", "payments", "staff", "frontend")
DOMAINS = LANGO[1:]


def modules(*packages: str):
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_domain_package_commits_or_rolls_back_but_through_a_named_checkpoint():
    # Services flush; the edge (request, job, command: core.unit_of_work) commits once.
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in modules(*DOMAINS)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.(commit|rollback)\(\)", line)
    ]
    assert bare == []


def test_only_the_daraja_client_builds_daraja_urls():
    daraja_paths = re.compile(r"""["']/(oauth/v1|mpesa/)""")
    allowed = {ROOT / "payments" / "daraja.py"}
    elsewhere = [
        str(path.relative_to(ROOT))
        for path in modules(*LANGO)
        if path not in allowed
        and "sandbox" not in path.relative_to(ROOT).parts  # the sandbox serves them
        and daraja_paths.search(path.read_text())
    ]
    assert elsewhere == []


def _function_level_lango_imports(path):
    source = path.read_text()
    lines = source.splitlines()
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body_imports = [
            node
            for node in ast.walk(function)
            if isinstance(node, ast.Import | ast.ImportFrom)
            and any(
                name.split(".")[0] in LANGO
                for name in (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
            )
        ]
        if body_imports:
            first = min(node.lineno for node in body_imports)
            yield path, function.name, first, lines[first - 2].strip()


@pytest.mark.parametrize("package", LANGO)
def test_an_import_inside_a_function_says_why(package):
    # Imports go at the top; one inside a function is kept only where start-up needs it, and
    # the comment right above the function's first such import says so.
    unexplained = [
        f"{path.relative_to(ROOT)}:{line} in {name}()"
        for path, name, line, above in (
            found for path in modules(package) for found in _function_level_lango_imports(path)
        )
        if not above.startswith("#")
    ]
    assert unexplained == []


def _contract(name_starts: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["name"].startswith(name_starts))


def _modules_of(package: str, *, leaving_out: str) -> set[str]:
    return {
        f"{package}.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / package).iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    } - {f"{package}.{leaving_out}"}


def test_the_sandbox_contract_names_every_other_payments_module():
    # A forbidden contract lists modules: a new payments module must join the list.
    forbidden = set(_contract("The Daraja sandbox")["forbidden_modules"])
    assert _modules_of("payments", leaving_out="sandbox") <= forbidden


def test_the_stripe_contract_names_every_other_billing_module():
    sources = set(_contract("Only billing's Stripe module")["source_modules"])
    assert _modules_of("billing", leaving_out="stripe_gateway") <= sources
