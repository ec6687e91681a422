"""Controller: carbon signal, planner, control loop and the Serve application."""
