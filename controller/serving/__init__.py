"""Serving on Ray Serve: the HTTP ingress, the router that picks a slice replica per request,
the per-slice replica deployment, and the helpers that bring Ray and Serve up and down.
"""
