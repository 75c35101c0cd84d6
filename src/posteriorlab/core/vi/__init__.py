"""Programmable variational inference: objectives as programs with a gradient estimator
per sample site (``programs``), the objectives (``objectives``), variational families
(``families``), targets (``models``), optax optimisation in chunks (``optimize``) and
gradient-variance estimation (``variance``)."""
