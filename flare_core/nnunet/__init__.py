"""nnU-Net v2 integration: dataset export, planners, networks, trainers, predictors."""
