"""mkdocs hook: the README stays the one source of the guide; its sections become site pages.

``## Guide``'s ``###`` sections become ``guide/<slug>.md`` (one page per analysis), the other ``##``
sections pages of their own; links into ``docs/`` are rewritten relative to the site, links to other
repository files become plain code spans (the site holds only docs/).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
_PAGES: dict[str, str] = {}


def _slug(title: str) -> str:
    title = re.sub(r"`([^`]*)`", r"\1", title).lower()
    title = re.sub(r"^rlscape ", "", title)
    words = re.findall(r"[a-z0-9]+", title)
    return "-".join(words[:4]) or "section"


def _relink(text: str, depth: int) -> str:
    up = "../" * depth

    def repl(m: re.Match[str]) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return m.group(0)
        if target.startswith("docs/"):
            return f"[{label}]({up}{target[len('docs/'):]})"
        if target == "benchmarks/RESULTS.md":
            return f"[{label}]({up}benchmarks.md#all-results)"
        return f"{label} (`{target}`)"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", repl, text).replace("](docs/img/", f"]({up}img/")


def _split() -> tuple[dict[str, str], list]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", readme, flags=re.M)
    intro, sections = parts[0], list(zip(parts[1::2], parts[2::2], strict=True))
    pages: dict[str, str] = {}
    guide_nav: list = []
    other_nav: list = []
    home = intro
    for title, body in sections:
        if title.strip() == "Guide":
            subs = re.split(r"^### (.+)$", body, flags=re.M)
            for sub_title, sub_body in zip(subs[1::2], subs[2::2], strict=True):
                uri = f"guide/{_slug(sub_title)}.md"
                pages[uri] = f"# {sub_title}\n{_relink(sub_body, 1)}"
                guide_nav.append({re.sub(r"`", "", sub_title.split(":")[0]): uri})
        elif title.strip() == "Two commands":
            home += f"## {title}\n{body}"
        else:
            uri = f"{_slug(title)}.md"
            text = f"# {title}\n{_relink(body, 0)}"
            if title.strip() == "Benchmarks":
                results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
                results = re.sub(r"^#", "##", results, flags=re.M)
                text += "\n## All results\n\n" + _relink(re.sub(r"^## [^\n]*\n", "", results, count=1), 0)
            pages[uri] = text
            other_nav.append({title: uri})
    pages["index.md"] = _relink(home, 0)
    return pages, [guide_nav, other_nav]


def on_config(config):  # type: ignore[no-untyped-def]
    pages, (guide_nav, other_nav) = _split()
    _PAGES.clear()
    _PAGES.update(pages)
    config["nav"] = [
        {"Home": "index.md"},
        {"Guide": guide_nav + [{"HTML report": "report.md"}]},
        {"In depth": [{"Over training": "over-training.md"}, {"Gradients and curvature": "curvature.md"},
                      {"Step sizes and cliffs": "cliffs.md"}, {"Linear regions": "regions.md"}, {"Atari": "atari.md"}]},
        {"Methods": "methods.md"},
        *other_nav[:-1],
        {"Scale-out": "scale-out.md"},
        {"API reference": "api.md"},
        other_nav[-1],
    ]
    return config


def on_files(files, config):  # type: ignore[no-untyped-def]
    for uri, text in _PAGES.items():
        files.append(File.generated(config, uri, content=text))
    return files
