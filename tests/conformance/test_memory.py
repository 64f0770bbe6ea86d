"""The conformance suite on the in-memory transport."""

from __future__ import annotations

from mesh import Transport
from mesh.testing.conformance import TransportConformance
from mesh.transports.memory import MemoryTransport


class TestMemoryTransport(TransportConformance):
    features = MemoryTransport.features
    timeout = 20.0

    async def make_transport(self) -> Transport:
        # one named broker per case, shared by every transport the case makes
        return MemoryTransport(f"memory://{self.prefix}", {})

    async def publish_undecodable(self, transport: Transport, channel: str) -> None:
        assert isinstance(transport, MemoryTransport)
        await transport.publish_raw(channel, b"\x00not a cloudevent{")
