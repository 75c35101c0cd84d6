"""Pure JAX inference core: no UI import, no I/O, no global state."""
