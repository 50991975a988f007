"""Scene adapters of QCMetrics (results <-> table nodes)."""
