"""directory drivers: a contract in base.py, one module per backend."""
