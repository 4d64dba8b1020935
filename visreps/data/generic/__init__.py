"""The generic visreps dataset format (docs/dataset_format.md): ``reader`` (``GenericDataset``), ``format``
(the file-level checks both sides share) and ``writer`` (``write_neural_dataset``, ``write_behaviour_dataset``
and their parts). Import from the module that defines a name."""
