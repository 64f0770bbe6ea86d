"""Contract validation cost per event: ``python -m benchmarks.contracts``.

A contract's JSON Schema validator is compiled once when the contract is registered
(`mesh.contracts.Contract`); this measures what each published or consumed event of
a contracted type then pays: `Contract.check` on valid data, for a small flat schema
and for a pydantic model with a nested list.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from mesh import ContractRegistry, Event


class _Item(BaseModel):
    sku: str
    quantity: int


class _Order(BaseModel):
    order: str
    customer: str
    total: float
    items: list[_Item]


FLAT = {
    "type": "object",
    "required": ["order", "hours"],
    "properties": {"order": {"type": "string"}, "hours": {"type": "integer"}},
}


def run(loops: int = 20_000) -> dict[str, float]:
    """Microseconds per `Contract.check` of a valid event, by schema."""
    registry = ContractRegistry()
    cases = {
        "flat (2 fields)": (
            registry.register("shipment.delayed", FLAT),
            Event("shipment.delayed", "/b", {"order": "o-1", "hours": 3}),
        ),
        "pydantic model, 3 items": (
            registry.register("order.placed", _Order),
            Event(
                "order.placed",
                "/b",
                {
                    "order": "o-1",
                    "customer": "c-9",
                    "total": 12.5,
                    "items": [{"sku": f"s{i}", "quantity": i} for i in range(3)],
                },
            ),
        ),
    }
    result = {}
    for name, (contract, event) in cases.items():
        check = contract.check
        start = time.perf_counter()
        for _ in range(loops):
            check(event)
        result[name] = (time.perf_counter() - start) / loops * 1e6
    return result


def main() -> None:
    for name, micros in run().items():
        print(f"contract check, {name}: {micros:.1f} us/event")


if __name__ == "__main__":
    main()
