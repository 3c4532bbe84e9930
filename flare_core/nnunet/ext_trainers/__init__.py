"""A folder for nnU-Net's `nnUNet_extTrainer` variable: it holds only trainer modules.

nnunetv2 2.8 imports every module of the folders listed in `nnUNet_extTrainer`
when it looks a trainer up by name (stock `nnUNetv2_train` / `nnUNetv2_predict`),
so this folder contains nothing but a re-export of the two FLARE trainers.
"""
