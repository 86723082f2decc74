"""The paper's metrics."""
