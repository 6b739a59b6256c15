"""Report stage: SUPERB score, tidy results table, tables, figures, CKA and cost analyses."""
