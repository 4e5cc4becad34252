"""DICOM restoration, the whole ``restore dicom`` job: ``job`` (the driver and report), ``plan``
(options, series jobs), ``runner`` (one series: process, write, verify), ``distributed`` (the
runner on Lightning DDP ranks), ``processing`` (models on slices), ``writer`` (derived files),
``nifti`` (``--nifti`` volumes), ``report``. ``restore.io.dicom`` reads the inputs."""
