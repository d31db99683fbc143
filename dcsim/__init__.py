"""dcsim: a discrete-event simulator of a GPU datacenter whose GPUs buy power with tokens."""
__version__ = "0.1.0"
