"""The control loop: read carbon → plan → roll the plan out make-before-break → account.
"""
