"""Load generator: open-loop Poisson arrivals against the controller's HTTP ingress."""
