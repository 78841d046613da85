"""AIHub Workflow: machine-learning pipelines from a laptop to Kubernetes."""

__version__ = "0.1.0"
