"""Readers of published dataset layouts, each as its authors distribute it: ``nsd`` (Natural Scenes Dataset,
with ``nsd_volumes`` and ``nsd_read`` for its volumes and betas), ``nsd_synthetic``, ``tvsd`` (THINGS ventral
stream spiking dataset), ``things`` (THINGS odd-one-out embedding), and the helpers they share: ``matfile``
(MATLAB v5/v7.3), ``nifti`` (region masks and colour tables) and ``preprocess`` (z-scoring, repetition
averaging, noise ceilings). docs/dataset_format.md lists the files each expects."""
