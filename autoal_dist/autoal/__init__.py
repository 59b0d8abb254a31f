"""AutoAL (docs/autoal.md): candidate memberships, the relaxed top-r selection, the SearchNet/FitNet
search and the query policy. Pure torch/numpy; Ray enters only through `ctx.scorer`."""
