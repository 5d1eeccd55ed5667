"""Model diagnostics from "Truth or Backpropaganda?" (Goldblum, Geiping, Schwarzschild, Moeller, Goldstein, ICLR 2020,
arXiv 1910.00359): weight-matrix spectra and ranks, parameter norms, loss along the line between two models, and
the rank and norm regularisers the paper trains with.

``diagnose(model, data, compare=None)`` returns the numbers as a JSON-able dict.
"""

from poisonlab.diagnostics.api import diagnose

__all__ = ["diagnose"]
