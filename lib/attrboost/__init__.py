"""attrboost: boost a frozen image embedding for retrieval with multi-attribute labels."""
__version__ = "0.1.0"
