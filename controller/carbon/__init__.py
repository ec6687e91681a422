"""Carbon-intensity signal: trace replay and live API providers."""
