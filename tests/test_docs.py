"""The documentation: `make test` builds the MkDocs site with --strict (so CI, which runs exactly
`make test`, fails on a broken link, a missing anchor or a page left out of the navigation), and
the README stays a short front door whose relative links all resolve."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 250
# Markdown links and images: [text](target) / ![alt](target), the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the project at root, as `make docs` runs it (from the root:
    the snippets that include the README's sections resolve against it)."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(root / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # not the theme's end-of-life banner
    )


def test_docs_build_strict(tmp_path):
    result = build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    # The README's overview, two commands and picture are included into the pages, not copied:
    # a marker removed from the README would leave them empty without failing the build.
    included = {"index.html": "tep_reactor", "getting-started/index.html": "make demo",
                "architecture/index.html": "AssetWatcher(LandingFileTrigger)"}
    for page, text in included.items():
        html = (tmp_path / "site" / page).read_text()
        assert text in html, f"{page} lacks {text!r}: the README section it includes is gone"
        assert "--8&lt;--" not in html and "--8<--" not in html, f"{page} shows a snippet marker"
    assert "Licence Ouverte" in (tmp_path / "site" / "data-licences" / "index.html").read_text()


def test_docs_build_fails_on_a_broken_link(tmp_path):
    """The strictness is real: the same site with one link to a page that does not exist fails."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docs", copy / "docs")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    page = copy / "docs" / "adding-a-fleet.md"
    page.write_text(page.read_text() + "\nSee [the old page](no-such-page.md).\n")
    result = build(copy, tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stdout + result.stderr


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move the detail to docs/"


def test_readme_links_resolve():
    targets = LINK.findall(README.read_text())
    assert targets, "no links found: the pattern is broken"
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the README itself
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to files that do not exist: {broken}"
