"""Model variants (real networks, pre/post-processing) and the performance model fitted to profiles."""
