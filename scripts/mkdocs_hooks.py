"""MkDocs hook: links from a docs page to a file of the repository outside docs/ (a preset, a source file, the
benchmarks' README) work on GitHub as relative links; on the site they become the repository's URL when
mkdocs.yml sets ``repo_url``, else the file's path as text. A link to a file that does not exist stops the
build, so these links are checked as the site's own are."""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    repo_url = (config.get("repo_url") or "").rstrip("/")
    page_dir = posixpath.dirname(page.file.src_uri)

    def replace(m: re.Match) -> str:
        target = m["target"]
        if re.match(r"^[a-z]+:", target) or target.startswith("/"):
            return m[0]
        path = (docs / page_dir / target).resolve()
        try:
            path.relative_to(docs)
            return m[0]  # inside docs/: MkDocs checks it
        except ValueError:
            pass
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            raise PluginError(f"{page.file.src_uri}: link {target!r} leaves the repository")
        if not path.exists():
            raise PluginError(f"{page.file.src_uri}: link {target!r} points to {rel}, which does not exist")
        if repo_url:
            kind = "tree" if path.is_dir() else "blob"
            return f"[{m['text']}]({repo_url}/{kind}/main/{rel}{m['anchor'] or ''})"
        return m["text"] if rel in m["text"] else f"{m['text']} (`{rel}`)"

    out, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(replace, line))
    return "\n".join(out)
