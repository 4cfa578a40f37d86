"""Data layer: catalogues (Kaggle layout, generic CSV, synthetic, download), sampling, tags."""
ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")

from .catalogue import (DATASETS, Catalogue, DataError, default_fashion_dir, load_csv,  # noqa: E402
                        load_dataset, load_image, load_kaggle, to_rgb)
from .sampling import Sample, group_sizes, sample_protocol  # noqa: E402
from .tags import build_vocab, filter_tags, normalise_name  # noqa: E402

__all__ = ["ATTRIBUTES", "DATASETS", "Catalogue", "DataError", "Sample", "build_vocab", "default_fashion_dir",
           "filter_tags", "group_sizes", "load_csv", "load_dataset", "load_image", "load_kaggle", "normalise_name",
           "sample_protocol", "to_rgb"]
