"""Programmable variational inference: objectives as programs, estimators per sample site,
families, models and optimisation."""
