"""The ECS worker: `python -m container.worker`."""
