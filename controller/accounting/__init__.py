"""Accounting and outputs: per-slice energy attribution and carbon (`attribution`), run.log /
run.jsonl (`runlog`), emissions.csv (`emissions_csv`), Prometheus metrics (`metrics`) and the
HTML/PNG report (`report`).
"""
