"""Data layer: catalogues (Kaggle layout, generic CSV, synthetic, download), sampling, tags."""
from .catalogue import (ATTRIBUTES, DATASETS, Catalogue, DataError, default_fashion_dir, load_csv,
                        load_image, load_kaggle, to_rgb)
from .datasets import load_dataset
from .sampling import SPLITS, Sample, group_sizes, sample_protocol, subsample_train, without_attribute
from .tags import build_vocab, filter_tags, normalise_name

__all__ = ["ATTRIBUTES", "DATASETS", "SPLITS", "Catalogue", "DataError", "Sample", "build_vocab",
           "default_fashion_dir", "filter_tags", "group_sizes", "load_csv", "load_dataset", "load_image",
           "load_kaggle", "normalise_name", "sample_protocol", "subsample_train", "to_rgb", "without_attribute"]
