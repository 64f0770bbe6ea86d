"""Testing support: the transport conformance suite, broker helpers, a pytest plugin.

* `mesh.testing.conformance.TransportConformance`: subclass it to prove a transport.
* `mesh.testing.brokers`: find (or start, when none runs) Kafka (Tansu), NATS and
  RabbitMQ for tests, and private instances (`PrivateNats`, `PrivateRabbitMQ`) that
  fault tests may restart and kill; a server the tests did not start is never touched.
* `mesh.testing.proxy.TcpProxy`: cut connections to simulate broker outages.
* `mesh.testing.patterns.check_translation`: prove a transport's pattern translation
  (subjects, binding keys, topic regexes) matches exactly what the neutral pattern does.
* The pytest plugin (``mesh.testing.plugin``, auto-loaded) provides the
  ``memory_mesh`` fixture: a started Mesh on a private memory broker.
"""
