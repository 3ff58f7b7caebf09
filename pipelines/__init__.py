"""The mixtune DAG, its embedded local runner, and the `mixtune` CLI."""
