"""MIG: the placement rules, re-partition planning and the backends that apply them."""
