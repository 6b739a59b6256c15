"""Distillation: teacher targets cache, KD methods (pred, l2l), resumable trainer."""
