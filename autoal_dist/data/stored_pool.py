"""Pools larger than one machine: a dataset stored as parquet files and read by row.

    write_pool(load_dataset("tinyimagenet", root), "s3://bucket/pools/tin")   # once
    data = load_dataset("pool:s3://bucket/pools/tin")                          # any node
    data.train_x            # StoredArray: shape/dtype/len like the array, reads on indexing
    data.train_x[ids]       # only the row groups holding `ids` are read
    data.train_x.view(lo, hi)   # a lazy shard to ship to a Ray actor (pickles to KBs)
    data.fingerprint(), Normalizer.for_dataset(data)   # recorded at write time, no pass

The format is described in pool_format.py, the writer in pool_write.py, the reader and
the `pool:` dataset loader in pool_read.py.
"""
from autoal_dist.data.pool_format import META_FILE, PartFile, PoolMeta
from autoal_dist.data.pool_read import StoredArray, load_pool, open_pool, read_meta, verify_pool
from autoal_dist.data.pool_write import seal_pool, write_pool

__all__ = ["META_FILE", "PartFile", "PoolMeta", "StoredArray", "load_pool", "open_pool",
           "read_meta", "seal_pool", "verify_pool", "write_pool"]
