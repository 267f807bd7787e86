"""The seed systems: McBits, SGA, lossy bits-back, iREC and the variable-rate bound."""

EXPERIMENTS = []
