"""Step 6, register: an MLflow Model Registry version, alias challenger, and champion if it wins the gate."""
