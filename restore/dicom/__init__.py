"""DICOM restoration: per-slice model processing, derived-series writing,
the per-file report and the distributed (Lightning) driver. ``restore.dicom_job`` runs the batch;
``restore.io.dicom`` reads the inputs."""
