"""RabbitMQ transport for event-mesh: ``amqp://user:password@host:5672/vhost``.

Installed as the ``event-mesh-rabbitmq`` distribution; the mesh finds it through
the ``mesh`` entry-point group, so ``Mesh(transport="amqp://...")`` just works.
"""

from mesh_rabbitmq.config import RabbitMQConfig
from mesh_rabbitmq.transport import RabbitMQTransport

__all__ = ["RabbitMQConfig", "RabbitMQTransport"]
