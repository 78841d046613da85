"""The Kafka fixtures (a Tansu broker, a topic prefix per test, a host dir nodes can reach) for the S3 tests."""

from tests.kafka.conftest import host_dir, prefix, tansu

__all__ = ["host_dir", "prefix", "tansu"]
