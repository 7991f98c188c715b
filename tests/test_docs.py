"""The documentation stays true: the generated references match the code, every page is in the site's
navigation, links and anchors resolve on GitHub as on the site, and ``mkdocs build --strict`` passes."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]+\]\((?P<target>[^)\s]+)\)")


def gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> list:
    return sorted(p for p in DOCS.rglob("*.md") if not p.name.startswith("_"))


def without_code(text: str) -> str:
    """``text`` with fenced blocks and code spans blanked (their brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "``", text)


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", text, flags=re.M | re.S).splitlines():
        m = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
        n = anchors.get(slug, 0)
        anchors[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("rel", ["reference/config.md", "reference/cli.md"])
def test_generated_reference_is_current(rel):
    module = gen_reference()
    expected = module.TARGETS[rel]()
    assert (DOCS / rel).read_text() == expected, \
        f"docs/{rel} is out of date: run python scripts/gen_reference.py and commit it"


def test_config_reference_has_every_key_with_its_default():
    from omegaconf import OmegaConf

    base = OmegaConf.to_container(OmegaConf.load(ROOT / "src" / "salmask" / "configs" / "base.yaml"))
    text = (DOCS / "reference" / "config.md").read_text()

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for key, value in leaves(base):
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", text, re.M)
        assert row, f"{key} is missing from the configuration reference"
        assert yaml.safe_load(row.group(1)) == value, (key, row.group(1), value)


def test_cli_reference_has_every_command():
    from salmask.cli import build_parser

    parser = build_parser()
    text = (DOCS / "reference" / "cli.md").read_text()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in commands.items():
        assert f"## salmask {name}\n" in text, name
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}`" in text, (name, option)


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def files(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from files(value)
            else:
                yield value

    in_nav = set(files(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert on_disk - in_nav == set(), "pages missing from mkdocs.yml's nav"
    assert in_nav - on_disk == set(), "nav entries without a page"


@pytest.mark.parametrize("path", [ROOT / "README.md", *pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve_on_github(path):
    """Every relative link points to a file of the repository, and every #anchor into a Markdown page is one of
    that page's headings as GitHub names them."""
    text = without_code(path.read_text())
    for m in LINK.finditer(text):
        target = m.group("target")
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in github_anchors(dest.read_text()), f"{path.name}: no heading #{anchor} in {dest.name}"


@pytest.mark.parametrize("path", [ROOT / "README.md", *pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_lists_follow_a_blank_line(path):
    """A list right under a paragraph line renders on GitHub but not on the site (Python-Markdown)."""
    fenced, in_list, prev = False, False, ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```"):
            prev = line
            continue
        if re.match(r"^\s*(?:[-*+]|\d+\.) ", line):
            assert not prev.strip() or in_list or prev.lstrip().startswith("|"), f"{path.name}:{n}: blank line needed"
            in_list = True
        elif line.strip() and not line.startswith(" ") and not prev.strip():
            in_list = False
        prev = line


def test_readme_is_an_index():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_code_cites_the_method_page_and_its_sections_exist():
    """The code points into docs/method.md (never into a note that does not ship), and every section it names
    exists."""
    anchors = github_anchors((DOCS / "method.md").read_text())
    for path in (ROOT / "src").rglob("*"):
        if path.suffix not in (".py", ".yaml"):
            continue
        text = path.read_text()
        assert not re.search(r"SPEC §", text), f"{path}: cites SPEC, which does not ship with salmask"
        for anchor in re.findall(r"docs/method\.md#([\w-]+)", text):
            assert anchor in anchors, f"{path}: docs/method.md#{anchor} is no section of the method page"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install 'salmask[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install 'salmask[docs]'")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    for page in pages():
        rel = page.relative_to(DOCS).with_suffix("")
        built = tmp_path / "site" / ("index.html" if rel.as_posix() == "index" else f"{rel.as_posix()}/index.html")
        if rel.name == "index" and rel.parent.as_posix() != ".":
            built = tmp_path / "site" / rel.parent / "index.html"
        assert built.is_file(), built
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert 'id="salmask.api.pseudo_masks"' in api, "mkdocstrings did not render the API"
