"""Attacks: each turns knowledge of the task into an artifact (PoisonSet, Trigger, LossHook, ...)."""
