"""Attacks on federated learning: model replacement (constrain-and-scale), gradient inversion of client
updates, and feature/property leakage from collaborative updates. Import from the submodules."""
