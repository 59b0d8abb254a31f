"""ALBL (Hsu & Lin 2015, "Active Learning by Learning"): the EXP4.P bandit over the candidate
strategies as a baseline for AutoAL. Pure numpy in `bandit`; Ray enters only through
`ctx.scorer`."""
