"""Privacy attacks on trained models: LiRA and threshold membership inference, Truth Serum poisons that
amplify leakage, attribute inference and secret (canary) extraction. Import from the submodules."""
