"""Sequential Monte Carlo: state-space models, resampling, particle filters, Kalman, smoothing."""
