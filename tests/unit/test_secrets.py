"""Issue 10 item 11: no exception the mesh raises carries a secret anywhere in its chain.

``raise ... from None`` only hides the context from a plain traceback; the handled
exception stays in ``__context__`` (pydantic's errors hold the input URL, YAML
errors quote the file), where error reporters walk. `chain_text` reads all of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh import ConfigError, Mesh, MeshConfig
from mesh.testing.util import chain_text

CANARY = "Canary-S3cret-7f3a"


@pytest.mark.parametrize(
    "transport",
    [
        f"guest:{CANARY}@host",  # no scheme
        f"nosuch://guest:{CANARY}@host",  # unknown scheme
        f"memory://guest:{CANARY}@host?x=1",
    ],
)
def test_bad_transport_urls_keep_the_password_out_of_the_chain(transport: str) -> None:
    try:
        Mesh(transport, retry={"max_attempts": 0})
    except ConfigError as exc:
        assert CANARY not in chain_text(exc)
    else:  # memory:// ignores user info: then the bad retry setting must fail
        pytest.fail("expected a ConfigError")


def test_invalid_config_fields_keep_every_input_out_of_the_chain() -> None:
    with pytest.raises(ConfigError) as info:
        MeshConfig.build(
            {
                "transport": f"amqp://u:{CANARY}@h/",
                "hop_limit": CANARY,
                "retry": {"max_attempts": CANARY},
                "unknown": CANARY,
            }
        )
    assert CANARY not in chain_text(info.value)
    assert "hop_limit" in str(info.value) and "unknown" in str(info.value)


def test_yaml_errors_do_not_quote_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(f"transport: amqp://u:{CANARY}@h/\nretry: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line") as info:
        MeshConfig.load(path)
    assert CANARY not in chain_text(info.value)


def test_transport_option_errors_keep_the_password_out_of_the_chain() -> None:
    from mesh import build_options
    from pydantic import BaseModel, SecretStr

    class Options(BaseModel):
        password: SecretStr
        port: int

    with pytest.raises(ConfigError) as info:
        build_options(
            Options, {"password": CANARY, "port": CANARY}, transport="X", url=f"x://u:{CANARY}@h"
        )
    assert CANARY not in chain_text(info.value) and "port" in str(info.value)


def test_chain_text_sees_a_suppressed_context() -> None:
    try:
        try:
            raise ValueError(CANARY)
        except ValueError:
            raise ConfigError("clean") from None
    except ConfigError as exc:
        assert CANARY in chain_text(exc), "the walker must see what `from None` hides"


def test_str_of_a_config_keeps_transport_options_out() -> None:
    config = MeshConfig.load(
        transport=f"memory://guest:{CANARY}@host", transport_options={"sasl.password": CANARY}
    )
    for text in (repr(config), str(config), f"{config}", repr(Mesh(config=config))):
        assert CANARY not in text
