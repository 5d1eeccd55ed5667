"""Flower adapters (optional extra ``fl``): a Flower Strategy around our aggregators, Flower clients (honest and
malicious) around our client logic, and the same experiment on Flower's simulation engine. Import the submodules;
they need ``flwr`` (and ``ray`` for the simulation)."""
