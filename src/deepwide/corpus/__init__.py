"""Speech corpora: synthesis in the real datasets' layouts and Parquet manifests."""
