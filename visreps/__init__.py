"""visreps: how coarse can a vision network's training signal be and still give brain-like representations?

It derives coarse labels from PCA median splits of image features, trains networks at each granularity K,
scores their alignment with brain and behaviour data (RSA and ridge encoding, per subject and region, with
bootstrap CIs and noise ceilings), and tracks everything in MLflow. The method: docs/method.md.

Layers, lowest first; a package imports only from the layers before it (tests/test_layers.py checks this):

- ``visreps.alignment``: a pure leaf — arrays in, numbers out (RDMs, RSA, ridge, bootstraps, ceilings);
  it imports only the shared utilities, and every layer above may use it;
- ``visreps.data``: the dataset interface, image reading, the readers of the published layouts
  (``data.published``), the generic format (``data.generic``) and the demo generator (``data.demo``);
- ``visreps.models``: the architecture registry and ``create_model``, extraction points, model files;
- ``visreps.activations``: reading a model's activations for a stimulus set (projected, cached on disk);
- ``visreps.labels``: coarse labels from PCA median splits;
- ``visreps.training``: the training loop (AMP, DDP), schedules, checkpoints;
- ``visreps.tracking``: the only package that talks to MLflow (runs, artifacts, the Model Registry);
- ``visreps.stages``: the commands (``visreps <command>``), wired from the layers above; ``entrypoints/`` and
  ``dashboards/`` sit on top.

``visreps.config``, ``visreps.paths``, ``visreps.errors`` and ``visreps.fingerprints`` are shared utilities.
"""

__version__ = "0.1.0"
