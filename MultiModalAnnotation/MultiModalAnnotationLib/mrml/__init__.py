"""Scene adapters of MultiModalAnnotation (templates -> segmentations, documents <-> nodes)."""
