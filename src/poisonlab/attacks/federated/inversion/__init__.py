"""Gradient inversion of federated client updates: Inverting Gradients (cosine + TV, signed Adam, restarts,
FedAvg unrolling), DLG/iDLG baselines, analytic recovery through a fully-connected layer, label recovery.

The attacker's API is ``GradientInversion.reconstruct(ServerPayload, ClientUpdate) -> Reconstruction``.
"""

from poisonlab.attacks.federated.inversion.analytic import AnalyticFCInversion, analytic_fc_inversion
from poisonlab.attacks.federated.inversion.base import GradientInversion
from poisonlab.attacks.federated.inversion.client import client_update
from poisonlab.attacks.federated.inversion.config import InvertConfig, invert_config
from poisonlab.attacks.federated.inversion.dlg import DeepLeakage
from poisonlab.attacks.federated.inversion.inverting import InvertingGradients
from poisonlab.attacks.federated.inversion.labels import recover_labels
from poisonlab.attacks.federated.inversion.messages import ClientUpdate, ServerPayload
from poisonlab.attacks.federated.inversion.reconstruction import Reconstruction

__all__ = [
    "AnalyticFCInversion",
    "ClientUpdate",
    "DeepLeakage",
    "GradientInversion",
    "InvertConfig",
    "InvertingGradients",
    "Reconstruction",
    "ServerPayload",
    "analytic_fc_inversion",
    "client_update",
    "invert_config",
    "recover_labels",
]
