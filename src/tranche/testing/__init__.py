"""Throwaway real servers (PostgreSQL, RabbitMQ) for tests, benchmarks and local distributed runs."""
