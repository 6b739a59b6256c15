"""The teacher stage: pretrain a tiny HuBERT (embedded default) or import a real checkpoint."""
