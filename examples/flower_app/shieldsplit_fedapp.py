"""The Flower App of shieldsplit: ``flwr run`` names these two components.

Every setting comes from ``[tool.flwr.app.config]`` in pyproject.toml (override one with
``flwr run . <connection> --run-config "defense='dpsgd'"``); each SuperNode learns its
partition from ``--node-config "partition-id=0 num-partitions=2"``.
"""

from shieldsplit.adapters.flower import deployment_client_app, deployment_server_app

client = deployment_client_app()
server = deployment_server_app()
