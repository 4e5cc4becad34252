"""Networks and their Lightning modules. Imports nothing from ``restore``, ``datasets`` or the apps.

Each model family lives in its own subpackage (``models.oasis``, ``models.rat``) with a config
dataclass, the network, and its ``LightningModule``. ``models.bicubic`` is the baseline.
"""

__restore_package__ = True
