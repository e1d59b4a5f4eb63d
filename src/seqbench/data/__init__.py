"""Datasets, preprocessing and LightningDataModules."""
