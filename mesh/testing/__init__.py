"""Testing support: the transport conformance suite, broker helpers, a pytest plugin.

* `mesh.testing.conformance.TransportConformance`: subclass it to prove a transport.
* `mesh.testing.brokers`: find or start Kafka (Tansu), NATS and RabbitMQ for tests.
* `mesh.testing.proxy.TcpProxy`: cut connections to simulate broker outages.
* The pytest plugin (``mesh.testing.plugin``, auto-loaded) provides the
  ``memory_mesh`` fixture: a started Mesh on a private memory broker.
"""
