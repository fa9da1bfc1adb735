"""Hyper-parameter search over the training loop (Ray Tune + Optuna TPE + ASHA)."""
