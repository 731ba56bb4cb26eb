"""The project as a new user meets it: the README's test command installs every Debian tool the
suite runs (CI installs nothing of its own), and every package says what it is."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("videoconf", "control_api", "sfu", "signaling", "recorder", "turn", "clients")
# How a test names an outside program: a helper that finds it, a path, or the first argument of a
# subprocess call.
TOOL_PATTERNS = (
    r'coturn_tool\("([^"]+)"\)',
    r'shutil\.which\("([^"]+)"\)',
    r'"(/usr/s?bin/[^"]+)"',
    r'(?:subprocess\.(?:run|Popen|check_output)|create_subprocess_exec)\(\s*\[?\s*"([a-z][\w.+-]*)"',
)


def makefile_test_packages() -> set[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^TEST_PACKAGES\s*:=(.*)$", text, re.M)
    assert match, "the Makefile declares no TEST_PACKAGES"
    return set(match.group(1).split())


def tools_the_tests_run() -> dict[str, str]:
    """Every outside program named in tests/, with the file that names it first."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        text = path.read_text()
        for pattern in TOOL_PATTERNS:
            for name in re.findall(pattern, text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def debian_package_of(tool: str) -> str:
    path = tool if tool.startswith("/") else shutil.which(tool)
    assert path is not None, f"{tool} is not installed; `make test` should have installed it"
    owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    assert owner.returncode == 0, owner.stderr
    return owner.stdout.split(":", 1)[0]


def installed_with(packages: set[str]) -> set[str]:
    """The packages and their direct dependencies, as this machine's dpkg knows them."""
    fields = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}\n", *sorted(packages)], capture_output=True, text=True,
    ).stdout
    return packages | {re.split(r"[\s:(]", item.strip())[0] for item in re.split(r"[,|]", fields) if item.strip()}


def essential(package: str) -> bool:
    fields = subprocess.run(["dpkg-query", "-W", "-f", "${Essential} ${Priority}", package], capture_output=True, text=True).stdout
    return fields.startswith("yes") or fields.endswith("required")


def test_the_readme_test_command_installs_every_debian_tool_the_suite_runs() -> None:
    tools = tools_the_tests_run()
    assert "turnutils_uclient" in tools and "/usr/bin/chromium" in tools, tools  # the scan sees them
    provided = installed_with(makefile_test_packages())
    missing = {
        tool: (package, where) for tool, where in tools.items()
        if (package := debian_package_of(tool)) not in provided and not essential(package)
    }
    assert not missing, f"tools the tests run that `make test` does not install (tool: package, test): {missing}"


def test_a_removed_package_counts_as_missing() -> None:
    """`apt-get remove` leaves a package's configuration, and `dpkg -s` still answers 0 for it:
    the test command must ask for the installed state, or it skips installing what is gone."""
    recipe = (ROOT / "Makefile").read_text().split("test-packages:", 1)[1].split("\n\n", 1)[0]
    assert "install ok installed" in recipe and "dpkg -s " not in recipe, recipe


def test_ci_installs_nothing_beyond_the_readme_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in commands if re.search(r"\b(apt-get|apt|pip|npm|dpkg)\b", line)], commands
    assert commands[-1].strip() == "make test"


def test_every_package_says_what_it_is() -> None:
    stale = {}
    for top in PACKAGES:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            if "migrations" in init.parts:
                continue
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            if len(doc) < 40 or "not built" in doc.lower():
                stale[str(init.relative_to(ROOT))] = doc
    assert not stale, stale
