"""Tests of models.rat (a package, so that test basenames may repeat those of other families)."""
