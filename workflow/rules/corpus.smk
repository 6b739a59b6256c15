# corpus stage: synthesize embedded corpora or read real roots; write Parquet manifests.
