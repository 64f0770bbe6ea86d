"""The documentation a user reads: every link in README.md and docs/ resolves inside the
repository (issue 10 item 27: links pointed at ../shared, which a clone does not have),
and no page tells users to install a distribution that is not published."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mesh import ConfigError, TransportRegistry
from mesh.transports.memory import MemoryTransport

REPO = Path(__file__).resolve().parents[2]
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
