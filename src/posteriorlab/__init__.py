"""posteriorlab: interactive labs for approximate Bayesian inference.

``import posteriorlab`` loads no UI library; the inference core lives in
:mod:`posteriorlab.core`, the per-lab state in :mod:`posteriorlab.labs`, figures in
:mod:`posteriorlab.plots` and the Panel pages in :mod:`posteriorlab.dashboards`.
"""

__version__ = "0.1.0"
