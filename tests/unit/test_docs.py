"""The documentation a user reads: every link in README.md and docs/ resolves inside the
repository (issue 10 item 27: links pointed at ../shared, which a clone does not have),
and no page tells users to install a distribution that is not published.

The site (mkdocs.yml, built with ``mkdocs build --strict`` in .ci/run) is checked here
too, without mkdocs installed: every page in docs/ is in the nav, pages link only to
pages of the site, the first page shows examples/hello.py as it is, and every public
name has a place in the API reference."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import mesh
from mesh import ConfigError, TransportRegistry
from mesh.transports.memory import MemoryTransport

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = [
    REPO / "README.md",
    REPO / "DEVELOPERS.md",
    *sorted((REPO / "docs").rglob("*.md")),
    REPO / "examples" / "README.md",
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.exists()], ids=lambda p: str(p.relative_to(REPO))
)
def test_relative_links_stay_inside_the_repository(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"{page.name} links outside the repository: {target}"
        assert path.exists(), f"{page.name} links to a missing file: {target}"


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.exists()], ids=lambda p: str(p.relative_to(REPO))
)
def test_no_page_installs_an_unpublished_distribution(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"pip install [^\n`#]*event-mesh-(kafka|nats|rabbitmq)", text), (
        f"{page.name}: the plugins are installed from the repository (pip install ./plugins/...)"
    )


def test_a_bundled_scheme_without_its_plugin_says_how_to_install_it() -> None:
    registry = TransportRegistry()
    registry.register("memory", MemoryTransport)
    with pytest.raises(ConfigError, match=r"pip install \./plugins/kafka") as info:
        registry.create("kafka://h:9092")
    assert "event-mesh-kafka" not in str(info.value)


class _MkDocsLoader(yaml.SafeLoader):
    """Reads mkdocs.yml; its ``!!python/name:`` tags (the mermaid fence) load as None."""


_MkDocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def _site_config() -> dict[str, Any]:
    config = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), _MkDocsLoader)
    assert isinstance(config, dict)
    return config


def _site_pages() -> list[Path]:
    excluded = [line.strip().strip("/") for line in _site_config()["exclude_docs"].split()]
    return [
        page
        for page in sorted(DOCS.rglob("*.md"))
        if not any(page.relative_to(DOCS).parts[0] == name for name in excluded)
    ]


def test_every_page_in_docs_is_in_the_site_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages(_site_config()["nav"])
    pages = [str(page.relative_to(DOCS)) for page in _site_pages()]
    assert not [p for p in pages if p not in nav], "add these pages to the nav in mkdocs.yml"
    assert not [p for p in nav if p not in pages], "the nav in mkdocs.yml names missing pages"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert nav[0] == "index.md"


@pytest.mark.parametrize("page", _site_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_site_pages_link_only_to_pages_of_the_site(page: Path) -> None:
    """A relative link out of docs/ (to README.md, a source file) works on GitHub but is
    broken on the site; name the repository file in text instead."""
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(DOCS), f"{page.name} links out of docs/: {target}"


def test_the_first_page_shows_examples_hello_py_as_it_is() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", index, re.MULTILINE | re.DOTALL)
    hello = (REPO / "examples" / "hello.py").read_text(encoding="utf-8")
    assert hello in blocks, "docs/index.md must show examples/hello.py unchanged: copy it"


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = "\n".join(
        page.read_text(encoding="utf-8") for page in sorted((DOCS / "reference").glob("*.md"))
    )
    documented = set(re.findall(r"^::: ([\w.]+)", reference, re.MULTILINE))

    def on_a_page(name: str) -> bool:
        value = getattr(mesh, name)
        # a name, or the whole module it is (mesh.codec) or comes from (mesh.errors)
        module = (
            getattr(value, "__name__", "")
            if inspect.ismodule(value)
            else getattr(value, "__module__", "")
        )
        return f"mesh.{name}" in documented or module in documented

    missing = [name for name in mesh.__all__ if name != "__version__" and not on_a_page(name)]
    assert not missing, (
        f"public names on no API reference page: {missing}; add '::: mesh.<name>' to the "
        "right page in docs/reference/"
    )
    public_modules = [
        "mesh.errors",
        "mesh.codec",
        "mesh.dlq",
        "mesh.testing",
        "mesh.middleware",
        "mesh.otel",
        "mesh.metrics",
        "mesh.logs",
        "mesh.stats",
        "mesh.measure",
    ] + [
        f"mesh.{package}.{path.stem}"  # mesh.routing and mesh.testing are public, module by module
        for package in ("routing", "testing")
        for path in sorted((REPO / "mesh" / package).iterdir())
        if not path.name.startswith("_")
        and (path.suffix == ".py" or (path / "__init__.py").exists())
    ]
    undocumented = [module for module in public_modules if module not in documented]
    assert not undocumented, f"public modules on no API reference page: {undocumented}"
